// The out-of-band control socket through which humans decide approvals:
// `<stateDir>/approvals/control/<pid>.sock`, one per broker process (`airlock serve`, and each
// `airlock stdio`). The agent's sandbox never sees stateDir, and this socket is nowhere under
// socketDir.
//
// Authentication, in two layers (Node has no SO_PEERCRED):
// 1. Reach: the folders are 0700 and the socket 0600, owned by the broker's user, so the kernel
//    lets only that user (and root) connect at all.
// 2. Identity, attested by the kernel: the server sends a random challenge; the client creates
//    `<stateDir>/approvals/proofs/<challenge>` (O_EXCL) and says so. The file's owner uid is the
//    client's effective uid; the server accepts it only as a regular file with one link (not a
//    symlink, not a hard link to someone else's file), then deletes it. That uid (and its user
//    name) is what every decision record carries.
//
// Protocol: newline-delimited JSON. Server: {"challenge"}. Client: {"op":"hello","via"}, then
// {"op":"list","team"?} | {"op":"approve","id","forMs"?} | {"op":"deny","id","reason"?}; each
// answered {"ok":true,...} or {"ok":false,"error"}.
import { randomBytes } from 'node:crypto';
import { chmod, chown, lstat, mkdir, readdir, readFile, stat, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { UserError } from '../broker.js';
import type { Logger } from '../log.js';
import { processAlive } from './process.js';
import { ApprovalError, type ApprovalService, type Approver } from './service.js';

const MAX_LINE_BYTES = 64 * 1024;
const IDLE_TIMEOUT_MS = 60_000;
const MAX_REASON_CHARS = 1000;

export interface ControlServer {
  socketPath: string;
  close(): Promise<void>;
}

export function controlDir(approvalsDir: string): string {
  return path.join(approvalsDir, 'control');
}

export function proofsDir(approvalsDir: string): string {
  return path.join(approvalsDir, 'proofs');
}

export async function startControlServer(
  service: ApprovalService,
  log: Logger,
  approvers?: number,
): Promise<ControlServer> {
  const dir = controlDir(service.dir);
  const proofs = proofsDir(service.dir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await mkdir(proofs, { recursive: true, mode: 0o700 });
  if (approvers === undefined) {
    for (const d of [service.dir, dir, proofs]) await chmod(d, 0o700);
  } else {
    await checkGroupCanReach(path.dirname(service.dir), approvers);
    const uid = process.getuid?.() ?? 0;
    // The group may pass through the approvals folder, list the control sockets (their names
    // are pids), and create files in proofs without listing it (sticky: delete only its own).
    for (const [d, mode] of [
      [service.dir, 0o710],
      [dir, 0o750],
      [proofs, 0o1730],
    ] as const) {
      await giveToApprovers(d, uid, approvers);
      await chmod(d, mode);
    }
  }
  await removeStaleSockets(dir);
  const socketPath = path.join(dir, `${process.pid}.sock`);
  await unlink(socketPath).catch(() => undefined);
  const connections = new Set<net.Socket>();
  const server = net.createServer((conn) => {
    connections.add(conn);
    conn.once('close', () => connections.delete(conn));
    serveConnection(conn, service, log, approvers !== undefined);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  if (approvers === undefined) await chmod(socketPath, 0o600);
  else {
    await giveToApprovers(socketPath, process.getuid?.() ?? 0, approvers);
    await chmod(socketPath, 0o660);
  }
  server.on('error', (err) => log.error({ err: err.message }, 'approval control socket error'));
  return {
    socketPath,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      for (const c of connections) c.destroy();
      await unlink(socketPath).catch(() => undefined);
    },
  };
}

async function giveToApprovers(file: string, uid: number, gid: number): Promise<void> {
  try {
    await chown(file, uid, gid);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
    throw new UserError(
      `cannot give ${file} to group ${gid} (approvers): the broker's user must be root or a member of that group`,
    );
  }
}

/** With an approvers group, stateDir must let that group pass (the broker never loosens it itself). */
async function checkGroupCanReach(stateDir: string, gid: number): Promise<void> {
  const st = await stat(stateDir);
  const passes = (st.mode & 0o001) !== 0 || (st.gid === gid && (st.mode & 0o010) !== 0);
  if (!passes) {
    throw new UserError(
      `approvers is set, but group ${gid} cannot pass through stateDir ${stateDir}; ` +
        `run: chgrp ${gid} ${stateDir} && chmod g+x,g-rw ${stateDir}`,
    );
  }
}

/** Sockets of broker processes that are gone (a crash leaves its socket file behind). */
async function removeStaleSockets(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const pid = Number(/^([0-9]+)\.sock$/.exec(name)?.[1]);
    if (!pid || pid === process.pid) continue;
    if (!(await processAlive(pid, undefined))) await unlink(path.join(dir, name)).catch(() => undefined);
  }
}

function serveConnection(conn: net.Socket, service: ApprovalService, log: Logger, groupMode: boolean): void {
  const challenge = randomBytes(16).toString('hex');
  let approver: Approver | undefined;
  let buffered = '';
  let busy = Promise.resolve();
  conn.setTimeout(IDLE_TIMEOUT_MS, () => conn.destroy());
  conn.on('error', () => undefined);
  const send = (msg: object) => {
    if (!conn.destroyed) conn.write(JSON.stringify(msg) + '\n');
  };
  send({ challenge });
  conn.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    if (buffered.length > MAX_LINE_BYTES) {
      send({ ok: false, error: 'message too long' });
      conn.destroy();
      return;
    }
    let nl;
    while ((nl = buffered.indexOf('\n')) !== -1) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      // One request at a time per connection, answered in order.
      busy = busy.then(() => handle(line));
    }
  });

  const handle = async (line: string) => {
    let msg: Record<string, unknown>;
    try {
      const parsed = JSON.parse(line) as unknown;
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error();
      msg = parsed as Record<string, unknown>;
    } catch {
      return send({ ok: false, error: 'not a JSON object' });
    }
    try {
      if (!approver) {
        if (msg.op !== 'hello') return send({ ok: false, error: 'say hello (with the proof file) first' });
        const via = typeof msg.via === 'string' && /^[a-z]{1,16}$/.test(msg.via) ? msg.via : 'cli';
        const proven = await checkProof(service.dir, challenge, groupMode);
        if (typeof proven === 'string') {
          send({ ok: false, error: proven });
          conn.end();
          return;
        }
        approver = { ...proven, via };
        return send({ ok: true, user: approver });
      }
      switch (msg.op) {
        case 'list': {
          const team = typeof msg.team === 'string' ? msg.team : undefined;
          return send({ ok: true, approvals: service.list(team) });
        }
        case 'approve':
        case 'deny': {
          if (typeof msg.id !== 'string') return send({ ok: false, error: 'id is required' });
          if (msg.forMs !== undefined && (typeof msg.forMs !== 'number' || !Number.isFinite(msg.forMs)))
            return send({ ok: false, error: 'forMs must be a number' });
          const reason =
            typeof msg.reason === 'string' && msg.reason.length > 0
              ? msg.reason.slice(0, MAX_REASON_CHARS)
              : undefined;
          const result = await service.decide(msg.id, {
            state: msg.op === 'approve' ? 'approved' : 'denied',
            by: approver,
            ...(reason !== undefined ? { reason } : {}),
            ...(msg.forMs !== undefined ? { forMs: msg.forMs as number } : {}),
          });
          log.info({ approval: msg.id, state: result.state, by: approver }, 'approval decided');
          return send({ ok: true, ...result, by: approver });
        }
        default:
          return send({ ok: false, error: `unknown op ${JSON.stringify(msg.op)}` });
      }
    } catch (err) {
      const known = err instanceof ApprovalError;
      if (!known) log.error({ err: (err as Error).message }, 'approval control request failed');
      send({ ok: false, error: known ? err.message : `internal error: ${(err as Error).message}` });
    }
  };
}

/** Verifies the client's proof file for `challenge`; its owner is the client. */
async function checkProof(
  approvalsDir: string,
  challenge: string,
  groupMode: boolean,
): Promise<{ uid: number; user: string } | string> {
  const file = path.join(proofsDir(approvalsDir), challenge);
  let st;
  try {
    st = await lstat(file);
  } catch {
    return 'no proof file for this challenge';
  }
  try {
    if (!st.isFile() || st.nlink !== 1) return 'the proof must be a regular file with one link';
    const text = await readFile(file, 'utf8');
    if (text !== challenge) return 'the proof file does not hold the challenge';
  } finally {
    await unlink(file).catch(() => undefined);
  }
  // With an approvers group the kernel let in only its members (the socket is 0660 to it);
  // without one, only the broker's user and root.
  const self = process.geteuid?.() ?? st.uid;
  if (!groupMode && st.uid !== self && st.uid !== 0) return `uid ${st.uid} may not decide approvals`;
  return { uid: st.uid, user: await userName(st.uid) };
}

/** The login name of `uid` from /etc/passwd, or `uid:<n>` when it has none. */
export async function userName(uid: number): Promise<string> {
  try {
    for (const line of (await readFile('/etc/passwd', 'utf8')).split('\n')) {
      const [name, , id] = line.split(':');
      if (name && Number(id) === uid) return name;
    }
  } catch {
    // No passwd file (a minimal container): the uid is the name.
  }
  return `uid:${uid}`;
}
