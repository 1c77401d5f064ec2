// The host-side client of the approval control sockets (see control.ts for the protocol and
// how the caller's uid is proven). Used by `airlock approvals|approve|deny` and `airlock ui`.
import { open, readdir, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { controlDir, proofsDir } from './control.js';
import type { Approver, PendingApproval } from './service.js';

const REPLY_TIMEOUT_MS = 15_000;

/** The operator can fix this (no broker running, no permission, unknown id): exit 1. */
export class ControlError extends Error {
  override name = 'ControlError';
}

type Reply = { ok: true; [key: string]: unknown } | { ok: false; error: string };

class ControlConnection {
  private buffered = '';
  private readonly replies: Array<(msg: Record<string, unknown>) => void> = [];
  private failure: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered += chunk.toString('utf8');
      let nl;
      while ((nl = this.buffered.indexOf('\n')) !== -1) {
        const line = this.buffered.slice(0, nl);
        this.buffered = this.buffered.slice(nl + 1);
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          msg = { ok: false, error: 'the broker sent a broken reply' };
        }
        this.replies.shift()?.(msg);
      }
    });
    const fail = (err?: Error) => {
      this.failure ??= err ?? new ControlError('the broker closed the control connection');
      for (const r of this.replies.splice(0)) r({ ok: false, error: this.failure.message });
    };
    socket.on('error', fail);
    socket.on('close', () => fail());
  }

  static async open(socketPath: string, approvalsDir: string, via: string): Promise<ControlConnection> {
    const socket = net.connect(socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          err.code === 'EACCES'
            ? new ControlError(
                `permission denied on ${socketPath}: decisions are made as the broker's user (or root)`,
              )
            : err,
        ),
      );
    });
    const conn = new ControlConnection(socket);
    const hello = await conn.next();
    const challenge = hello.challenge;
    if (typeof challenge !== 'string' || !/^[0-9a-f]{32}$/.test(challenge)) {
      socket.destroy();
      throw new ControlError(`${socketPath} is not an Airlock control socket`);
    }
    // Our proof of identity: a file we create is owned by our uid, which the broker reads.
    const proof = path.join(proofsDir(approvalsDir), challenge);
    try {
      // Readable by the broker (another user when we are in the approvers group): it holds only
      // the challenge, in a folder nobody else can list.
      const fh = await open(proof, 'wx', 0o644);
      await fh.chmod(0o644); // whatever our umask
      await fh.writeFile(challenge);
      await fh.close();
    } catch (err) {
      socket.destroy();
      throw new ControlError(
        `cannot write the identity proof in ${path.dirname(proof)} (${(err as NodeJS.ErrnoException).code})`,
      );
    }
    const reply = await conn.request({ op: 'hello', via });
    await unlink(proof).catch(() => undefined);
    if (!reply.ok) {
      socket.destroy();
      throw new ControlError(`the broker refused this user: ${reply.error}`);
    }
    return conn;
  }

  private next(): Promise<Record<string, unknown>> {
    if (this.failure) return Promise.resolve({ ok: false, error: this.failure.message });
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        const i = this.replies.indexOf(done);
        if (i >= 0) this.replies.splice(i, 1);
        resolve({ ok: false, error: 'the broker did not answer in time' });
      }, REPLY_TIMEOUT_MS);
      const done = (msg: Record<string, unknown>) => {
        clearTimeout(timer);
        resolve(msg);
      };
      this.replies.push(done);
    });
  }

  async request(msg: object): Promise<Reply> {
    const reply = this.next();
    this.socket.write(JSON.stringify(msg) + '\n');
    return (await reply) as Reply;
  }

  close(): void {
    this.socket.end();
  }
}

/** Every broker process's control socket under stateDir. */
async function controlSockets(approvalsDir: string): Promise<string[]> {
  const dir = controlDir(approvalsDir);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES')
      throw new ControlError(`permission denied on ${dir}: run this as the broker's user (or root)`);
    throw new ControlError(
      `no approval control folder at ${dir}: is airlock serve running with this config?`,
    );
  }
  return names.filter((n) => /^[0-9]+\.sock$/.test(n)).map((n) => path.join(dir, n));
}

/** Connections to every live broker process (a socket left by a crashed one is skipped). */
async function connectAll(approvalsDir: string, via: string): Promise<ControlConnection[]> {
  const conns: ControlConnection[] = [];
  let denied: Error | undefined;
  for (const socketPath of await controlSockets(approvalsDir)) {
    try {
      conns.push(await ControlConnection.open(socketPath, approvalsDir, via));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ECONNREFUSED' || code === 'ENOENT') continue;
      denied = err as Error;
    }
  }
  if (conns.length === 0) {
    throw denied ?? new ControlError(`no running broker found in ${controlDir(approvalsDir)}`);
  }
  return conns;
}

export function approvalsDirOf(stateDir: string): string {
  return path.join(stateDir, 'approvals');
}

/** Pending approvals of every broker process under stateDir, oldest first. */
export async function listApprovals(
  stateDir: string,
  opts: { team?: string; via?: string } = {},
): Promise<PendingApproval[]> {
  const dir = approvalsDirOf(stateDir);
  const conns = await connectAll(dir, opts.via ?? 'cli');
  try {
    const all: PendingApproval[] = [];
    for (const conn of conns) {
      const reply = await conn.request({ op: 'list', ...(opts.team ? { team: opts.team } : {}) });
      if (!reply.ok) throw new ControlError(reply.error);
      all.push(...(reply.approvals as PendingApproval[]));
    }
    return all.sort((a, b) => a.requestedAt.localeCompare(b.requestedAt));
  } finally {
    for (const c of conns) c.close();
  }
}

export interface DecisionReply {
  id: string;
  state: 'approved' | 'denied';
  grantMs: number;
  by: Approver;
}

/** Approves or denies one pending approval, in whichever broker process holds it. */
export async function decideApproval(
  stateDir: string,
  id: string,
  decision: { approve: boolean; forMs?: number; reason?: string; via?: string },
): Promise<DecisionReply> {
  const dir = approvalsDirOf(stateDir);
  const conns = await connectAll(dir, decision.via ?? 'cli');
  try {
    for (const conn of conns) {
      const listed = await conn.request({ op: 'list' });
      if (!listed.ok) throw new ControlError(listed.error);
      if (!(listed.approvals as PendingApproval[]).some((a) => a.id === id)) continue;
      const reply = await conn.request({
        op: decision.approve ? 'approve' : 'deny',
        id,
        ...(decision.forMs !== undefined ? { forMs: decision.forMs } : {}),
        ...(decision.reason !== undefined ? { reason: decision.reason } : {}),
      });
      if (!reply.ok) throw new ControlError(reply.error);
      return reply as unknown as DecisionReply;
    }
    throw new ControlError(
      `no pending approval "${id}" (it may have been decided or expired; see airlock approvals list)`,
    );
  } finally {
    for (const c of conns) c.close();
  }
}
