// `airlock audit verify` and `airlock audit tail`. Records hold text chosen by a possibly hostile
// agent (arguments, denial reasons), so everything printed as a table has control characters
// escaped: a record cannot move the cursor or recolour an operator's terminal.
import { open, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  auditFileHead,
  readAuditLines,
  readAuditLinesBackward,
  rotateAuditFile,
  verifyAuditChain,
  verifyAuditFile,
  type AuditRecord,
  type ChainHead,
} from '../audit/log.js';
import {
  loadAuditVerifier,
  loadOrCreateAuditSigner,
  verifierFromPem,
  type AuditVerifier,
} from '../audit/key.js';
import type { CommandContext } from '../cli.js';
import type { AirlockConfig, AuditPostgresConfig } from '../config/airlock-yaml.js';

type Out = NodeJS.WritableStream;

function write(out: Out, text: string): void {
  out.write(text.endsWith('\n') ? text : text + '\n');
}

/** Escapes C0/C1 controls (ESC, CR, BEL, …) and bidi overrides so text prints as one inert line. */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) =>
    c === '\t' ? ' ' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

function errorCode(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e?.code ?? (err instanceof Error ? err.message : String(err));
}

// ---------------------------------------------------------------------------------------------
// verify

export async function auditVerifyCommand(opts: {
  file: string;
  /** One JSON object: `{ok, file, count}`, plus `line`, `reason` when broken or `error` when unreadable. */
  json?: boolean;
  out?: Out;
  err?: Out;
}): Promise<number> {
  const out = opts.out ?? process.stdout;
  // Problems go to stderr from the command line (to `out` when a caller gives only that).
  const errOut = opts.err ?? opts.out ?? process.stderr;
  let result;
  try {
    result = await verifyAuditFile(opts.file);
  } catch (err) {
    if (opts.json)
      write(out, JSON.stringify({ ok: false, file: opts.file, count: 0, error: errorCode(err) }));
    else write(errOut, `cannot read ${opts.file}: ${errorCode(err)}`);
    return 1;
  }
  if (opts.json) {
    const broken = result.ok ? {} : { line: result.line, reason: result.reason };
    write(out, JSON.stringify({ ok: result.ok, file: opts.file, count: result.count, ...broken }));
    return result.ok ? 0 : 1;
  }
  if (result.ok) {
    write(out, `ok: ${result.count} records, chain intact`);
    return 0;
  }
  write(out, `broken at line ${result.line}: ${result.reason}`);
  if (result.text !== undefined) write(out, `  ${printable(result.text)}`);
  write(out, `(${result.count} records before it verify)`);
  return 1;
}

// ---------------------------------------------------------------------------------------------
// verify (several files, anchored heads), head, rotate

const HEAD_TEXT = /^(\d+):([0-9a-f]{64})$/;

function parseHead(text: string, what: string): ChainHead {
  const m = HEAD_TEXT.exec(text);
  if (!m) throw new AuditUsageError(`${what} must be SEQ:HASH (the seq and 64-hex hash of a record)`);
  return { seq: Number(m[1]), hash: m[2]! };
}

class AuditUsageError extends Error {}

/** A head file written by `airlock audit head --json`, checked against the host key. */
async function signedHeadFile(file: string, verifier: AuditVerifier | undefined): Promise<ChainHead> {
  let head: { seq?: unknown; hash?: unknown; keyId?: unknown; signature?: unknown };
  try {
    head = JSON.parse(await readFile(file, 'utf8')) as typeof head;
  } catch (err) {
    throw new AuditUsageError(`--expect-head ${file}: not a head file (${errorCode(err)})`);
  }
  if (typeof head.seq !== 'number' || typeof head.hash !== 'string' || typeof head.signature !== 'string')
    throw new AuditUsageError(`--expect-head ${file}: not a head file written by airlock audit head --json`);
  if (!verifier)
    throw new AuditUsageError(
      `--expect-head ${file}: no host key to check its signature (give --key PUBLIC.pem)`,
    );
  if (head.keyId !== verifier.keyId || !verifier.verify(head.seq, head.hash, head.signature))
    throw new AuditUsageError(`--expect-head ${file}: the signature does not verify with this host's key`);
  return { seq: head.seq, hash: head.hash };
}

/**
 * `airlock audit verify|head|rotate [--file FILE]…`: the chain commands. `verify` takes several
 * `--file` (oldest first), `--from SEQ:HASH`, `--expect-head SEQ:HASH|HEADFILE` and `--key
 * PUBLIC.pem` (default: the host key in stateDir).
 */
/** The values `audit verify|head|rotate` take (parsed by the command table). */
export interface AuditChainOptions {
  file?: string[];
  from?: string;
  'expect-head'?: string;
  key?: string;
  json?: boolean;
  /** `verify --postgres`: every broker's chain in the audit.postgres table. */
  postgres?: boolean;
}

export async function auditChainCommand(
  sub: 'verify' | 'head' | 'rotate',
  values: AuditChainOptions,
  config: () => Promise<AirlockConfig>,
  io: { out?: Out; err?: Out } = {},
): Promise<number> {
  const out = io.out ?? process.stdout;
  const errOut = io.err ?? io.out ?? process.stderr;
  if (sub === 'verify' && values.postgres) {
    if (values.file?.length || values.from || values['expect-head'] || values.key) {
      write(
        errOut,
        'audit verify --postgres reads the table only: it takes no --file, --from, --expect-head or --key',
      );
      return 1;
    }
    return auditVerifyPostgresCommand(await config(), { json: values.json === true, out, err: errOut });
  }
  const files = values.file?.length ? values.file.map((f) => path.resolve(f)) : [(await config()).audit.file];
  try {
    if (sub === 'verify') {
      // The config's own log, when it is shipped: compared with the table, its off-host copy.
      const own = !values.file?.length ? await config() : undefined;
      const compare = own?.audit.postgres
        ? (last: ChainHead) => compareWithTable(own, files, last)
        : undefined;
      let verifier: AuditVerifier | undefined;
      if (values.key) verifier = verifierFromPem(await readFile(values.key, 'utf8'));
      else {
        const stateDir = await config().then(
          (c) => c.stateDir,
          () => undefined,
        );
        if (stateDir) verifier = await loadAuditVerifier(stateDir);
      }
      const expect = values['expect-head'];
      const expectHead =
        expect === undefined
          ? undefined
          : HEAD_TEXT.test(expect)
            ? parseHead(expect, '--expect-head')
            : await signedHeadFile(expect, verifier);
      return await verifyFiles(files, {
        ...(values.from ? { from: parseHead(values.from, '--from') } : {}),
        ...(expectHead ? { expectHead } : {}),
        ...(verifier ? { verifier } : {}),
        ...(compare ? { compare } : {}),
        json: values.json === true,
        out,
        errOut,
      });
    }
    const { stateDir } = await config();
    const signer = await loadOrCreateAuditSigner(stateDir);
    if (files.length > 1) throw new AuditUsageError(`audit ${sub} takes one --file`);
    const file = files[0]!;
    if (sub === 'head') {
      const head = await auditFileHead(file);
      const signed = {
        file,
        seq: head.seq,
        hash: head.hash,
        keyId: signer.keyId,
        signature: signer.sign(head.seq, head.hash),
        signedAt: new Date().toISOString(),
        publicKey: signer.publicKeyPem,
      };
      if (values.json) write(out, JSON.stringify(signed));
      else {
        write(out, `${head.seq}:${head.hash}`);
        write(out, `signed by ${signer.keyId}: ${signed.signature}`);
      }
      return 0;
    }
    // The rotation record carries this broker's id, as every record does.
    const { readBrokerId } = await import('../audit/broker-id.js');
    const configured = await config().then(
      (c) => c.brokerId,
      () => undefined,
    );
    const broker = configured ?? (await readBrokerId(stateDir).catch(() => undefined));
    const r = await rotateAuditFile(file, signer, broker === undefined ? {} : { broker });
    write(
      out,
      `rotated: ${file} → ${r.rotated} (last record seq ${r.head.seq}, ${r.head.seq}:${r.head.hash})`,
    );
    write(out, `${file} continues the chain at seq ${r.first}`);
    return 0;
  } catch (err) {
    if (err instanceof AuditUsageError) {
      write(errOut, err.message);
      return 1;
    }
    const e = err as NodeJS.ErrnoException;
    if (e?.code || e?.name === 'AuditUnavailableError') {
      write(errOut, `cannot ${sub} ${files.join(', ')}: ${e.code ?? e.message}`);
      return 1;
    }
    throw err;
  }
}

async function verifyFiles(
  files: string[],
  opts: {
    from?: ChainHead;
    expectHead?: ChainHead;
    verifier?: AuditVerifier;
    /** After a good chain: compare it with the central table (plain verify with audit.postgres). */
    compare?: (last: ChainHead) => Promise<CentralComparison>;
    json: boolean;
    out: Out;
    errOut: Out;
  },
): Promise<number> {
  const { out } = opts;
  // `--json`: one object, `{ok, file, count}` (files: every file when several), plus what applies.
  const where = files.length === 1 ? { file: files[0] } : { files };
  let result;
  try {
    result = await verifyAuditChain(files, opts);
  } catch (err) {
    if (opts.json) write(out, JSON.stringify({ ok: false, ...where, count: 0, error: errorCode(err) }));
    else write(opts.errOut, `cannot read ${files.join(', ')}: ${errorCode(err)}`);
    return 1;
  }
  if (opts.json) {
    if (!result.ok) {
      const { count, line, reason } = result;
      write(
        out,
        JSON.stringify({
          ok: false,
          ...where,
          ...(files.length > 1 ? { brokenFile: result.file } : {}),
          count,
          line,
          reason,
        }),
      );
      return 1;
    }
    const { verified, unchecked } = result.signatures;
    const central = opts.compare ? await opts.compare(result.last) : undefined;
    write(
      out,
      JSON.stringify({
        ok: central?.ok ?? true,
        ...where,
        count: result.count,
        ...(result.count ? { last: result.last } : {}),
        ...(result.from.by !== 'genesis' ? { from: result.from } : {}),
        ...(verified || unchecked ? { checkpoints: { verified, unchecked } } : {}),
        ...(opts.expectHead ? { expectHead: opts.expectHead } : {}),
        ...(result.interrupted.length ? { interrupted: result.interrupted } : {}),
        ...(central ? { central } : {}),
      }),
    );
    return (central?.ok ?? true) ? 0 : 1;
  }
  if (!result.ok) {
    write(out, `broken at ${files.length > 1 ? `${result.file} ` : ''}line ${result.line}: ${result.reason}`);
    if (result.text !== undefined) write(out, `  ${printable(result.text)}`);
    write(out, `(${result.count} records before it verify)`);
    return 1;
  }
  write(out, `ok: ${result.count} records, chain intact`);
  if (result.from.by !== 'genesis')
    write(out, `from seq ${result.from.seq} (${result.from.by}) to ${result.last.seq}:${result.last.hash}`);
  const { verified, unchecked } = result.signatures;
  if (verified) write(out, `${verified} signed checkpoint(s) verified with the host key`);
  if (unchecked)
    write(out, `${unchecked} signed checkpoint(s) not checked (no host key; give --key PUBLIC.pem)`);
  if (opts.expectHead)
    write(out, `expected head ${opts.expectHead.seq}:${opts.expectHead.hash} is in the chain`);
  if (result.interrupted.length) {
    write(
      out,
      `${result.interrupted.length} interrupted call(s) (request record without a result; not an error):`,
    );
    for (const i of result.interrupted)
      write(out, `  seq ${i.seq}: ${text(i.team)} ${text(i.server)} ${text(i.tool)} call ${text(i.call)}`);
  }
  if (opts.compare) {
    const central = await opts.compare(result.last);
    for (const line of comparisonLines(central)) write(out, printable(line));
    if (!central.ok) return 1;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// table

const COLUMNS = ['SEQ', 'TIME', 'TEAM', 'SERVER', 'TOOL', 'PHASE', 'DECISION', 'DURATION', 'RESULT'] as const;
type Column = (typeof COLUMNS)[number];
/** Longest cell kept per column; longer cells are cut with "…". RESULT gets what the terminal leaves. */
const MAX_WIDTH: Record<Column, number> = {
  SEQ: 10,
  TIME: 24,
  TEAM: 24,
  SERVER: 10,
  TOOL: 28,
  PHASE: 8,
  DECISION: 8,
  DURATION: 10,
  RESULT: Infinity,
};
const RIGHT_ALIGNED = new Set<Column>(['SEQ', 'DURATION']);
/** RESULT never gets narrower than this, even on a narrow terminal (the line wraps instead). */
const MIN_RESULT_WIDTH = 24;
const GAP = 2;

/**
 * Column widths; RESULT's is its cap (Infinity: not cut, as when the output is not a terminal).
 * BROKER is there only for tables of several brokers' records (`tail --postgres`).
 */
export type AuditTableWidths = Record<Column, number> & { BROKER?: number };
const BROKER_MAX_WIDTH = 24;

function text(value: unknown): string {
  if (value === undefined || value === null) return '';
  return printable(typeof value === 'string' ? value : JSON.stringify(value));
}

function formatDuration(ms: unknown): string {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '-';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`;
}

function resultCell(r: AuditRecord): string {
  if (r.phase === 'approval') {
    const a = (r.approval ?? {}) as { id?: unknown; state?: unknown; decidedBy?: { user?: unknown } };
    const by = a.decidedBy?.user !== undefined ? ` by ${text(a.decidedBy.user)}` : '';
    return `approval ${text(a.id)} ${text(a.state)}${by}${r.reason !== undefined ? `: ${text(r.reason)}` : ''}`;
  }
  if (r.decision === 'deny' || r.outcome === 'denied') {
    return `denied: ${text(r.rule)}${r.reason !== undefined ? `: ${text(r.reason)}` : ''}`;
  }
  if (r.outcome === 'error') return `error${r.error !== undefined ? `: ${text(r.error)}` : ''}`;
  if (r.outcome !== undefined) return text(r.outcome);
  return r.phase === 'request' ? '…' : '';
}

function cells(r: AuditRecord): Record<Column, string> & { BROKER: string } {
  return {
    BROKER: text(r.broker),
    SEQ: text(r.seq),
    TIME: text(r.ts),
    TEAM: text(r.team),
    SERVER: text(r.server),
    TOOL: text(r.tool),
    PHASE: text(r.phase),
    DECISION: text(r.decision),
    DURATION: r.phase === 'request' ? '' : formatDuration(r.durationMs),
    RESULT: resultCell(r),
  };
}

function clip(s: string, width: number): string {
  return s.length > width ? s.slice(0, Math.max(0, width - 1)) + '…' : s;
}

/** Typical widths, so rows followed after an empty or narrow first table still line up. */
const FOLLOW_MIN_WIDTH: Partial<AuditTableWidths> = {
  SEQ: 6,
  TIME: 24,
  TEAM: 12,
  SERVER: 8,
  TOOL: 20,
  PHASE: 7,
  DECISION: 8,
  DURATION: 8,
};

/**
 * Column widths that fit `records` (and the headers), each capped; `minimum` widens them. With
 * `columns` (the terminal's width) RESULT takes the rest of the line; without, it is never cut.
 */
export function auditTableWidths(
  records: AuditRecord[],
  minimum?: Partial<AuditTableWidths>,
  columns?: number,
  broker = false,
): AuditTableWidths {
  const widths = Object.fromEntries(
    COLUMNS.map((c) => [c, Math.max(c.length, minimum?.[c] ?? 0)]),
  ) as AuditTableWidths;
  if (broker) widths.BROKER = 'BROKER'.length + (minimum === undefined ? 0 : 8);
  for (const r of records) {
    const row = cells(r);
    for (const c of COLUMNS) widths[c] = Math.min(MAX_WIDTH[c], Math.max(widths[c], row[c].length));
    if (widths.BROKER !== undefined)
      widths.BROKER = Math.min(BROKER_MAX_WIDTH, Math.max(widths.BROKER, row.BROKER.length));
  }
  const used =
    COLUMNS.filter((c) => c !== 'RESULT').reduce((n, c) => n + widths[c] + GAP, 0) +
    (widths.BROKER === undefined ? 0 : widths.BROKER + GAP);
  widths.RESULT = columns ? Math.max(MIN_RESULT_WIDTH, columns - used) : Infinity;
  return widths;
}

function formatRow(row: Record<Column, string> & { BROKER?: string }, widths: AuditTableWidths): string {
  const cellsOut = COLUMNS.map((c, i) => {
    // Cut at the column's cap only: a row printed later with narrower widths overflows, not truncates.
    if (i === COLUMNS.length - 1) return clip(row[c], widths.RESULT); // no trailing padding
    const cell = clip(row[c], MAX_WIDTH[c]);
    return RIGHT_ALIGNED.has(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c]);
  });
  if (widths.BROKER !== undefined)
    cellsOut.unshift(clip(row.BROKER ?? '', BROKER_MAX_WIDTH).padEnd(widths.BROKER));
  return cellsOut.join(' '.repeat(GAP)).trimEnd();
}

const RED = '\u001b[31m';
const YELLOW = '\u001b[33m';
const DIM = '\u001b[2m';
const RESET = '\u001b[0m';

/** One record as a table row with the given widths (for rows printed after the table, as in `tail -f`). */
export function formatAuditRow(record: AuditRecord, widths: AuditTableWidths, colour = false): string {
  const row = formatRow(cells(record), widths);
  if (!colour) return row;
  if (record.decision === 'deny' || record.outcome === 'denied') return `${RED}${row}${RESET}`;
  if (record.outcome === 'error') return `${YELLOW}${row}${RESET}`;
  return record.phase === 'request' ? `${DIM}${row}${RESET}` : row;
}

/** The header line for `widths`. */
export function formatAuditHeader(widths: AuditTableWidths): string {
  const header = Object.fromEntries(COLUMNS.map((c) => [c, c])) as Record<Column, string>;
  return formatRow({ ...header, BROKER: 'BROKER' }, widths);
}

/** Records as a readable table: a header, then one line per record. No trailing newline. */
export function formatAuditTable(records: AuditRecord[], columns?: number): string {
  const widths = auditTableWidths(records, undefined, columns);
  return [formatAuditHeader(widths), ...records.map((r) => formatAuditRow(r, widths))].join('\n');
}

// ---------------------------------------------------------------------------------------------
// tail

export interface AuditTailOptions {
  file: string;
  follow: boolean;
  team?: string;
  decision?: 'allow' | 'deny';
  server?: string;
  tool?: string;
  /** A session id or a prefix of one (as printed in shortened form). */
  session?: string;
  /** Only records whose `ts` is at or after this time. */
  since?: Date;
  json?: boolean;
  /** Terminal width: RESULT takes the rest of the line. Absent: nothing is cut to fit. */
  columns?: number;
  /** ANSI colour (denials red, errors yellow); only ever on a terminal. */
  colour?: boolean;
  /** How many of the last matching records to print first (default 10). */
  lines?: number;
  out?: Out;
  /** Where problems go (default stderr, or `out` when only that is given). */
  err?: Out;
  signal?: AbortSignal;
  /** How often `follow` looks for new lines (default 250 ms). */
  pollMs?: number;
}

function parseLine(line: string): AuditRecord | null {
  try {
    const v = JSON.parse(line) as unknown;
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as AuditRecord) : null;
  } catch {
    return null;
  }
}

/**
 * The last `count` matching records of `file` (read backwards from the end, so a large log costs
 * little), and the offset just after the last complete line.
 */
async function lastRecords(
  file: string,
  count: number,
  matches: (r: AuditRecord) => boolean,
  /** True for a record older than anything wanted: reading backwards stops there. */
  tooOld: (r: AuditRecord) => boolean = () => false,
): Promise<{ records: AuditRecord[]; skipped: number; offset: number; ino: number }> {
  const fh = await open(file, 'r');
  try {
    const st = await fh.stat();
    const records: AuditRecord[] = [];
    let skipped = 0;
    let offset = st.size;
    if (st.size === 0) return { records, skipped, offset, ino: st.ino };
    const last = Buffer.alloc(1);
    await fh.read(last, 0, 1, st.size - 1);
    let first = true;
    for await (const { text: line, start } of readAuditLinesBackward(fh, st.size)) {
      if (first && last[0] !== 10) {
        offset = start; // a line still being written: follow picks it up once complete
        first = false;
        continue;
      }
      first = false;
      if (records.length >= count) break;
      const r = parseLine(line);
      if (!r) skipped++;
      else if (tooOld(r)) break;
      else if (matches(r)) records.push(r);
    }
    return { records: records.reverse(), skipped, offset, ino: st.ino };
  } finally {
    await fh.close();
  }
}

/** The filters of `audit tail` (team, decision, server, tool, session prefix, since). */
function recordFilter(opts: Omit<AuditTailOptions, 'file'>): (r: AuditRecord) => boolean {
  const since = opts.since?.getTime();
  return (r) =>
    (opts.team === undefined || r.team === opts.team) &&
    (opts.decision === undefined || r.decision === opts.decision) &&
    (opts.server === undefined || r.server === opts.server) &&
    (opts.tool === undefined || r.tool === opts.tool) &&
    (opts.session === undefined || (typeof r.session === 'string' && r.session.startsWith(opts.session))) &&
    (since === undefined || (typeof r.ts === 'string' && Date.parse(r.ts) >= since));
}

export async function auditTailCommand(opts: AuditTailOptions): Promise<number> {
  const out = opts.out ?? process.stdout;
  const errOut = opts.err ?? opts.out ?? process.stderr;
  const count = opts.lines ?? 10;
  if (!Number.isInteger(count) || count < 0) {
    write(errOut, '--lines must be a whole number of records (0 or more)');
    return 1;
  }
  const since = opts.since?.getTime();
  const matches = recordFilter(opts);
  const colour = Boolean(opts.colour);

  let offset = 0;
  let ino: number | null = null;
  let widths: AuditTableWidths;
  try {
    const initial = await lastRecords(
      opts.file,
      count,
      matches,
      (r) => since !== undefined && typeof r.ts === 'string' && Date.parse(r.ts) < since,
    );
    offset = initial.offset;
    ino = initial.ino;
    widths = auditTableWidths(initial.records, opts.follow ? FOLLOW_MIN_WIDTH : undefined, opts.columns);
    if (opts.json) for (const r of initial.records) write(out, JSON.stringify(r));
    else {
      write(out, formatAuditHeader(widths));
      for (const r of initial.records) write(out, formatAuditRow(r, widths, colour));
      if (initial.skipped)
        write(out, `# ${initial.skipped} unparsable line(s) skipped; run airlock audit verify`);
    }
  } catch (err) {
    // When following, a log that does not exist yet is waited for.
    if (!(opts.follow && errorCode(err) === 'ENOENT')) {
      write(errOut, `cannot read ${opts.file}: ${errorCode(err)}`);
      return 1;
    }
    widths = auditTableWidths([], FOLLOW_MIN_WIDTH, opts.columns);
    if (!opts.json) write(out, formatAuditHeader(widths));
  }
  if (!opts.follow) return 0;

  const pollMs = opts.pollMs ?? 250;
  const signal = opts.signal;
  while (!signal?.aborted) {
    try {
      await sleep(pollMs, undefined, signal ? { signal } : undefined);
    } catch {
      break; // aborted
    }
    const st = await stat(opts.file).catch(() => null);
    if (!st) continue;
    // A new file at the path (rotation, restore) or a shorter one: read it from the start.
    if (st.ino !== ino || st.size < offset) {
      ino = st.ino;
      offset = 0;
    }
    if (st.size <= offset) continue;
    try {
      for await (const { text: line, terminated, end } of readAuditLines(opts.file, offset)) {
        if (!terminated) break; // incomplete: read again next time
        offset = end;
        const r = parseLine(line);
        if (!r) {
          if (!opts.json) write(out, '# unparsable line skipped; run airlock audit verify');
          continue;
        }
        if (!matches(r)) continue;
        write(out, opts.json ? JSON.stringify(r) : formatAuditRow(r, widths, colour));
      }
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err;
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// command line

async function auditFile(ctx: CommandContext): Promise<string> {
  const file = ctx.values.file;
  return typeof file === 'string' ? path.resolve(file) : (await ctx.config()).audit.file;
}

export async function auditChainMain(
  sub: 'verify' | 'head' | 'rotate',
  ctx: CommandContext,
): Promise<number> {
  const v = ctx.values;
  const str = (name: string) => (typeof v[name] === 'string' ? (v[name] as string) : undefined);
  const file = v.file === undefined ? undefined : Array.isArray(v.file) ? v.file : [String(v.file)];
  const options: AuditChainOptions = {
    json: v.json === true,
    ...(v.postgres === true ? { postgres: true } : {}),
  };
  if (file) options.file = file;
  for (const name of ['from', 'expect-head', 'key'] as const) {
    const value = str(name);
    if (value !== undefined) options[name] = value;
  }
  // `verify --file F` alone reads no config (and loads no package): the host key then comes
  // only from --key or an explicit --config.
  const configFree = sub === 'verify' && file !== undefined && !ctx.configGiven;
  return auditChainCommand(sub, options, () =>
    configFree ? Promise.reject(new Error('no config given')) : ctx.config(),
  );
}

const DURATION_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--since`: an ISO time, or a duration back from `now` (`90s`, `15m`, `2h`, `7d`). */
export function parseSince(value: string, now = Date.now()): Date | undefined {
  const ago = /^(\d+)([smhd])$/.exec(value);
  if (ago) return new Date(now - Number(ago[1]) * DURATION_UNITS[ago[2]!]!);
  if (!/^\d{4}-\d\d-\d\d/.test(value)) return undefined;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : new Date(t);
}

export async function auditTailMain(ctx: CommandContext): Promise<number> {
  const v = ctx.values;
  const str = (name: string) => (typeof v[name] === 'string' ? (v[name] as string) : undefined);
  const decision = str('decision');
  if (decision !== undefined && decision !== 'allow' && decision !== 'deny') {
    throw ctx.usageError('--decision must be allow or deny');
  }
  const sinceText = str('since');
  const since = sinceText === undefined ? undefined : parseSince(sinceText);
  if (sinceText !== undefined && since === undefined) {
    throw ctx.usageError(
      `--since takes an ISO time (2026-11-25T22:00) or a duration (90s, 15m, 2h, 7d), not "${sinceText}"`,
    );
  }
  const lines = str('lines');
  if (lines !== undefined && !/^\d+$/.test(lines))
    throw ctx.usageError('--lines must be a whole number (0 or more)');
  const tty = Boolean(process.stdout.isTTY);
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  process.once('SIGTERM', () => controller.abort());
  // The same filters and output for the file and for the table.
  const shown = {
    follow: Boolean(v.follow),
    team: str('team'),
    decision: decision as 'allow' | 'deny' | undefined,
    server: str('server'),
    tool: str('tool'),
    session: str('session'),
    since,
    json: Boolean(v.json),
    lines: lines !== undefined ? Number(lines) : undefined,
    columns: tty ? process.stdout.columns : undefined,
    colour: tty && !process.env.NO_COLOR,
    signal: controller.signal,
  };
  if (v.postgres === true) {
    if (v.file !== undefined) throw ctx.usageError('--postgres reads the table: it takes no --file');
    return auditTailPostgresCommand({ config: await ctx.config(), ...shown });
  }
  return auditTailCommand({ file: await auditFile(ctx), ...shown });
}

// ---------------------------------------------------------------------------------------------
// central audit in PostgreSQL: migrate, verify --postgres, the local-versus-table comparison,
// tail --postgres. The driver and the table code load only when one of these runs.

async function centralConfig(config: AirlockConfig): Promise<AuditPostgresConfig> {
  const central = config.audit.postgres;
  if (!central)
    throw new AuditUsageError(
      `${config.file} has no audit.postgres (add audit: { postgres: { connection: <secret>, table: airlock_audit } })`,
    );
  return central;
}

/** The URL held by secret `name` (never printed; registered with a redactor like every value). */
async function connectionUrl(config: AirlockConfig, name: string): Promise<string> {
  const { SecretStore } = await import('../secrets/store.js');
  const { Redactor } = await import('../secrets/redact.js');
  return new SecretStore(config.secrets, new Redactor()).brokerValue(name);
}

/** Connects with the shipping role's secret (or `secret`); a failure is a one-line reason. */
async function connectCentral(config: AirlockConfig, secret?: string) {
  const central = await centralConfig(config);
  const pgm = await import('../audit/postgres.js');
  const url = await connectionUrl(config, secret ?? central.connection);
  try {
    return { client: await pgm.connectPostgres(url), url, central, pgm };
  } catch (err) {
    throw new AuditUsageError(`cannot connect to PostgreSQL for ${central.table}: ${pgErrorText(err)}`);
  }
}

function pgErrorText(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e?.message ?? String(err);
}

/** `airlock audit migrate`: creates the table, its append-only triggers and the shipping role's grants. */
export async function auditMigrateCommand(
  config: AirlockConfig,
  opts: { admin?: string; out?: Out; err?: Out } = {},
): Promise<number> {
  const out = opts.out ?? process.stdout;
  const errOut = opts.err ?? opts.out ?? process.stderr;
  try {
    const central = await centralConfig(config);
    const pgm = await import('../audit/postgres.js');
    const shipperUrl = await connectionUrl(config, central.connection);
    const shipper = pgm.urlUser(shipperUrl);
    const { client } = await connectCentral(config, opts.admin ?? central.connection);
    try {
      const owner = String((await client.query<{ u: string }>('SELECT current_user AS u')).rows[0]!.u);
      const grantee = shipper !== undefined && shipper !== owner ? shipper : undefined;
      await client.query('BEGIN');
      try {
        // Two migrations at once (two hosts) take turns: CREATE … IF NOT EXISTS is not race-free.
        await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`airlock-audit:${central.table}`]);
        for (const sql of pgm.migrationSql(central.table, grantee)) await client.query(sql);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
      write(
        out,
        `migrated ${central.table}: table and append-only triggers (UPDATE, DELETE, TRUNCATE refused)`,
      );
      if (grantee) write(out, `role ${grantee} (audit.postgres.connection) may INSERT and SELECT only`);
      else
        write(
          errOut,
          `warning: the shipping role ${shipper ?? '(unknown)'} owns ${central.table}, so it could disable the ` +
            `append-only triggers; run migrate with --admin SECRET (a URL of another role, the table's owner)`,
        );
      return 0;
    } finally {
      await client.end().catch(() => undefined);
    }
  } catch (err) {
    if (err instanceof AuditUsageError) {
      write(errOut, err.message);
      return 1;
    }
    const e = err as { code?: string; severity?: string };
    if (e?.severity || e?.code) {
      write(errOut, `migrate failed: ${pgErrorText(err)}`);
      return 1;
    }
    throw err;
  }
}

/** `airlock audit verify --postgres`: every broker's chain in the table, one line per broker. */
export async function auditVerifyPostgresCommand(
  config: AirlockConfig,
  opts: { json?: boolean; out?: Out; err?: Out } = {},
): Promise<number> {
  const out = opts.out ?? process.stdout;
  const errOut = opts.err ?? opts.out ?? process.stderr;
  let connected;
  try {
    connected = await connectCentral(config);
  } catch (err) {
    if (!(err instanceof AuditUsageError)) throw err;
    if (opts.json) write(out, JSON.stringify({ ok: false, error: err.message }));
    else write(errOut, err.message);
    return 1;
  }
  const { client, central, pgm } = connected;
  try {
    let reports;
    try {
      reports = await pgm.verifyTable(client, central.table);
    } catch (err) {
      const message = `cannot read ${central.table}: ${pgErrorText(err)}`;
      if (opts.json) write(out, JSON.stringify({ ok: false, table: central.table, error: message }));
      else write(errOut, message);
      return 1;
    }
    const ok = reports.every((r) => r.ok);
    if (opts.json) write(out, JSON.stringify({ ok, table: central.table, brokers: reports }));
    else {
      if (reports.length === 0) write(out, `${central.table}: no records yet`);
      for (const r of reports)
        write(
          out,
          r.ok
            ? `${printable(r.broker)}: ok: ${r.count} records, chain intact`
            : `${printable(r.broker)}: ${printable(r.problem ?? 'broken')} (${r.count} records before it verify)`,
        );
    }
    return ok ? 0 : 1;
  } finally {
    await client.end().catch(() => undefined);
  }
}

export interface CentralComparison {
  /** False when the table shows the local log lost or changed records after shipping. */
  ok: boolean;
  /** Whether the comparison ran (PostgreSQL reachable, a broker id exists). */
  compared: boolean;
  broker?: string;
  table: string;
  tableSeq?: number;
  problem?: string;
  note?: string;
}

/**
 * The local chain (already verified, `files` oldest first, ending at `last`) against this
 * broker's rows in the table: a table ahead of the file means records were cut from its end; a
 * differing hash at a shipped seq means the file was rewritten. The table is the off-host copy.
 */
export async function compareWithTable(
  config: AirlockConfig,
  files: string[],
  last: ChainHead,
): Promise<CentralComparison> {
  const central = await centralConfig(config);
  const table = central.table;
  const { readBrokerId } = await import('../audit/broker-id.js');
  const broker = config.brokerId ?? (await readBrokerId(config.stateDir).catch(() => undefined));
  if (!broker) return { ok: true, compared: false, table, note: 'no broker id yet: nothing was shipped' };
  let connected;
  try {
    connected = await connectCentral(config);
  } catch (err) {
    return { ok: true, compared: false, broker, table, note: (err as Error).message };
  }
  const { client, pgm } = connected;
  try {
    const tableSeq = await pgm.tableHead(client, table, broker);
    const base = { compared: true, broker, table, tableSeq };
    if (tableSeq > last.seq)
      return {
        ...base,
        ok: false,
        problem:
          `the local log ends at seq ${last.seq}, but ${table} holds seq ${tableSeq} for broker ${broker}: ` +
          `records were removed from the local log after they were shipped`,
      };
    // Walk both in seq order; every shipped seq the local files hold must have the same hash.
    const rows = pgm.tableRows(client, table, { broker })[Symbol.asyncIterator]();
    let row = await rows.next();
    for (const file of files) {
      for await (const { text, terminated } of readAuditLines(file)) {
        if (!terminated) break;
        const rec = parseLine(text);
        if (!rec) continue;
        while (!row.done && row.value.seq < rec.seq) row = await rows.next();
        if (row.done) return { ...base, ok: true };
        if (row.value.seq === rec.seq && row.value.hash !== rec.hash)
          return {
            ...base,
            ok: false,
            problem:
              `local record seq ${rec.seq} differs from the one shipped to ${table} (hash ${rec.hash.slice(0, 12)}… ` +
              `vs ${row.value.hash.slice(0, 12)}…): the local log was rewritten after shipping`,
          };
      }
    }
    return { ...base, ok: true };
  } catch (err) {
    return { ok: true, compared: false, broker, table, note: `cannot read ${table}: ${pgErrorText(err)}` };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The text lines plain `verify` adds for the comparison. */
function comparisonLines(c: CentralComparison): string[] {
  if (!c.compared) return [`central audit: NOT compared with ${c.table} (${c.note ?? 'unavailable'})`];
  if (!c.ok) return [`central audit: ${c.problem}`];
  return [
    `central audit: matches ${c.table} for broker ${c.broker}` +
      (c.tableSeq ? ` (shipped up to seq ${c.tableSeq})` : ' (nothing shipped yet)'),
  ];
}

export interface AuditTailPostgresOptions extends Omit<AuditTailOptions, 'file'> {
  config: AirlockConfig;
}

/** `airlock audit tail --postgres`: the last records of every broker in the table, then (-f) new ones. */
export async function auditTailPostgresCommand(opts: AuditTailPostgresOptions): Promise<number> {
  const out = opts.out ?? process.stdout;
  const errOut = opts.err ?? opts.out ?? process.stderr;
  const count = opts.lines ?? 10;
  const matches = recordFilter(opts);
  const colour = Boolean(opts.colour);
  let connected;
  try {
    connected = await connectCentral(opts.config);
  } catch (err) {
    if (!(err instanceof AuditUsageError)) throw err;
    write(errOut, err.message);
    return 1;
  }
  let { client } = connected;
  const { central, pgm } = connected;
  const t = pgm.quoteTable(central.table);
  const toRecord = (row: { line: string; record: unknown }) =>
    parseLine(row.line) ?? (row.record as AuditRecord);
  /** Per broker, the last seq looked at. */
  const seen = new Map<string, number>();
  let widths: AuditTableWidths;
  try {
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (sql: string, value: unknown) => {
      params.push(value);
      where.push(sql.replace('?', `$${params.length}`));
    };
    if (opts.team !== undefined) add('team = ?', opts.team);
    if (opts.server !== undefined) add('server = ?', opts.server);
    if (opts.tool !== undefined) add('tool = ?', opts.tool);
    if (opts.decision !== undefined) add('decision = ?', opts.decision);
    if (opts.since !== undefined) add('ts >= ?', opts.since);
    if (opts.session !== undefined) add(`starts_with(record->>'session', ?)`, opts.session);
    // One snapshot: the rows printed first and the point following starts from agree.
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const heads = await client.query<{ broker: string; max: string }>(
      `SELECT broker, max(seq) AS max FROM ${t} GROUP BY broker`,
    );
    for (const h of heads.rows) seen.set(h.broker, Number(h.max));
    params.push(count);
    const initial = await client.query<{ line: string; record: unknown }>(
      `SELECT line, record FROM ${t} ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
        ORDER BY ts DESC, broker DESC, seq DESC LIMIT $${params.length}`,
      params,
    );
    await client.query('COMMIT');
    const records = initial.rows.map(toRecord).reverse();
    widths = auditTableWidths(records, opts.follow ? FOLLOW_MIN_WIDTH : undefined, opts.columns, true);
    if (opts.json) for (const r of records) write(out, JSON.stringify(r));
    else {
      write(out, formatAuditHeader(widths));
      for (const r of records) write(out, formatAuditRow(r, widths, colour));
    }
  } catch (err) {
    write(errOut, `cannot read ${central.table}: ${pgErrorText(err)}`);
    await client.end().catch(() => undefined);
    return 1;
  }
  if (!opts.follow) {
    await client.end().catch(() => undefined);
    return 0;
  }
  const pollMs = opts.pollMs ?? 1000;
  const signal = opts.signal;
  let broken = false;
  try {
    while (!signal?.aborted) {
      try {
        await sleep(pollMs, undefined, signal ? { signal } : undefined);
      } catch {
        break; // aborted
      }
      try {
        if (broken) {
          client = await pgm.connectPostgres(await connectionUrl(opts.config, central.connection));
          broken = false;
        }
        const fresh = await client.query<{ broker: string; seq: string; line: string; record: unknown }>(
          `SELECT broker, seq, line, record FROM ${t}
            WHERE seq > COALESCE(($1::jsonb ->> broker)::bigint, 0)
            ORDER BY broker, seq LIMIT 5000`,
          [JSON.stringify(Object.fromEntries(seen))],
        );
        for (const row of fresh.rows) {
          seen.set(row.broker, Math.max(seen.get(row.broker) ?? 0, Number(row.seq)));
          const r = toRecord(row);
          if (!matches(r)) continue;
          write(out, opts.json ? JSON.stringify(r) : formatAuditRow(r, widths, colour));
        }
      } catch (err) {
        if (!broken) write(errOut, `# cannot read ${central.table}: ${pgErrorText(err)}; retrying`);
        broken = true;
        await client.end().catch(() => undefined);
      }
    }
  } finally {
    await client.end().catch(() => undefined);
  }
  return 0;
}

export async function auditMigrateMain(ctx: CommandContext): Promise<number> {
  const admin = ctx.values.admin;
  return auditMigrateCommand(await ctx.config(), typeof admin === 'string' ? { admin } : {});
}
