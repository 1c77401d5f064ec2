// Approvals held by this broker process: a call that needs one waits here, after its request
// record, until a human decides out of band (src/approvals/control.ts) or it expires.
//
// - The call's arguments stay in this process's memory; the approved call runs with exactly
//   the object that was held. Nothing the agent sends later can change it.
// - Each wait is written durably twice before anyone can act on it: a state file under
//   `<stateDir>/approvals/pending/` (so a broker that dies while calls wait can say so when it
//   starts again) and the `approval` audit record (state "pending"). A decision is another
//   durable `approval` record; an approval whose record cannot be written does not run the call.
// - A restart never approves: pending files left by a process that is gone are recorded as
//   expired at start-up and removed.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { canonicalJson, type AuditEntry } from '../audit/log.js';
import type { Logger } from '../log.js';
import { formatDuration, MAX_GRANT_MS } from './policy.js';
import { processAlive, processStartTime } from './process.js';

/** The fields every record of one call shares (the pipeline's audit head). */
export interface CallHead {
  team: string;
  server: string;
  tool: string;
  session: string;
  call: string;
  args?: unknown;
}

export interface Approver {
  uid: number;
  user: string;
  /** The path the decision came by: `cli` or `ui`. */
  via: string;
}

export type ApprovalState = 'pending' | 'approved' | 'denied' | 'expired';

/** What `airlock approvals list --json` prints for one pending approval (SPEC). */
export interface PendingApproval {
  id: string;
  team: string;
  server: string;
  tool: string;
  /** The held arguments, redacted (the approver sees what will run, never a secret value). */
  args: unknown;
  digest: string;
  requestedAt: string;
  expiresAt: string;
  session: string;
  call: string;
  /** Longest grant the policy allows for this call (0: this call only). */
  grantMaxMs: number;
}

export type GateResult = { approved: true } | { approved: false; reason: string };

export interface ApprovalRequest {
  head: CallHead;
  /** The validated arguments the call will run with. */
  args: unknown;
  rule: string;
  timeoutMs: number;
  grantMaxMs: number;
  signal?: AbortSignal;
  /** Called while the call waits (MCP progress notifications keep the client from timing out). */
  progress?: (waitedMs: number, totalMs: number, message: string) => void;
}

export interface ApprovalServiceDeps {
  stateDir: string;
  audit: { append(entry: AuditEntry): Promise<unknown> };
  redact: (value: unknown) => unknown;
  log: Logger;
}

interface Waiting {
  id: string;
  digest: string;
  view: PendingApproval;
  grantMaxMs: number;
  rule: string;
  head: CallHead;
  file: string;
  deciding: boolean;
  settle(result: GateResult): void;
}

interface Grant {
  approval: string;
  until: number;
  by: Approver;
}

/** An approval decision the operator got wrong (unknown id, grant too long): exit 1, nothing changed. */
export class ApprovalError extends Error {
  override name = 'ApprovalError';
}

/** sha256 over team, server, tool and the canonical arguments (SPEC "Approvals"). */
export function approvalDigest(team: string, server: string, tool: string, args: unknown): string {
  return createHash('sha256').update(canonicalJson({ team, server, tool, args })).digest('hex');
}

/** How often a waiting call tells its client it is still alive. */
function progressInterval(timeoutMs: number): number {
  return Math.min(10_000, Math.max(250, Math.floor(timeoutMs / 20)));
}

export class ApprovalService {
  private readonly waiting = new Map<string, Waiting>();
  private readonly grants = new Map<string, Grant>();
  private closed = false;
  readonly dir: string;
  private readonly pendingDir: string;
  private owner: { pid: number; start: string | undefined } = { pid: process.pid, start: undefined };

  constructor(private readonly deps: ApprovalServiceDeps) {
    this.dir = path.join(deps.stateDir, 'approvals');
    this.pendingDir = path.join(this.dir, 'pending');
  }

  /** Creates the state folders and records as expired the waits of broker processes that are gone. */
  async start(): Promise<void> {
    await mkdir(this.pendingDir, { recursive: true, mode: 0o700 });
    this.owner = { pid: process.pid, start: await processStartTime(process.pid) };
    let names: string[];
    try {
      names = await readdir(this.pendingDir);
    } catch {
      return;
    }
    for (const name of names) {
      if (!name.endsWith('.json')) continue;
      const file = path.join(this.pendingDir, name);
      let held: { id: string; pid: number; start?: string; rule: string; digest: string } & Omit<
        CallHead,
        'args'
      >;
      try {
        held = JSON.parse(await readFile(file, 'utf8'));
      } catch {
        continue;
      }
      if (held.pid !== process.pid && (await processAlive(held.pid, held.start))) continue;
      const { id, digest, rule, team, server, tool, session, call } = held;
      await this.deps.audit.append({
        team,
        server,
        tool,
        session,
        call,
        phase: 'approval',
        decision: 'deny',
        rule,
        reason: 'the broker restarted while the call waited; it was not run',
        approval: { id, digest, state: 'expired' },
      });
      await unlink(file).catch(() => undefined);
      this.deps.log.warn({ approval: id, team, tool }, 'approval left pending by a stopped broker: expired');
    }
  }

  /** Pending approvals, oldest first (optionally of one team). */
  list(team?: string): PendingApproval[] {
    return [...this.waiting.values()]
      .filter((w) => team === undefined || w.view.team === team)
      .map((w) => w.view);
  }

  /**
   * Waits for a decision on this call. Resolves `approved` only after the decision record is on
   * disk; anything else (denied, expired, the session gone, the broker stopping) is a refusal.
   */
  async await(req: ApprovalRequest): Promise<GateResult> {
    const { head, rule } = req;
    const digest = approvalDigest(head.team, head.server, head.tool, req.args);
    const id = randomBytes(6).toString('hex');
    const record = (decision: 'allow' | 'deny', approval: Record<string, unknown>) =>
      this.deps.audit.append({
        ...head,
        phase: 'approval',
        rule,
        decision,
        approval: { id, digest, ...approval },
      });

    const grant = this.grants.get(digest);
    if (grant && grant.until > Date.now()) {
      // An earlier approval covers identical calls for a while: recorded, but no wait.
      await record('allow', {
        state: 'approved',
        grant: { approval: grant.approval, until: new Date(grant.until).toISOString() },
        decidedBy: grant.by,
      });
      return { approved: true };
    }
    if (grant) this.grants.delete(digest);
    if (this.closed) return { approved: false, reason: 'the broker is shutting down' };

    const requestedAt = Date.now();
    const expiresAt = requestedAt + req.timeoutMs;
    const file = path.join(this.pendingDir, `${id}.json`);
    await writeDurably(
      file,
      JSON.stringify({
        id,
        digest,
        rule,
        pid: this.owner.pid,
        start: this.owner.start,
        team: head.team,
        server: head.server,
        tool: head.tool,
        session: head.session,
        call: head.call,
        requestedAt: new Date(requestedAt).toISOString(),
      }),
    );
    try {
      await record('allow', {
        state: 'pending',
        expiresAt: new Date(expiresAt).toISOString(),
        ...(req.grantMaxMs ? { grantMaxMs: req.grantMaxMs } : {}),
      });
    } catch (err) {
      await unlink(file).catch(() => undefined);
      throw err;
    }

    let settle!: (r: GateResult) => void;
    const decided = new Promise<GateResult>((resolve) => (settle = resolve));
    const entry: Waiting = {
      id,
      digest,
      view: {
        id,
        team: head.team,
        server: head.server,
        tool: head.tool,
        args: this.deps.redact(req.args),
        digest,
        requestedAt: new Date(requestedAt).toISOString(),
        expiresAt: new Date(expiresAt).toISOString(),
        session: head.session,
        call: head.call,
        grantMaxMs: req.grantMaxMs,
      },
      grantMaxMs: req.grantMaxMs,
      rule,
      head,
      file,
      deciding: false,
      settle,
    };
    this.waiting.set(id, entry);
    this.deps.log.info({ approval: id, team: head.team, tool: head.tool }, 'call waits for approval');

    const expire = (reason: string) => void this.finish(entry, 'expired', reason).catch(() => undefined);
    const timer = setTimeout(
      () => expire(`no decision within ${formatDuration(req.timeoutMs)}`),
      req.timeoutMs,
    );
    const onAbort = () => expire('the caller went away before a decision');
    if (req.signal?.aborted) onAbort();
    req.signal?.addEventListener('abort', onAbort, { once: true });
    const message = `waiting for approval ${id} (on the host: airlock approve ${id})`;
    req.progress?.(0, req.timeoutMs, message);
    const ticker = req.progress
      ? setInterval(
          () => req.progress!(Date.now() - requestedAt, req.timeoutMs, message),
          progressInterval(req.timeoutMs),
        )
      : undefined;
    try {
      return await decided;
    } finally {
      clearTimeout(timer);
      clearInterval(ticker);
      req.signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * A human's decision. Approving approves this one call; with `forMs` (at most the policy's
   * `grant.for`) it also grants identical calls (same digest) for that long. Resolves once the
   * decision record is durable.
   */
  async decide(
    id: string,
    decision: { state: 'approved' | 'denied'; by: Approver; reason?: string; forMs?: number },
  ): Promise<{ id: string; state: 'approved' | 'denied'; grantMs: number }> {
    const entry = this.waiting.get(id);
    if (!entry || entry.deciding)
      throw new ApprovalError(`no pending approval "${id}" (see airlock approvals list)`);
    let grantMs = 0;
    if (decision.state === 'approved') {
      if (decision.forMs !== undefined) {
        if (!(decision.forMs > 0) || decision.forMs > MAX_GRANT_MS)
          throw new ApprovalError(`--for must be between 1s and ${formatDuration(MAX_GRANT_MS)}`);
        if (entry.grantMaxMs === 0)
          throw new ApprovalError(
            `the policy of ${entry.view.team}'s ${entry.view.tool} allows no grants (grant: once); approve without --for`,
          );
        if (decision.forMs > entry.grantMaxMs)
          throw new ApprovalError(
            `the policy allows grants of at most ${formatDuration(entry.grantMaxMs)} for ${entry.view.tool}`,
          );
      }
      grantMs = decision.forMs ?? 0;
    }
    await this.finish(entry, decision.state, decision.reason, decision.by, grantMs);
    if (grantMs > 0) {
      const grant: Grant = { approval: id, until: Date.now() + grantMs, by: decision.by };
      this.grants.set(entry.digest, grant);
      // Identical calls already waiting are covered by the same grant.
      for (const other of [...this.waiting.values()]) {
        if (other.digest === entry.digest && !other.deciding) {
          await this.finish(other, 'approved', undefined, decision.by, 0, id).catch(() => undefined);
        }
      }
    }
    return { id, state: decision.state, grantMs };
  }

  /** Ends every wait (the broker is stopping): expired, never approved. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      [...this.waiting.values()].map((w) =>
        this.finish(w, 'expired', 'the broker is shutting down').catch(() => undefined),
      ),
    );
  }

  private async finish(
    entry: Waiting,
    state: 'approved' | 'denied' | 'expired',
    reason?: string,
    by?: Approver,
    grantMs = 0,
    grantOf?: string,
  ): Promise<void> {
    if (entry.deciding) return;
    entry.deciding = true;
    const decisionRecord: AuditEntry = {
      ...entry.head,
      phase: 'approval',
      decision: state === 'approved' ? 'allow' : 'deny',
      rule: entry.rule,
      ...(reason !== undefined ? { reason } : {}),
      approval: {
        id: entry.id,
        digest: entry.digest,
        state,
        ...(by ? { decidedBy: by } : {}),
        ...(grantMs ? { grantMs } : {}),
        ...(grantOf ? { grant: { approval: grantOf } } : {}),
      },
    };
    try {
      await this.deps.audit.append(decisionRecord);
    } catch (err) {
      // Unrecorded, an approval must not run the call; a refusal still ends it.
      this.release(entry);
      entry.settle({
        approved: false,
        reason: `the decision could not be recorded (${(err as Error).message}), so nothing was done`,
      });
      throw err;
    }
    this.release(entry);
    if (state === 'approved') return entry.settle({ approved: true });
    const who = by ? ` by ${by.user} (uid ${by.uid}, ${by.via})` : '';
    entry.settle({
      approved: false,
      reason:
        state === 'denied'
          ? `approval ${entry.id} was denied${who}${reason ? `: ${reason}` : ''}`
          : `approval ${entry.id} expired: ${reason ?? 'no decision'}`,
    });
  }

  private release(entry: Waiting): void {
    this.waiting.delete(entry.id);
    void unlink(entry.file).catch(() => undefined);
  }
}

/** Writes a new file and fsyncs it (and its folder), so it survives a crash right after. */
async function writeDurably(file: string, text: string): Promise<void> {
  const fh = await open(file, 'wx', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  const dir = await open(path.dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
