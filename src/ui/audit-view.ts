// Reading the audit log for the viewer without loading it: pages are read backwards from a
// byte offset (newest first) and grouped into calls; a call is looked up by scanning back from
// the end; the chain is verified incrementally; new records are tailed by offset. Every read
// is bounded, so a 1 GB log costs a page's worth of reads per request.
import { open, stat } from 'node:fs/promises';
import {
  readAuditLines,
  readAuditLinesBackward,
  VERIFY_START,
  verifyAuditFrom,
  type AuditRecord,
  type VerifyCursor,
} from '../audit/log.js';

export interface CallFilter {
  team?: string;
  server?: string;
  tool?: string;
  decision?: 'allow' | 'deny';
  outcome?: 'ok' | 'error' | 'denied' | 'pending' | 'running';
  session?: string;
  /** ms since the epoch; records outside [from, to] do not count. */
  from?: number;
  to?: number;
}

/** The records of one call that were read, oldest first. */
export interface CallGroup {
  call: string;
  records: AuditRecord[];
}

export interface CallSummary {
  call: string;
  ts: string;
  team: string;
  server: string;
  tool: string;
  session: string;
  args: unknown;
  decision: 'allow' | 'deny';
  /** The result's outcome; `pending` while an approval waits; `running` before the result. */
  outcome: 'ok' | 'error' | 'denied' | 'pending' | 'running';
  approval?: { id: string; state: string; decidedBy?: { user?: string; uid?: number; via?: string } };
  rule?: string;
  reason?: string;
  durationMs?: number;
  seq: number;
}

export function summarize(group: CallGroup): CallSummary {
  const records = group.records;
  const first = records[0]!;
  const result = records.findLast((r) => r.phase === 'result');
  const approvalRecord = records.findLast((r) => r.phase === 'approval');
  const approval = approvalRecord?.approval as CallSummary['approval'] | undefined;
  const denial = records.findLast((r) => r.decision === 'deny');
  const outcome: CallSummary['outcome'] = result?.outcome
    ? result.outcome
    : approval?.state === 'pending'
      ? 'pending'
      : 'running';
  return {
    call: group.call,
    ts: first.ts,
    team: String(first.team),
    server: String(first.server),
    tool: String(first.tool),
    session: String(first.session),
    args: records.find((r) => r.args !== undefined)?.args,
    decision: denial ? 'deny' : 'allow',
    outcome,
    ...(approval ? { approval } : {}),
    rule: (denial ?? result ?? first).rule,
    ...(denial?.reason !== undefined ? { reason: String(denial.reason) } : {}),
    ...(result?.error !== undefined && denial?.reason === undefined ? { reason: String(result.error) } : {}),
    ...(typeof result?.durationMs === 'number' ? { durationMs: result.durationMs } : {}),
    seq: records.at(-1)!.seq,
  };
}

export function matches(s: CallSummary, f: CallFilter): boolean {
  if (f.team !== undefined && s.team !== f.team) return false;
  if (f.server !== undefined && s.server !== f.server) return false;
  if (f.tool !== undefined && s.tool !== f.tool) return false;
  if (f.session !== undefined && !s.session.startsWith(f.session)) return false;
  if (f.decision !== undefined && s.decision !== f.decision) return false;
  if (f.outcome !== undefined && s.outcome !== f.outcome) return false;
  const t = Date.parse(s.ts);
  if (f.from !== undefined && !(t >= f.from)) return false;
  if (f.to !== undefined && !(t <= f.to)) return false;
  return true;
}

function parse(text: string): AuditRecord | undefined {
  try {
    const r = JSON.parse(text) as AuditRecord;
    return r && typeof r === 'object' && typeof r.call === 'string' ? r : undefined;
  } catch {
    return undefined;
  }
}

export interface Page {
  calls: CallSummary[];
  /** Offset to pass as `before` for the next (older) page; undefined at the start of the log. */
  next?: number;
  /** Bytes read for this page. */
  scanned: number;
  /** The page stopped at the scan budget before it was full. */
  budgetHit: boolean;
  size: number;
}

/** Longest backward scan for one page (a narrow filter on a huge log stops here and offers "older"). */
export const PAGE_SCAN_BUDGET = 64 * 1024 * 1024;

/** Newest calls before byte `before` (default: the end) that match `filter`. */
export async function readPage(
  file: string,
  opts: { before?: number; limit: number; filter: CallFilter; scanBudget?: number },
): Promise<Page> {
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const end = Math.min(opts.before ?? size, size);
    const budget = opts.scanBudget ?? PAGE_SCAN_BUDGET;
    const groups = new Map<string, AuditRecord[]>();
    const matched = new Set<string>();
    let next: number | undefined = end > 0 ? end : undefined;
    let budgetHit = false;
    for await (const { text, start, terminated } of readAuditLinesBackward(fh, end)) {
      if (!terminated) {
        next = start; // a write in progress
        continue;
      }
      const record = parse(text);
      if (record) {
        // Full and this is another call: the page ends before it.
        if (matched.size >= opts.limit && !groups.has(record.call)) break;
        // Older than the range asked for: nothing further back can match.
        if (opts.filter.from !== undefined && Date.parse(record.ts) < opts.filter.from) {
          next = undefined;
          break;
        }
        const list = groups.get(record.call) ?? [];
        if (list.length === 0) groups.set(record.call, list);
        list.unshift(record);
        if (matches(summarize({ call: record.call, records: list }), opts.filter)) matched.add(record.call);
        else matched.delete(record.call);
      }
      next = start > 0 ? start : undefined;
      if (end - start >= budget) {
        budgetHit = matched.size < opts.limit && start > 0;
        break;
      }
    }
    const calls = [...groups.entries()]
      .map(([call, records]) => summarize({ call, records }))
      .filter((s) => matches(s, opts.filter))
      .slice(0, opts.limit);
    return { calls, next, scanned: end - (next ?? 0), budgetHit, size };
  } finally {
    await fh.close();
  }
}

/** Every record of one call, oldest first: a scan back from the end, bounded. */
export async function findCall(
  file: string,
  call: string,
  scanBudget = 256 * 1024 * 1024,
): Promise<AuditRecord[]> {
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const found: AuditRecord[] = [];
    let sinceLastHit = 0;
    for await (const { text, start, terminated } of readAuditLinesBackward(fh, size)) {
      if (!terminated) continue;
      if (size - start > scanBudget) break;
      const record = parse(text);
      if (record?.call === call) {
        found.unshift(record);
        sinceLastHit = 0;
        // The request record opens a call; nothing of it comes earlier.
        if (record.phase === 'request') break;
      } else if (found.length && ++sinceLastHit > 10_000) break;
    }
    return found;
  } finally {
    await fh.close();
  }
}

export type ChainStatus =
  | { state: 'verifying'; count: number; last?: VerifyCursor['last'] }
  | { state: 'intact'; count: number; last?: VerifyCursor['last']; checkedAt: string }
  | {
      state: 'broken';
      count: number;
      line: number;
      reason: string;
      last?: VerifyCursor['last'];
      checkedAt: string;
    }
  | { state: 'unreadable'; reason: string; checkedAt: string };

/**
 * The chain's state, re-checked from where the last check stopped when the file grows (and from
 * the start when it is replaced or shrinks). One check runs at a time.
 */
export class ChainWatch {
  private cursor: VerifyCursor = VERIFY_START;
  private ino: number | undefined;
  private running: Promise<void> | undefined;
  status: ChainStatus = { state: 'verifying', count: 0 };

  constructor(private readonly file: string) {}

  refresh(): Promise<void> {
    this.running ??= this.check().finally(() => (this.running = undefined));
    return this.running;
  }

  private async check(): Promise<void> {
    const checkedAt = () => new Date().toISOString();
    try {
      const st = await stat(this.file);
      if (this.ino !== st.ino || st.size < this.cursor.offset) {
        this.ino = st.ino;
        this.cursor = VERIFY_START;
      }
      if (this.status.state === 'broken' && st.size >= this.cursor.offset && this.ino === st.ino) return;
      if (this.status.state !== 'intact') this.status = { state: 'verifying', count: this.cursor.count };
      const result = await verifyAuditFrom(this.file, this.cursor);
      this.cursor = result.cursor;
      this.status = result.ok
        ? { state: 'intact', count: result.cursor.count, last: result.cursor.last, checkedAt: checkedAt() }
        : {
            state: 'broken',
            count: result.cursor.count,
            line: result.line,
            reason: result.reason,
            last: result.cursor.last,
            checkedAt: checkedAt(),
          };
    } catch (err) {
      this.status = {
        state: 'unreadable',
        reason: (err as NodeJS.ErrnoException).code ?? (err as Error).message,
        checkedAt: checkedAt(),
      };
    }
  }
}

/** New complete records appended after `offset` (a replaced or shorter file starts over). */
export class AuditFollower {
  private offset = 0;
  private ino: number | undefined;
  private line = 1;

  constructor(private readonly file: string) {}

  /** The byte offset up to which records have been reported. */
  get position(): number {
    return this.offset;
  }

  /** Call ids of the records in [from, to) (what a viewer rendered before `from` has not seen). */
  async callsBetween(from: number, to: number): Promise<Set<string>> {
    const calls = new Set<string>();
    if (from >= to) return calls;
    for await (const { text, terminated, end } of readAuditLines(this.file, from)) {
      if (!terminated || end > to) break;
      const record = parse(text);
      if (record) calls.add(record.call);
    }
    return calls;
  }

  /** Starts at the current end: only records written from now on are reported. */
  async init(): Promise<void> {
    try {
      const st = await stat(this.file);
      this.offset = st.size;
      this.ino = st.ino;
    } catch {
      // No log yet: it starts at 0 when it appears.
    }
  }

  async poll(): Promise<AuditRecord[]> {
    let st;
    try {
      st = await stat(this.file);
    } catch {
      return [];
    }
    if (st.ino !== this.ino || st.size < this.offset) {
      this.ino = st.ino;
      this.offset = 0;
    }
    if (st.size === this.offset) return [];
    const out: AuditRecord[] = [];
    for await (const { text, terminated, end } of readAuditLines(this.file, this.offset, this.line)) {
      if (!terminated) break;
      this.offset = end;
      const record = parse(text);
      if (record) out.push(record);
    }
    return out;
  }
}
