// The OS keychain (macOS Keychain, Windows Credential Manager, the Secret Service on Linux) through
// @napi-rs/keyring. Every entry lives under one service, "airlock"; the account is the name that
// `airlock secrets set NAME` stored and that `{ keychain: NAME }` in airlock.yaml reads.
//
// On Linux the Secret Service is required explicitly: the library would otherwise fall back to
// the kernel keyring, which is per login session and gone on reboot, so a value stored from one
// shell would silently be missing for the broker started by systemd.
import type * as KeyringModule from '@napi-rs/keyring';

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

/** The part of @napi-rs/keyring that Airlock uses. */
interface KeyringApi {
  AsyncEntry: typeof KeyringModule.AsyncEntry;
  findCredentialsAsync: typeof KeyringModule.findCredentialsAsync;
}

let keyringModule: Promise<KeyringApi> | undefined;

// Loaded on first use so a broker that only reads env/file secrets never loads the native addon.
function loadKeyring(): Promise<KeyringApi> {
  keyringModule ??= import('@napi-rs/keyring').then(
    // A CommonJS module: its exports object is the default export.
    (m): KeyringApi => m.default,
    (err: unknown) => {
      keyringModule = undefined;
      throw new KeychainUnavailableError(
        `OS keychain unavailable: the @napi-rs/keyring native module did not load for ${process.platform}-${process.arch} ` +
          `(${err instanceof Error ? err.message : String(err)})`,
      );
    },
  );
  return keyringModule;
}

export function createOsKeychain(service = KEYCHAIN_SERVICE): Keychain {
  const entryOptions = { linux: { store: 'secret-service' as const } };

  async function withEntry<T>(
    account: string,
    op: (entry: KeyringModule.AsyncEntry) => Promise<T>,
  ): Promise<T> {
    const keyring = await loadKeyring();
    try {
      // The constructor itself throws when there is no D-Bus session.
      return await op(new keyring.AsyncEntry(service, account, entryOptions));
    } catch (err) {
      throw explainKeychainFailure(err, service);
    }
  }

  return {
    get: (account) => withEntry(account, async (e) => (await e.getPassword()) ?? undefined),
    set: (account, value) => withEntry(account, (e) => e.setPassword(value)),
    delete: (account) => withEntry(account, (e) => e.deleteCredential()),
    async list() {
      const keyring = await loadKeyring();
      let found: KeyringModule.Credential[];
      try {
        found = await keyring.findCredentialsAsync(service);
      } catch (err) {
        throw explainKeychainFailure(err, service);
      }
      // The search returns passwords too; only the account names leave this function.
      return [...new Set(found.map((c) => c.account))].sort();
    },
  };
}

/** The OS keychain, service "airlock". */
export const osKeychain: Keychain = createOsKeychain();
