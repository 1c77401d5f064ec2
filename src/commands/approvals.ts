// `airlock approvals list [--team T] [--json]`, `airlock approve ID [--for D]`,
// `airlock deny ID [--reason TEXT]`: host-side decisions on calls waiting for a human, through
// the brokers' control sockets (src/approvals/control.ts). The arguments shown are written by
// a possibly hostile agent: the table escapes control characters.
import { ControlError, decideApproval, listApprovals } from '../approvals/client.js';
import { formatDuration, MAX_GRANT_MS, parseDuration } from '../approvals/policy.js';
import type { PendingApproval } from '../approvals/service.js';
import { printable } from './audit.js';

type Out = NodeJS.WritableStream;

const MAX_ARGS_SHOWN = 400;

export async function approvalsListCommand(opts: {
  stateDir: string;
  team?: string;
  json: boolean;
  out?: Out;
  err?: Out;
}): Promise<number> {
  const out = opts.out ?? process.stdout;
  const list = await run(opts.err, () => listApprovals(opts.stateDir, { team: opts.team }));
  if (!list) return 1;
  if (opts.json) {
    const rows = list.map(({ id, team, server, tool, args, digest, requestedAt, expiresAt }) => ({
      id,
      team,
      server,
      tool,
      args,
      digest,
      requestedAt,
      expiresAt,
    }));
    out.write(JSON.stringify(rows, null, 2) + '\n');
    return 0;
  }
  if (list.length === 0) {
    out.write(`no pending approvals${opts.team ? ` for team ${opts.team}` : ''}\n`);
    return 0;
  }
  for (const a of list) out.write(renderPending(a) + '\n');
  return 0;
}

function renderPending(a: PendingApproval): string {
  let args = JSON.stringify(a.args);
  if (args.length > MAX_ARGS_SHOWN) args = args.slice(0, MAX_ARGS_SHOWN) + '… (--json shows all)';
  return [
    `${a.id}  ${printable(a.team)}  ${a.server}.${printable(a.tool)}  requested ${a.requestedAt}  expires ${a.expiresAt}`,
    `    args   ${printable(args)}`,
    `    digest ${a.digest}${a.grantMaxMs ? `  (grant up to ${formatDuration(a.grantMaxMs)} possible)` : ''}`,
  ].join('\n');
}

export async function approveCommand(opts: {
  stateDir: string;
  id: string;
  for?: string;
  out?: Out;
  err?: Out;
}): Promise<number> {
  const out = opts.out ?? process.stdout;
  let forMs: number | undefined;
  if (opts.for !== undefined) {
    const parsed = parseDuration(opts.for, MAX_GRANT_MS);
    if (typeof parsed === 'string') return fail(opts.err, `--for: ${parsed}`);
    forMs = parsed;
  }
  const reply = await run(opts.err, () => decideApproval(opts.stateDir, opts.id, { approve: true, forMs }));
  if (!reply) return 1;
  const grant = reply.grantMs ? `; identical calls are approved for ${formatDuration(reply.grantMs)}` : '';
  out.write(`approved ${reply.id} as ${reply.by.user} (uid ${reply.by.uid})${grant}\n`);
  return 0;
}

export async function denyCommand(opts: {
  stateDir: string;
  id: string;
  reason?: string;
  out?: Out;
  err?: Out;
}): Promise<number> {
  const out = opts.out ?? process.stdout;
  const reply = await run(opts.err, () =>
    decideApproval(opts.stateDir, opts.id, { approve: false, reason: opts.reason }),
  );
  if (!reply) return 1;
  out.write(`denied ${reply.id} as ${reply.by.user} (uid ${reply.by.uid})\n`);
  return 0;
}

async function run<T>(err: Out | undefined, action: () => Promise<T>): Promise<T | undefined> {
  try {
    return await action();
  } catch (e) {
    if (e instanceof ControlError) {
      fail(err, e.message);
      return undefined;
    }
    throw e;
  }
}

function fail(err: Out | undefined, message: string): number {
  (err ?? process.stderr).write(`airlock: ${message}\n`);
  return 1;
}
