// The OS keychain (macOS Keychain, Windows Credential Manager, the Secret Service on Linux) through
// @napi-rs/keyring. Every entry lives under one service, "airlock"; the account is the name that
// `airlock secrets set NAME` stored and that `{ keychain: NAME }` in airlock.yaml reads.
//
// On Linux the Secret Service is required explicitly: the library would otherwise fall back to
// the kernel keyring, which is per login session and gone on reboot, so a value stored from one
// shell would silently be missing for the broker started by systemd.
import { createRequire } from 'node:module';
import { SHARE_ENV, Worker } from 'node:worker_threads';

export const KEYCHAIN_SERVICE = 'airlock';

export interface Keychain {
  /** The stored value, or undefined if there is no entry for `account`. */
  get(account: string): Promise<string | undefined>;
  set(account: string, value: string): Promise<void>;
  /** True if an entry was deleted, false if there was none. */
  delete(account: string): Promise<boolean>;
  /** Account names under the service, sorted; never values. */
  list(): Promise<string[]>;
}

/**
 * The platform keychain cannot be used at all (no D-Bus session, no Secret Service, no default
 * keyring, locked). The message says what is missing and how to fix it; it never carries a value.
 */
export class KeychainUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeychainUnavailableError';
  }
}

const SECRET_SERVICE_FIX =
  'start one with a Secret Service provider, e.g. ' +
  `dbus-run-session -- sh -c 'printf %s "$KEYRING_PASSWORD" | gnome-keyring-daemon --unlock --components=secrets >/dev/null && airlock …', ` +
  'or configure the secret as { env: … } or { file: … } instead';

/** Turns a platform error into a KeychainUnavailableError that says what is missing and how to fix it. */
export function explainKeychainFailure(err: unknown, service = KEYCHAIN_SERVICE): KeychainUnavailableError {
  // The library nests causes; the innermost message is the most specific.
  const messages: string[] = [];
  for (let e: unknown = err; e instanceof Error && messages.length < 5; e = e.cause) messages.push(e.message);
  if (messages.length === 0) messages.push(String(err));
  const all = messages.join(' | ');
  const detail = messages[messages.length - 1];
  if (
    /autolaunch|DBUS_SESSION_BUS_ADDRESS|zbus|Failed to connect to address|DBus error|disconnected/i.test(all)
  ) {
    return new KeychainUnavailableError(
      `OS keychain unavailable: no D-Bus session bus to reach the Secret Service (${detail}); ` +
        `run airlock inside a desktop login session, or ${SECRET_SERVICE_FIX}`,
    );
  }
  if (/no result found|no such object|ServiceUnknown|not provided by any \.service/i.test(all)) {
    return new KeychainUnavailableError(
      `OS keychain unavailable: the Secret Service has no default keyring to store into (${detail}); ` +
        `create and unlock a login keyring, e.g. printf %s "$KEYRING_PASSWORD" | gnome-keyring-daemon --unlock --components=secrets`,
    );
  }
  if (/locked|prompt|dismissed/i.test(all)) {
    return new KeychainUnavailableError(
      `OS keychain unavailable: the keyring is locked (${detail}); unlock it, e.g. ` +
        `printf %s "$KEYRING_PASSWORD" | gnome-keyring-daemon --unlock --components=secrets`,
    );
  }
  return new KeychainUnavailableError(`OS keychain error (service "${service}"): ${detail}`);
}

/** How long one keychain operation may take before the call is failed (a hung D-Bus never answers). */
export const KEYCHAIN_TIMEOUT_MS = 5_000;

type KeychainOp = 'get' | 'set' | 'delete' | 'list';

// The keychain runs on a worker thread: @napi-rs/keyring connects to the D-Bus session
// synchronously on the calling thread, so a bus that accepts the connection and never answers
// (a stopped dbus-daemon) would otherwise freeze the broker's event loop and every team with it.
// A worker that does not answer in time is abandoned and the next operation starts a fresh one.
// The worker loads the addon by absolute path (it is CommonJS and stays outside the CLI bundle).
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
let keyring;
try { keyring = require(workerData.modulePath); } catch (err) { parentPort.postMessage({ loadError: String(err && err.message || err) }); }
const opts = { linux: { store: 'secret-service' } };
function chain(err) {
  const out = [];
  for (let e = err; e && out.length < 5; e = e.cause) out.push(e instanceof Error ? e.message : String(e));
  return out;
}
parentPort.on('message', async ({ id, op, service, account, value }) => {
  if (!keyring) return parentPort.postMessage({ id, error: ['the native module did not load'] });
  try {
    let result;
    if (op === 'list') {
      const found = await keyring.findCredentialsAsync(service);
      result = [...new Set(found.map((c) => c.account))].sort();
    } else {
      // The constructor itself connects to the bus (and throws when there is none).
      const entry = new keyring.AsyncEntry(service, account, opts);
      if (op === 'get') result = (await entry.getPassword()) ?? undefined;
      else if (op === 'set') result = await entry.setPassword(value);
      else result = await entry.deleteCredential();
    }
    parentPort.postMessage({ id, result });
  } catch (err) {
    parentPort.postMessage({ id, error: chain(err) });
  }
});
`;

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
  worker: Worker;
}

/** One worker thread that runs keychain operations; replaced when it hangs or dies. */
class KeychainThread {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private loadError: string | undefined;

  constructor(private readonly timeoutMs: () => number) {}

  async run(op: KeychainOp, service: string, account?: string, value?: string): Promise<unknown> {
    const worker = this.ensureWorker();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timeoutMs = this.timeoutMs();
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.abandon(worker);
        reject(
          new KeychainUnavailableError(
            `OS keychain unavailable: the Secret Service did not answer within ${timeoutMs / 1000} s ` +
              '(is the D-Bus session hung?); the next use tries again',
          ),
        );
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, worker });
      worker.ref();
      worker.postMessage({ id, op, service, account, value });
    });
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    let modulePath: string;
    try {
      modulePath = createRequire(import.meta.url).resolve('@napi-rs/keyring');
    } catch (err) {
      throw nativeModuleError(err);
    }
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { modulePath }, env: SHARE_ENV });
    worker.unref();
    worker.on('message', (m: { id?: number; result?: unknown; error?: string[]; loadError?: string }) => {
      if (m.loadError !== undefined) {
        this.loadError = m.loadError;
        return;
      }
      const p = this.pending.get(m.id!);
      if (!p) return; // answered after its timeout: that caller was already told
      this.pending.delete(m.id!);
      clearTimeout(p.timer);
      if (![...this.pending.values()].some((o) => o.worker === worker)) worker.unref();
      if (m.error) {
        p.reject(
          this.loadError !== undefined
            ? nativeModuleError(new Error(this.loadError))
            : explainKeychainFailure(errorChain(m.error)),
        );
      } else p.resolve(m.result);
    });
    worker.on('error', (err) => this.failAll(worker, err));
    worker.on('exit', () => this.failAll(worker, new Error('the keychain worker thread exited')));
    this.worker = worker;
    return worker;
  }

  /** Stops using `worker`: later operations get a new one (a hung native call cannot be interrupted). */
  private abandon(worker: Worker): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    worker.unref();
    void worker.terminate().catch(() => undefined);
  }

  private failAll(worker: Worker, err: Error): void {
    if (this.worker === worker) this.worker = undefined;
    for (const [id, p] of this.pending) {
      if (p.worker !== worker) continue;
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(explainKeychainFailure(err));
    }
  }
}

function nativeModuleError(err: unknown): KeychainUnavailableError {
  return new KeychainUnavailableError(
    `OS keychain unavailable: the @napi-rs/keyring native module did not load for ${process.platform}-${process.arch} ` +
      `(${err instanceof Error ? err.message : String(err)})`,
  );
}

/** Rebuilds the nested error the worker flattened, outermost first. */
function errorChain(messages: string[]): Error {
  let err: Error | undefined;
  for (const m of [...messages].reverse()) err = new Error(m, err ? { cause: err } : undefined);
  return err ?? new Error('unknown keychain error');
}

export function createOsKeychain(service = KEYCHAIN_SERVICE, opts: { timeoutMs?: number } = {}): Keychain {
  const thread = new KeychainThread(() => opts.timeoutMs ?? KEYCHAIN_TIMEOUT_MS);
  return {
    get: async (account) => (await thread.run('get', service, account)) as string | undefined,
    set: async (account, value) => {
      await thread.run('set', service, account, value);
    },
    delete: async (account) => (await thread.run('delete', service, account)) as boolean,
    list: async () => (await thread.run('list', service)) as string[],
  };
}

/** The OS keychain, service "airlock". */
export const osKeychain: Keychain = createOsKeychain();
