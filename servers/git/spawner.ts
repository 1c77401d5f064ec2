// Where git processes are forked: a small long-lived helper process (a spawn server), not the
// broker. Node forks synchronously on the event loop and a fork costs more the larger the parent
// (page tables are copied): forking git from a ~100 MiB broker stalls every other session of every
// team for 1.5–3 ms per git command. The helper is a bare Node process (no modules of ours, its
// environment empty) that forks what it is told and relays the child's output; the broker keeps
// all policy: it builds every argv and environment, caps the output, times out and kills.
//
// The helper runs in its own private mount namespace (inside a user namespace when the broker is
// not root), where each work tree is bound onto itself `nosymfollow` (see runner.ts): git then
// starts confined directly — no nsenter exec per command and no holder per work tree as root, no
// unshare + sh + mount per command (~4 ms) otherwise.
import { spawn, type ChildProcess } from 'node:child_process';

/** The helper itself: CommonJS for `node -e`, Node built-ins only. Messages are structured clones. */
const SPAWN_SERVER_SOURCE = `
'use strict';
const { spawn } = require('node:child_process');
const children = new Map();
const send = (m) => { if (process.connected) process.send(m); };
const killGroup = (child) => { try { if (child.pid) process.kill(-child.pid, 'SIGKILL'); } catch {} };
process.on('message', (m) => {
  if (m.t === 'kill') { const c = children.get(m.id); if (c) killGroup(c); return; }
  if (m.t !== 'spawn') return;
  let child;
  // The umask is the process's: set around the fork only (spawn forks before it returns).
  const umask = m.umask === undefined ? undefined : process.umask(m.umask);
  try {
    // Own process group, so remote helpers and pack-objects die with git on kill.
    child = spawn(m.file, m.args, { cwd: m.cwd, env: m.env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  } catch (e) {
    send({ t: 'error', id: m.id, message: String(e && e.message) });
    return;
  } finally {
    if (umask !== undefined) process.umask(umask);
  }
  children.set(m.id, child);
  // Output is held and sent with the exit (one message for a small command) unless it grows past
  // FLUSH bytes. At most a byte past the cap is forwarded: the broker stops reading there and kills.
  const FLUSH = 64 * 1024;
  let room = m.maxOut + 1;
  const held = { out: [], err: [], bytes: 0 };
  const flush = () => {
    if (held.out.length) send({ t: 'out', id: m.id, d: Buffer.concat(held.out) });
    if (held.err.length) send({ t: 'err', id: m.id, d: Buffer.concat(held.err) });
    held.out = []; held.err = []; held.bytes = 0;
  };
  const hold = (list, d) => { list.push(d); held.bytes += d.length; if (held.bytes >= FLUSH) flush(); };
  child.stdout.on('data', (d) => {
    if (room <= 0) return;
    room -= d.length;
    hold(held.out, d);
    if (room <= 0) flush(); // past the cap: let the broker see it now
  });
  child.stderr.on('data', (d) => hold(held.err, d));
  child.stdin.on('error', () => {});
  if (m.input !== undefined) child.stdin.end(m.input); else child.stdin.end();
  child.on('error', (e) => { flush(); send({ t: 'error', id: m.id, message: e.message }); });
  child.on('close', (code) => {
    children.delete(m.id);
    const last = { t: 'close', id: m.id, code };
    if (held.out.length) last.out = Buffer.concat(held.out);
    if (held.err.length) last.err = Buffer.concat(held.err);
    send(last);
  });
});
// The broker is gone (or dropped us): nothing of ours outlives it.
process.on('disconnect', () => { for (const c of children.values()) killGroup(c); process.exit(0); });
// Running: any namespace prefix has been entered, so /proc/<pid> now shows the helper's own.
send({ t: 'ready' });
`;

export interface SpawnRequest {
  file: string;
  args: readonly string[];
  cwd: string;
  env: Record<string, string>;
  input?: string | Buffer;
  umask?: number;
  /** The helper stops relaying stdout a byte past this. */
  maxOut: number;
}

export interface SpawnHandlers {
  stdout(chunk: Buffer): void;
  stderr(chunk: Buffer): void;
  /** Exactly once: the exit code, or why it could not run. */
  done(code: number | null, error?: string): void;
}

export interface Spawned {
  /** SIGKILLs the child's process group. */
  kill(): void;
}

type FromServer =
  | { t: 'out'; id: number; d: Uint8Array }
  | { t: 'err'; id: number; d: Uint8Array }
  | { t: 'close'; id: number; code: number | null; out?: Uint8Array; err?: Uint8Array }
  | { t: 'error'; id: number; message: string };

export class SpawnServer {
  private nextId = 1;
  private readonly pending = new Map<number, SpawnHandlers>();
  private readonly ready: Promise<void>;

  private constructor(readonly child: ChildProcess) {
    child.on('message', (m: FromServer | { t: 'ready' }) => this.receive(m));
    child.on('exit', () => this.failAll('the git spawn helper exited'));
    this.ready = new Promise((resolve, reject) => {
      child.once('message', (m: { t?: string }) =>
        m.t === 'ready' ? resolve() : reject(new Error('the git spawn helper did not start')),
      );
      child.once('error', reject);
      child.once('exit', () => reject(new Error('the git spawn helper exited as it started')));
    });
    // The broker is kept alive by the helper only while it waits on it (its start, a command):
    // an idle helper must not hold a finished broker open, but a broker whose only work is a git
    // command (a policy fetch before any socket is listening) must not exit under it.
    child.unref();
    void this.ready.then(
      () => this.holdWhileBusy(),
      () => undefined,
    );
  }

  /** The IPC channel keeps the event loop alive exactly while commands are in flight. */
  private holdWhileBusy(): void {
    if (this.pending.size > 0) this.child.channel?.ref();
    else this.child.channel?.unref();
  }

  /**
   * Starts the helper, behind `prefix` (e.g. unshare into a private mount namespace): the prefix
   * must exec the helper in place, so that its pid is the helper's.
   */
  static async start(prefix: readonly string[] = []): Promise<SpawnServer> {
    const argv = [...prefix, process.execPath, '-e', SPAWN_SERVER_SOURCE];
    const child = spawn(argv[0]!, argv.slice(1), {
      env: { PATH: '/usr/bin:/bin' },
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      serialization: 'advanced',
    });
    const server = new SpawnServer(child);
    await server.ready;
    return server;
  }

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return (
      !this.retiring && this.child.exitCode === null && this.child.signalCode === null && this.child.connected
    );
  }

  private retiring = false;

  /** Takes no more commands; exits once those it runs are done (it kills them if dropped sooner). */
  retire(): void {
    this.retiring = true;
    this.disconnectIfIdle();
  }

  private disconnectIfIdle(): void {
    if (this.retiring && this.pending.size === 0 && this.child.connected) this.child.disconnect();
  }

  spawn(req: SpawnRequest, handlers: SpawnHandlers): Spawned {
    const id = this.nextId++;
    if (!this.alive) {
      handlers.done(null, 'the git spawn helper is not running');
      return { kill: () => undefined };
    }
    this.pending.set(id, handlers);
    if (this.pending.size === 1) this.holdWhileBusy();
    this.child.send({ t: 'spawn', id, ...req });
    return {
      kill: () => {
        if (this.pending.has(id) && this.alive) this.child.send({ t: 'kill', id });
      },
    };
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }

  private receive(m: FromServer | { t: 'ready' }): void {
    if (m.t === 'ready') return;
    const handlers = this.pending.get(m.id);
    if (!handlers) return;
    const chunk = (d: Uint8Array) => Buffer.from(d.buffer, d.byteOffset, d.byteLength);
    if (m.t === 'out') return handlers.stdout(chunk(m.d));
    if (m.t === 'err') return handlers.stderr(chunk(m.d));
    this.pending.delete(m.id);
    if (this.pending.size === 0) this.holdWhileBusy();
    this.disconnectIfIdle();
    if (m.t === 'error') return handlers.done(null, m.message);
    if (m.out) handlers.stdout(chunk(m.out));
    if (m.err) handlers.stderr(chunk(m.err));
    handlers.done(m.code);
  }

  private failAll(why: string): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const handlers of all) handlers.done(null, why);
  }
}
