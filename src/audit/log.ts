// The audit log: one JSON record per line, hash-chained, each record durable (written and
// fdatasynced) before its `append` resolves. See SPEC "Audit record".
//
// - Chain: hash = sha256(prev + canonicalJson(record without hash)); the first prev is 64 zeros.
// - Group commit: appends that arrive while a batch is being written and synced wait for the
//   next batch; each batch is one write and one fdatasync, so concurrency does not cost syncs.
// - Fail closed: a batch that cannot be made durable rejects every append in it with
//   AuditUnavailableError, leaves no torn bytes behind and does not advance the chain.
// - Several processes: `airlock serve` and each `airlock stdio` append to the same file. Each
//   batch runs under an inter-process lock (`<file>.lock`, see InterProcessLock) and first adopts
//   what the others appended since — only complete lines that continue the chain, checked as
//   verify checks them; anything else (foreign bytes, a torn line, a shorter or replaced file)
//   fails closed as before. A waiter reserves the next turn, so a busy process cannot starve it.
// - Latency: an uncontended batch makes one threadpool round-trip, the fdatasync. The lock, the
//   stats and the write are synchronous calls (metadata and page-cache copies: microseconds).
import { createHash } from 'node:crypto';
import {
  constants as fsConstants,
  createReadStream,
  fdatasyncSync,
  fstatSync,
  ftruncateSync,
  lstatSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  watch,
  writeSync,
  type FSWatcher,
} from 'node:fs';
import { mkdir, open, realpath, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { AuditSigner, AuditVerifier } from './key.js';

export type AuditPhase = 'request' | 'result' | 'approval';

/** What the pipeline hands in; the log adds v, seq, ts, prev and hash. */
export interface AuditEntry {
  team: string;
  server: string;
  tool: string;
  session: string;
  call: string;
  phase: AuditPhase;
  args?: unknown;
  decision: 'allow' | 'deny';
  rule: string;
  reason?: string;
  outcome?: 'ok' | 'error' | 'denied';
  error?: string;
  durationMs?: number;
  resultBytes?: number;
  /** Servers may add fields (e.g. model, usage). */
  [extra: string]: unknown;
}

export interface AuditRecord extends AuditEntry {
  v: 1;
  seq: number;
  ts: string;
  /** The broker id (records written before broker ids existed have none). */
  broker?: string;
  prev: string;
  hash: string;
}

/** The record could not be made durable; the call it belongs to must be refused. */
export class AuditUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AuditUnavailableError';
  }
}

export const GENESIS_PREV = '0'.repeat(64);
/** Default longest string (in characters) kept whole in a record; longer ones keep a prefix and a digest. */
export const DEFAULT_MAX_AUDIT_STRING = 1024;
const MAX_AUDIT_ARRAY_ITEMS = 256;
/** Keys kept per object; the rest are counted and digested under the key "…". */
const MAX_AUDIT_OBJECT_KEYS = 256;
const MAX_AUDIT_DEPTH = 32;
/**
 * Longest record (its JSON, in bytes) the log writes. A longer one has its largest fields
 * replaced by their size and digest, so a hostile call cannot fill the audit disk (and make
 * every call fail closed) or make each record cost megabytes of hashing.
 */
export const DEFAULT_MAX_AUDIT_RECORD_BYTES = 64 * 1024;
/** The envelope and the fields that identify a call and its decision: never cut from a record. */
export const AUDIT_CALL_FIELDS: readonly string[] = [
  'v',
  'seq',
  'ts',
  'broker',
  'prev',
  'hash',
  'team',
  'server',
  'tool',
  'session',
  'call',
  'phase',
  'decision',
  'rule',
  'outcome',
  'durationMs',
  'resultBytes',
];
const UNCUT_FIELDS: ReadonlySet<string> = new Set(AUDIT_CALL_FIELDS);
const ENVELOPE_KEYS = new Set(['v', 'seq', 'ts', 'broker', 'prev', 'hash']);
const HEX64 = /^[0-9a-f]{64}$/;

// ---------------------------------------------------------------------------------------------
// Canonical JSON and hashing

/**
 * Canonical JSON: object keys sorted by UTF-16 code units at every level, no whitespace, numbers
 * and strings as JSON.stringify writes them (the JCS / RFC 8785 rules for these values). Values
 * are taken as JSON.stringify takes them (toJSON, undefined dropped from objects and null in
 * arrays, non-finite numbers as null), so canonicalJson(x) === canonicalJson(JSON.parse(JSON.stringify(x))).
 */
export function canonicalJson(value: unknown): string {
  const out = canonicalPart(value, '');
  // Top-level undefined has no JSON form; mirror JSON.stringify's array/field behaviour.
  return out ?? 'null';
}

function canonicalPart(value: unknown, key: string): string | undefined {
  if (
    value !== null &&
    typeof value === 'object' &&
    typeof (value as { toJSON?: unknown }).toJSON === 'function'
  ) {
    value = (value as { toJSON(k: string): unknown }).toJSON(key);
  }
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      return Number.isFinite(value) ? JSON.stringify(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      throw new TypeError('canonicalJson: BigInt has no JSON form');
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (value === null) return 'null';
  if (Array.isArray(value)) {
    return '[' + value.map((v, i) => canonicalPart(v, String(i)) ?? 'null').join(',') + ']';
  }
  const obj = value as Record<string, unknown>;
  const parts: string[] = [];
  for (const k of Object.keys(obj).sort()) {
    const v = canonicalPart(obj[k], k);
    if (v !== undefined) parts.push(JSON.stringify(k) + ':' + v);
  }
  return '{' + parts.join(',') + '}';
}

/** sha256 hex over `prev` followed by the canonical JSON of the record (which excludes `hash`). */
export function recordHash(prev: string, recordWithoutHash: object): string {
  return createHash('sha256').update(prev).update(canonicalJson(recordWithoutHash)).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// Truncation of long values

const TRUNCATION_MARKER = /…\[\d+ bytes, sha256:[0-9a-f]{64}\]$/;

/**
 * Deep copy of `value` in which every string (object keys included) longer than `maxString`
 * characters becomes its first `maxString` characters + `…[N bytes, sha256:<hex>]` (N and the
 * digest are of the whole string's UTF-8). Arrays keep their first 256 items and very deep
 * nesting is cut, so a hostile argument cannot make a record unbounded. Idempotent.
 */
export function truncateForAudit(value: unknown, maxString = DEFAULT_MAX_AUDIT_STRING): unknown {
  return truncateWalk(value, maxString, 0);
}

/**
 * The one-pass record build (AuditLog with a redactor): only strings about to be cut are
 * scrubbed during the walk (a secret cut in half would no longer be recognised); the rest is
 * checked once on the record's JSON text.
 */
interface OnePass {
  scrub: (text: string) => string;
  /** Set when a digest was taken over values the text does not show (they were not scrubbed). */
  digestedHidden: boolean;
}

function truncateString(s: string, maxString: number, pass?: OnePass): string {
  if (s.length <= maxString) return s;
  if (pass) {
    s = pass.scrub(s);
    if (s.length <= maxString) return s;
  }
  // Already truncated (a maxString prefix, one less if a surrogate pair was not split, plus our marker).
  const marker = TRUNCATION_MARKER.exec(s);
  if (marker && (marker.index === maxString || marker.index === maxString - 1)) return s;
  let prefix = s.slice(0, maxString);
  // Do not leave half a surrogate pair at the cut.
  const last = prefix.charCodeAt(prefix.length - 1);
  if (last >= 0xd800 && last <= 0xdbff) prefix = prefix.slice(0, -1);
  const bytes = Buffer.from(s, 'utf8');
  const hex = createHash('sha256').update(bytes).digest('hex');
  return `${prefix}…[${bytes.length} bytes, sha256:${hex}]`;
}

function truncateWalk(value: unknown, maxString: number, depth: number, pass?: OnePass): unknown {
  if (typeof value === 'string') return truncateString(value, maxString, pass);
  if (value === null || typeof value !== 'object') return value;
  if (Buffer.isBuffer(value)) return truncateString(value.toString('utf8'), maxString, pass);
  if (depth >= MAX_AUDIT_DEPTH) return '…[nested too deep]';
  if (Array.isArray(value)) {
    const kept = value
      .slice(0, MAX_AUDIT_ARRAY_ITEMS)
      .map((v) => truncateWalk(v, maxString, depth + 1, pass));
    if (value.length > MAX_AUDIT_ARRAY_ITEMS)
      kept.push(`…[${value.length - MAX_AUDIT_ARRAY_ITEMS} more items]`);
    return kept;
  }
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    return truncateWalk((value as { toJSON(): unknown }).toJSON(), maxString, depth, pass);
  }
  const entries = Object.entries(value);
  const kept = entries
    .slice(0, MAX_AUDIT_OBJECT_KEYS)
    .map(([k, v]): [string, unknown] => [
      truncateString(k, maxString, pass),
      truncateWalk(v, maxString, depth + 1, pass),
    ]);
  // (An object cut before ends in its "…" key: idempotent.)
  const cutBefore =
    entries.length === MAX_AUDIT_OBJECT_KEYS + 1 && entries[MAX_AUDIT_OBJECT_KEYS]![0] === '…';
  if (cutBefore) kept.push(entries[MAX_AUDIT_OBJECT_KEYS]!);
  else if (entries.length > MAX_AUDIT_OBJECT_KEYS) {
    if (pass) pass.digestedHidden = true;
    const cut = Object.fromEntries(entries.slice(MAX_AUDIT_OBJECT_KEYS));
    kept.push(['…', `[${entries.length - MAX_AUDIT_OBJECT_KEYS} more keys, ${digestOf(cut)}]`]);
  }
  // fromEntries defines own properties, so a hostile "__proto__" key stays a plain key.
  return Object.fromEntries(kept);
}

/** `N bytes, sha256:<hex>` of the canonical JSON of `value`. */
function digestOf(value: unknown): string {
  const json = canonicalJson(value);
  return `${Buffer.byteLength(json)} bytes, sha256:${createHash('sha256').update(json).digest('hex')}`;
}

/**
 * `body` (a record without its envelope, already truncated) made to fit `maxBytes` of JSON: its
 * largest cuttable fields, biggest first, become `…[cut: N bytes, sha256:<hex>]` (the digest of
 * the field's canonical JSON), until it fits. Linear in the body's size.
 */
export function capRecord(body: Record<string, unknown>, maxBytes: number): Record<string, unknown> {
  let total = Buffer.byteLength(JSON.stringify(body));
  if (total <= maxBytes) return body;
  const sizes = Object.entries(body).map(([k, v]) => ({
    k,
    bytes: Buffer.byteLength(JSON.stringify(v) ?? ''),
  }));
  const out = { ...body };
  for (const { k, bytes } of sizes.filter((s) => !UNCUT_FIELDS.has(s.k)).sort((a, b) => b.bytes - a.bytes)) {
    if (total <= maxBytes) break;
    const marker = `…[cut: ${digestOf(body[k])}]`;
    out[k] = marker;
    total -= bytes - Buffer.byteLength(JSON.stringify(marker));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reading lines

interface Line {
  /** 1-based line number. */
  line: number;
  text: string;
  /** False for a final line with no trailing newline. */
  terminated: boolean;
  /** Byte offset just after this line (and its newline). */
  end: number;
}

/** Streams the lines of `file` from byte `start`, without loading the file. */
async function* readLines(file: string, start = 0, firstLine = 1): AsyncGenerator<Line> {
  const stream = createReadStream(file, { start, highWaterMark: 1 << 20 });
  try {
    yield* splitLines(stream as AsyncIterable<Buffer>, start, firstLine);
  } finally {
    stream.destroy();
  }
}

/** Splits `chunks` (the file's bytes from offset `start`) into lines. */
async function* splitLines(
  chunks: AsyncIterable<Buffer>,
  start: number,
  firstLine: number,
): AsyncGenerator<Line> {
  let pending: Buffer[] = [];
  let offset = start;
  let line = firstLine;
  for await (const chunk of chunks) {
    let from = 0;
    for (let nl = chunk.indexOf(10, from); nl !== -1; nl = chunk.indexOf(10, from)) {
      pending.push(chunk.subarray(from, nl));
      const buf = pending.length === 1 ? pending[0]! : Buffer.concat(pending);
      offset += buf.length + 1;
      yield { line: line++, text: buf.toString('utf8'), terminated: true, end: offset };
      pending = [];
      from = nl + 1;
    }
    if (from < chunk.length) pending.push(chunk.subarray(from));
  }
  if (pending.length > 0) {
    const buf = Buffer.concat(pending);
    yield { line, text: buf.toString('utf8'), terminated: false, end: offset + buf.length };
  }
}

/** Reads bytes [start, end) of an open file in chunks; stops early if the file is shorter. */
async function* readChunks(fh: FileHandle, start: number, end: number): AsyncGenerator<Buffer> {
  for (let pos = start; pos < end;) {
    const buf = Buffer.alloc(Math.min(1 << 20, end - pos));
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) return;
    pos += bytesRead;
    yield buf.subarray(0, bytesRead);
  }
}

/**
 * Yields the lines before byte `end` of an open file backwards (last first), reading in chunks,
 * so the tail of a multi-gigabyte log costs a few reads. Only the first line yielded (the last
 * in the file) can be unterminated: bytes after the last newline, e.g. a write in progress.
 */
async function* readLinesBackward(
  fh: FileHandle,
  end: number,
): AsyncGenerator<{ text: string; start: number; terminated: boolean }> {
  if (end <= 0) return;
  const CHUNK = 64 * 1024;
  let pos = end;
  // The newline that terminates the last line does not start another one.
  const lastByte = Buffer.alloc(1);
  await fh.read(lastByte, 0, 1, end - 1);
  let terminated = lastByte[0] === 10;
  if (terminated) pos -= 1;
  let carry: Buffer = Buffer.alloc(0); // bytes after the earliest newline seen so far
  while (pos > 0) {
    const size = Math.min(CHUNK, pos);
    const buf = Buffer.alloc(size);
    const { bytesRead } = await fh.read(buf, 0, size, pos - size);
    if (bytesRead !== size) throw new Error('file shrank while reading');
    pos -= size;
    let data = carry.length ? Buffer.concat([buf, carry]) : buf;
    for (let nl = data.lastIndexOf(10); nl !== -1; nl = data.lastIndexOf(10)) {
      yield { text: data.subarray(nl + 1).toString('utf8'), start: pos + nl + 1, terminated };
      terminated = true;
      data = data.subarray(0, nl);
    }
    carry = data;
  }
  yield { text: carry.toString('utf8'), start: 0, terminated };
}

/** Counts newlines before byte `end` (only on error paths, to name a line number). */
async function countLines(file: string, end: number): Promise<number> {
  if (end <= 0) return 0;
  let n = 0;
  const stream = createReadStream(file, { start: 0, end: end - 1, highWaterMark: 1 << 20 });
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) n++;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Checking one record

type RecordCheck = { ok: true; record: AuditRecord } | { ok: false; reason: string };

/** Checks one line as the record after (`expectSeq - 1`, `expectPrev`). */
function checkRecordLine(text: string, expectSeq: number, expectPrev: string): RecordCheck {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'not valid JSON' };
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return { ok: false, reason: 'not a JSON object' };
  }
  return checkRecord(parsed as Record<string, unknown>, text, expectSeq, expectPrev);
}

/**
 * Checks the last line of a log on its own (nothing before it is read): a record that verifies
 * against the seq and prev it names.
 */
function checkLastLine(text: string): RecordCheck {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'last line is not valid JSON' };
  }
  const { seq, prev } = (parsed ?? {}) as Record<string, unknown>;
  if (
    typeof parsed !== 'object' ||
    !Number.isInteger(seq) ||
    (seq as number) < 1 ||
    typeof prev !== 'string'
  ) {
    return { ok: false, reason: 'last line is not an audit record' };
  }
  const check = checkRecord(parsed as Record<string, unknown>, text, seq as number, prev);
  return check.ok ? check : { ok: false, reason: `last record does not verify: ${check.reason}` };
}

/** Checks the parsed JSON object `rec` of the line `text` (see checkRecordLine). */
function checkRecord(
  rec: Record<string, unknown>,
  text: string,
  expectSeq: number,
  expectPrev: string,
): RecordCheck {
  if (rec.v !== 1) return { ok: false, reason: `unsupported record version ${JSON.stringify(rec.v)}` };
  if (rec.seq !== expectSeq)
    return { ok: false, reason: `seq is ${JSON.stringify(rec.seq)}, expected ${expectSeq}` };
  if (typeof rec.ts !== 'string') return { ok: false, reason: 'ts is missing' };
  if (rec.prev !== expectPrev) return { ok: false, reason: "prev does not match the previous record's hash" };
  if (typeof rec.hash !== 'string' || !HEX64.test(rec.hash))
    return { ok: false, reason: 'hash is missing or malformed' };
  const { hash, ...rest } = rec;
  if (recordHash(expectPrev, rest) !== hash) return { ok: false, reason: 'hash mismatch (record altered)' };
  // The hash covers the parsed values; this catches byte edits that parse to the same values
  // (escape spelling, whitespace), since Airlock writes exactly JSON.stringify of the record.
  if (JSON.stringify(rec) !== text)
    return { ok: false, reason: 'line differs from the record Airlock wrote (altered)' };
  return { ok: true, record: rec as AuditRecord };
}

// ---------------------------------------------------------------------------------------------
// Verify and read

export type VerifyResult =
  { ok: true; count: number } | { ok: false; count: number; line: number; reason: string; text?: string };

const MAX_REPORTED_TEXT = 2000;

/**
 * Streams `file` and checks every record: JSON, version, seq continuity from 1, prev linkage
 * from 64 zeros, hash, exact form. Reports the first bad line (1-based). `count` is the number
 * of good records before it. A final line without a newline is torn and fails.
 */
export async function verifyAuditFile(file: string): Promise<VerifyResult> {
  let count = 0;
  let prev = GENESIS_PREV;
  for await (const { line, text, terminated } of readLines(file)) {
    const fail = (reason: string): VerifyResult => ({
      ok: false,
      count,
      line,
      reason,
      text: text.length > MAX_REPORTED_TEXT ? text.slice(0, MAX_REPORTED_TEXT) + '…' : text,
    });
    if (!terminated) return fail('torn final line (no trailing newline)');
    const check = checkRecordLine(text, count + 1, prev);
    if (!check.ok) return fail(check.reason);
    count++;
    prev = check.record.hash;
  }
  return { ok: true, count };
}

/** Where an incremental verification stopped: the next byte, line and expected prev. */
export interface VerifyCursor {
  offset: number;
  line: number;
  count: number;
  prev: string;
  /** The last good record's seq and ts (undefined before the first). */
  last?: { seq: number; ts: string; hash: string };
}

export const VERIFY_START: VerifyCursor = { offset: 0, line: 1, count: 0, prev: GENESIS_PREV };

/**
 * verifyAuditFile from a cursor (a viewer re-checks only what was appended since). An
 * unterminated final line is left for the next run (it may be a write in progress).
 */
export async function verifyAuditFrom(
  file: string,
  from: VerifyCursor,
): Promise<
  { ok: true; cursor: VerifyCursor } | { ok: false; cursor: VerifyCursor; line: number; reason: string }
> {
  const cursor = { ...from };
  for await (const { line, text, terminated, end } of readLines(file, from.offset, from.line)) {
    if (!terminated) break;
    const check = checkRecordLine(text, cursor.count + 1, cursor.prev);
    if (!check.ok) return { ok: false, cursor, line, reason: check.reason };
    cursor.count++;
    cursor.prev = check.record.hash;
    cursor.offset = end;
    cursor.line = line + 1;
    cursor.last = { seq: check.record.seq, ts: check.record.ts, hash: check.record.hash };
  }
  return { ok: true, cursor };
}

/** Where a chain is expected to stand: a record's seq and hash. */
export interface ChainHead {
  seq: number;
  hash: string;
}

export interface ChainReport {
  ok: true;
  count: number;
  /** The head the first file continues (seq 0 and 64 zeros for a log from its start). */
  from: ChainHead & { by: 'genesis' | 'given' | 'signed rotation record' };
  last: ChainHead;
  /** Checkpoint and rotation signatures checked against the host key, or not (no key given). */
  signatures: { verified: number; unchecked: number };
  /** Request records without a result: calls interrupted (a crash, a kill) before their result. */
  interrupted: Array<{ seq: number; call: unknown; team: unknown; server: unknown; tool: unknown }>;
}

export interface ChainFailure {
  ok: false;
  count: number;
  file: string;
  line: number;
  reason: string;
  text?: string;
}

/**
 * Checks `files` as one chain, in order (a rotated log's files, oldest first). The first file
 * starts at seq 1, or continues `from`, or starts with a rotation record whose signature by the
 * host key (`verifier`) anchors the head before it. Checkpoint and rotation signatures are
 * checked when `verifier` is given. `expectHead` must be a record of the chain: a log cut off
 * before it fails, which a chain alone cannot show.
 */
export async function verifyAuditChain(
  files: string[],
  opts: { from?: ChainHead; expectHead?: ChainHead; verifier?: AuditVerifier } = {},
): Promise<ChainReport | ChainFailure> {
  let count = 0;
  let seq = opts.from?.seq ?? 0;
  let prev = opts.from?.hash ?? GENESIS_PREV;
  let from: ChainReport['from'] | undefined = opts.from ? { ...opts.from, by: 'given' } : undefined;
  const signatures = { verified: 0, unchecked: 0 };
  const open = new Map<unknown, ChainReport['interrupted'][number]>();
  let headSeen = false;
  let lastFile = files[files.length - 1] ?? '';
  let lastLine = 0;
  for (const file of files) {
    lastFile = file;
    lastLine = 0;
    for await (const { line, text, terminated } of readLines(file)) {
      lastLine = line;
      const fail = (reason: string): ChainFailure => ({
        ok: false,
        count,
        file,
        line,
        reason,
        text: text.length > MAX_REPORTED_TEXT ? text.slice(0, MAX_REPORTED_TEXT) + '…' : text,
      });
      if (!terminated) return fail('torn final line (no trailing newline)');
      if (from === undefined) {
        const start = chainStart(text, opts.verifier);
        if (typeof start === 'string') return fail(start);
        ({ seq, hash: prev } = start);
        from = start;
      }
      const check = checkRecordLine(text, seq + 1, prev);
      if (!check.ok) return fail(check.reason);
      const rec = check.record as AuditRecord & { checkpoint?: SignedHead };
      if (rec.checkpoint !== undefined) {
        const problem = signatureProblem(rec.checkpoint, seq, prev, opts.verifier);
        if (problem) return fail(problem);
        if (opts.verifier) signatures.verified++;
        else signatures.unchecked++;
      }
      if (rec.phase === 'request')
        open.set(rec.call, {
          seq: rec.seq,
          call: rec.call,
          team: rec.team,
          server: rec.server,
          tool: rec.tool,
        });
      else if (rec.phase === 'result') open.delete(rec.call);
      if (opts.expectHead && rec.seq === opts.expectHead.seq) {
        if (rec.hash !== opts.expectHead.hash)
          return fail(
            `record seq ${rec.seq} has hash ${rec.hash}, not the expected head's ${opts.expectHead.hash}`,
          );
        headSeen = true;
      }
      count++;
      seq = rec.seq;
      prev = rec.hash;
    }
  }
  if (opts.expectHead && !headSeen) {
    const where = opts.expectHead.seq <= (from?.seq ?? 0) ? 'starts after' : 'ends before';
    return {
      ok: false,
      count,
      file: lastFile,
      line: lastLine + 1,
      reason:
        `the chain ${where} the expected head (seq ${opts.expectHead.seq}, hash ${opts.expectHead.hash}); it ends at seq ${seq}` +
        (where === 'ends before' ? ': records were removed from the end' : ''),
    };
  }
  return {
    ok: true,
    count,
    from: from ?? { seq: 0, hash: GENESIS_PREV, by: 'genesis' },
    last: { seq, hash: prev },
    signatures,
    interrupted: [...open.values()],
  };
}

/** The head a chain's first line continues, or why it cannot be known. */
function chainStart(text: string, verifier: AuditVerifier | undefined): ChainReport['from'] | string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return 'not valid JSON';
  }
  if (rec?.seq === 1) return { seq: 0, hash: GENESIS_PREV, by: 'genesis' };
  const seq = typeof rec?.seq === 'number' ? rec.seq : NaN;
  const cp = rec?.checkpoint as SignedHead | undefined;
  if (rec?.phase === 'rotate' && verifier && cp && typeof rec.prev === 'string') {
    const problem = signatureProblem(cp, seq - 1, rec.prev, verifier);
    if (problem) return problem;
    return { seq: seq - 1, hash: rec.prev, by: 'signed rotation record' };
  }
  return (
    `the file starts mid-chain (seq ${Number.isFinite(seq) ? seq : '?'}): verify it after the file before it ` +
    `(several --file, oldest first), or give the head it continues with --from SEQ:HASH`
  );
}

/** Why a checkpoint's signed head is wrong for the record after (`seq`, `prev`), or undefined. */
function signatureProblem(
  cp: SignedHead,
  seq: number,
  prev: string,
  verifier: AuditVerifier | undefined,
): string | undefined {
  if (cp === null || typeof cp !== 'object' || cp.seq !== seq || cp.hash !== prev)
    return 'checkpoint does not name the record before it';
  if (!verifier) return undefined;
  if (cp.keyId !== verifier.keyId)
    return `checkpoint is signed by key ${String(cp.keyId)}, not by this host's key ${verifier.keyId}`;
  if (typeof cp.signature !== 'string' || !verifier.verify(cp.seq, cp.hash, cp.signature))
    return 'checkpoint signature does not verify (records before it were rewritten)';
  return undefined;
}

/** The last record's seq and hash of `file` (its last line checked on its own). */
export async function auditFileHead(file: string): Promise<ChainHead> {
  const fh = await open(file, 'r');
  try {
    return await readChainTail(fh, file, (await fh.stat()).size);
  } finally {
    await fh.close();
  }
}

/**
 * `airlock audit rotate`: under the log's inter-process lock, moves `file` to
 * `<file>.<UTC time>` and starts a new `file` whose first record (`phase: "rotate"`) continues
 * the chain and carries the host key's signature over the last head. Running brokers adopt the
 * new file at their next write.
 */
export async function rotateAuditFile(
  file: string,
  signer: AuditSigner,
  opts: { lockTimeoutMs?: number; broker?: string } = {},
): Promise<{ rotated: string; head: ChainHead; first: number }> {
  const abs = path.resolve(file);
  const lock = new InterProcessLock(
    (await realpath(abs)) + '.lock',
    abs,
    opts.lockTimeoutMs ?? DEFAULT_AUDIT_LOCK_TIMEOUT_MS,
    DEFAULT_AUDIT_STALE_LOCK_MS,
  );
  await lock.acquire();
  try {
    const head = await auditFileHead(abs);
    const stamp = new Date()
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d+Z$/, 'Z');
    let rotated = `${abs}.${stamp}`;
    for (
      let n = 1;
      await stat(rotated).then(
        () => true,
        () => false,
      );
      n++
    )
      rotated = `${abs}.${stamp}-${n}`;
    const unhashed = {
      v: 1,
      seq: head.seq + 1,
      ts: new Date().toISOString(),
      ...(opts.broker === undefined ? {} : { broker: opts.broker }),
      phase: 'rotate',
      rotate: { previousFile: path.basename(rotated) },
      checkpoint: signedHead(signer, head.seq, head.hash),
      prev: head.hash,
    };
    const line = JSON.stringify({ ...unhashed, hash: recordHash(head.hash, unhashed) }) + '\n';
    renameSync(abs, rotated);
    const fh = await open(abs, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
    try {
      await fh.writeFile(line);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await syncDir(path.dirname(abs));
    return { rotated, head, first: head.seq + 1 };
  } finally {
    lock.release();
  }
}

/**
 * Yields the records of `file` in order. Does not check the chain (use verifyAuditFile); throws
 * on a complete line that is not a JSON object. An unterminated final line is skipped: it may
 * be a write in progress.
 */
export async function* readAuditRecords(file: string): AsyncIterable<AuditRecord> {
  for await (const { line, text, terminated } of readLines(file)) {
    if (!terminated) return;
    yield parseRecordLine(text, file, line);
  }
}

function parseRecordLine(text: string, file: string, line: number): AuditRecord {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`${file}:${line}: not a JSON record; run \`airlock audit verify --file ${file}\``);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new Error(`${file}:${line}: not a JSON record; run \`airlock audit verify --file ${file}\``);
  }
  return parsed as AuditRecord;
}

/** Internal, for `airlock audit tail`: complete lines from `start`, with their end offsets. */
export { readLines as readAuditLines, readLinesBackward as readAuditLinesBackward };

// ---------------------------------------------------------------------------------------------
// The inter-process lock
//
// `airlock serve` and each `airlock stdio` process append to the same file, so every batch (read
// what others appended, chain, write, sync) runs under a lock shared by all Airlock processes.
// Node has no flock; the lock is a symlink at `<file>.lock` whose target names the owner
// ("airlock:<pid namespace>:<pid>:<ms since epoch>:<nonce>"). symlink() is atomic and fails with
// EEXIST if the lock exists, and the owner is written in the same step (an O_EXCL file would be
// empty until a second write); a short target lives in the inode, so taking the lock needs no
// data block and works on a full disk. All lock calls are synchronous: they are metadata-only
// and cost microseconds; only waiting for another process's lock yields to the event loop.

/** How long a batch waits for another process's lock before failing closed. */
export const DEFAULT_AUDIT_LOCK_TIMEOUT_MS = 5000;
/** A lock older than this is broken even if its owner seems alive (pid reuse, a hung owner). */
export const DEFAULT_AUDIT_STALE_LOCK_MS = 30_000;
const LOCK_FIRST_BACKOFF_MS = 0.2;
const LOCK_MAX_BACKOFF_MS = 5;
/** Longest we keep the lock across back-to-back batches (well below the stale age). */
const LOCK_HOLD_ACROSS_BATCHES_MS = 1000;
/**
 * What the broker passes as `idleHoldMs`: a call's request and result records, and a session's
 * next call, often come sooner, and taking and dropping the lock costs a lstat, a symlink, a
 * readlink and an unlink per batch (and on ext4, journal work that the next fdatasync waits for).
 */
export const LOCK_IDLE_HOLD_MS = 1;
/** What the broker passes as `idleHoldWatchedMs`. */
export const LOCK_IDLE_HOLD_WATCHED_MS = 100;
/** `syncInline` stops once an fdatasync takes this long: past it, blocking the loop costs others more. */
const INLINE_SYNC_MAX_MS = 2;
const LOCK_TARGET = /^airlock:(\w*):(\d+):(\d+):[0-9a-z]+$/;

/** Pids are only comparable within one pid namespace (a container has its own). */
const PID_NAMESPACE = (() => {
  try {
    return /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'))?.[1] ?? '';
  } catch {
    return '';
  }
})();
/** Lock targets this process holds now: a lock naming our pid that is not here is left from before. */
const locksHeldHere = new Map<string, string>(); // target → path
let releaseOnExit = false;

/** Records that we hold `target` at `at`; a process that exits still holding it removes it. */
function holdHere(target: string, at: string): void {
  locksHeldHere.set(target, at);
  if (releaseOnExit) return;
  releaseOnExit = true;
  // A log may keep its lock briefly after a batch (idleHoldMs), and a command may end
  // without closing its log: the lock must not outlive us (unlinks are synchronous).
  process.once('exit', () => {
    for (const [target, at] of locksHeldHere) removeIfTarget(at, target);
  });
}
let lockNonce = 0;

interface LockOwner {
  namespace: string;
  pid: number;
  since: number;
}

function parseLockTarget(target: string): LockOwner | null {
  const m = LOCK_TARGET.exec(target);
  return m ? { namespace: m[1]!, pid: Number(m[2]), since: Number(m[3]) } : null;
}

function pidIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH'; // EPERM: alive, someone else's
  }
}

/** Sub-millisecond waits yield to the event loop (setTimeout cannot wait less than 1 ms). */
function pause(ms: number): Promise<void> {
  if (ms >= 1) return new Promise((resolve) => setTimeout(resolve, ms));
  const until = performance.now() + ms;
  return new Promise((resolve) => {
    const tick = (): void => {
      if (performance.now() >= until) resolve();
      else setImmediate(tick);
    };
    setImmediate(tick);
  });
}

export class InterProcessLock {
  /** Our symlink target while we hold the lock. */
  private target: string | null = null;
  /** Our target at `<lock>.next` while we wait with the next turn reserved. */
  private reservation: string | null = null;
  /** The last lock (or reservation) seen in our way, for the timeout message. */
  private lastSeen = { path: '', target: '' };
  private readonly nextPath: string;

  constructor(
    readonly path: string,
    /** The audit file, named in errors. */
    private readonly file: string,
    private readonly timeoutMs: number,
    private readonly staleMs: number,
  ) {
    this.nextPath = path + '.next';
  }

  get held(): boolean {
    return this.target !== null;
  }

  /**
   * Takes the lock, waiting with backoff; throws AuditUnavailableError past the timeout. A waiter
   * reserves the next turn (`<lock>.next`) and nobody else takes the lock while it is reserved:
   * otherwise a busy process re-takes the lock microseconds after releasing it and a polling
   * waiter starves until it times out.
   */
  async acquire(): Promise<void> {
    if (this.tryAcquire()) return;
    const deadline = performance.now() + this.timeoutMs;
    try {
      for (let backoff = LOCK_FIRST_BACKOFF_MS; ; backoff = Math.min(backoff * 2, LOCK_MAX_BACKOFF_MS)) {
        this.reserve();
        await pause(Math.min(backoff, Math.max(0, deadline - performance.now())));
        if (this.tryAcquire()) return;
        if (performance.now() >= deadline) throw this.timeoutError();
      }
    } finally {
      this.dropReservation(); // taken (then already gone), or given up: free the turn
    }
  }

  private timeoutError(): AuditUnavailableError {
    const { path: where, target } = this.lastSeen;
    const owner = parseLockTarget(target);
    const by = owner
      ? `pid ${owner.pid}, held for ${Date.now() - owner.since} ms`
      : target === ''
        ? 'something that is not an Airlock lock; remove it'
        : JSON.stringify(target);
    return new AuditUnavailableError(
      `audit log unavailable: ${this.file} is locked by another Airlock process (${where}: ${by}); ` +
        `gave up after ${this.timeoutMs} ms`,
    );
  }

  private newTarget(): string {
    return `airlock:${PID_NAMESPACE}:${process.pid}:${Date.now()}:${(++lockNonce).toString(36)}`;
  }

  /** One attempt; breaks a stale lock (or reservation) and tries once more. */
  private tryAcquire(): boolean {
    const next = this.readTarget(this.nextPath);
    if (next !== null && next !== this.reservation) {
      // Someone else has the next turn. Its owner polls every few ms and gives up after its
      // timeout, so a reservation much older than that was abandoned.
      this.lastSeen = { path: this.nextPath, target: next };
      if (!this.staleness(next, this.timeoutMs + 1000) || !this.breakStale(this.nextPath, next)) return false;
    }
    for (let attempt = 0; attempt < 2; attempt++) {
      const target = this.newTarget();
      try {
        symlinkSync(target, this.path);
        this.target = target;
        holdHere(target, this.path);
        this.dropReservation();
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw new AuditUnavailableError(
            `audit log unavailable: ${describeError(err)} creating the lock ${this.path}`,
            { cause: err },
          );
        }
      }
      const seen = this.readTarget(this.path);
      if (seen === null) continue; // released meanwhile
      this.lastSeen = { path: this.path, target: seen };
      if (!this.staleness(seen, this.staleMs) || !this.breakStale(this.path, seen)) return false;
    }
    return false;
  }

  private reserve(): void {
    if (this.reservation !== null) return;
    const target = this.newTarget();
    try {
      symlinkSync(target, this.nextPath);
      this.reservation = target;
      holdHere(target, this.nextPath);
    } catch {
      // Another waiter has the next turn (or it cannot be created): keep polling.
    }
  }

  private dropReservation(): void {
    const reservation = this.reservation;
    if (reservation === null) return;
    this.reservation = null;
    locksHeldHere.delete(reservation);
    removeIfTarget(this.nextPath, reservation);
  }

  /**
   * Calls `onReserved` when something appears at `<lock>.next` (a waiter reserving the next turn),
   * through a watch on the lock's folder; undefined when the folder cannot be watched.
   */
  watchReservations(onReserved: () => void, onError: () => void): FSWatcher | undefined {
    const name = path.basename(this.nextPath);
    try {
      const watcher = watch(path.dirname(this.nextPath), { persistent: false }, (_event, filename) => {
        if (filename === name) onReserved();
      });
      watcher.on('error', () => {
        watcher.close();
        onError();
      });
      return watcher;
    } catch {
      return undefined; // e.g. out of inotify watches: holds stay short
    }
  }

  /** True while another process has reserved the next turn (we then let go between batches). */
  othersWaiting(): boolean {
    const next = this.readTarget(this.nextPath);
    return next !== null && next !== this.reservation;
  }

  /** How long we have held the lock, in ms (0 when not held). */
  heldForMs(): number {
    return this.target === null ? 0 : Date.now() - (parseLockTarget(this.target)?.since ?? 0);
  }

  /** The symlink target at `at`; null if nothing is there; '' for something that is not a symlink. */
  private readTarget(at: string): string | null {
    // Nothing there is the usual case (no waiter): an lstat that returns undefined costs far less
    // than a readlink that throws ENOENT.
    if (!lstatSync(at, { throwIfNoEntry: false })) return null;
    try {
      return readlinkSync(at);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return null;
      if (code === 'EINVAL') return ''; // not an Airlock lock: never judged stale, never removed
      throw new AuditUnavailableError(`audit log unavailable: ${describeError(err)} reading the lock ${at}`, {
        cause: err,
      });
    }
  }

  /** Why the lock `target` is abandoned, or null while its owner may still be working. */
  private staleness(target: string, maxAgeMs: number): string | null {
    const owner = parseLockTarget(target);
    if (!owner) return null;
    if (owner.namespace === PID_NAMESPACE) {
      if (owner.pid === process.pid && !locksHeldHere.has(target))
        return 'left by an earlier process with our pid';
      if (owner.pid !== process.pid && !pidIsAlive(owner.pid)) return `owner pid ${owner.pid} is dead`;
    }
    if (Date.now() - owner.since > maxAgeMs) return `older than ${maxAgeMs} ms`;
    return null;
  }

  /**
   * Removes the stale lock `seen` at `at`; true if it is gone. It is moved aside first and checked:
   * another waiter may have broken it and a live process taken the lock between our readlink and
   * rename. Such a lock is put back.
   */
  private breakStale(at: string, seen: string): boolean {
    const aside = `${at}.stale-${process.pid}-${(++lockNonce).toString(36)}`;
    try {
      renameSync(at, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
      throw new AuditUnavailableError(
        `audit log unavailable: ${describeError(err)} breaking the stale lock ${at}`,
        { cause: err },
      );
    }
    try {
      const moved = readlinkSync(aside);
      if (moved === seen) return true;
      try {
        symlinkSync(moved, at);
      } catch {
        // Taken again already; nothing better to do than leave the newer lock.
      }
      return false;
    } finally {
      rmSync(aside, { force: true });
    }
  }

  /** Releases the lock if it is still ours (it may have been broken as stale). Never throws. */
  release(): void {
    const target = this.target;
    if (target === null) return;
    this.target = null;
    locksHeldHere.delete(target);
    removeIfTarget(this.path, target);
  }
}

/** Unlinks the symlink at `at` if it still points at `target`. Never throws. */
function removeIfTarget(at: string, target: string): void {
  try {
    if (readlinkSync(at) === target) unlinkSync(at);
  } catch {
    // Gone already (broken as stale, or the folder was removed).
  }
}

// ---------------------------------------------------------------------------------------------
// The writer

export interface AuditLogOptions {
  /** Removes secret values from a record before it is hashed and written (the broker's redactor). */
  scrub?: (record: AuditEntry) => AuditEntry;
  /**
   * The broker's redactor, for the one-pass build: the record is truncated once (strings about to
   * be cut are scrubbed first) and its JSON text checked once with `contains`; only a record that
   * still shows a secret (or digests values it does not show) takes the full scrub path.
   */
  redactor?: { scrub(text: string): string; contains(text: string): boolean; scrubDeep<T>(value: T): T };
  /** Longest string kept whole (after scrubbing); default 1024. */
  maxString?: number;
  /** Longest record JSON in bytes; larger fields are cut to a digest (default 64 KiB). */
  maxRecordBytes?: number;
  /** Most records per write+sync; default 4096. 1 gives one fsync per record (benchmark baseline). */
  maxBatch?: number;
  /** Called after each durable batch with its record count (tests, metrics). */
  onSync?: (records: number) => void;
  /** Called after each batch's fdatasync with how long it took, in seconds (telemetry). */
  onFsync?: (seconds: number) => void;
  /** Tests only: runs after a batch is written and before it is synced, to inject failures there. */
  afterWrite?: () => Promise<void> | void;
  /** How long a batch waits for another Airlock process's lock on the file; default 5000 ms. */
  lockTimeoutMs?: number;
  /** Age after which a lock is broken even if its owner seems alive; default 30 000 ms. */
  staleLockMs?: number;
  /**
   * Keeps the lock this long after a good batch when no other process has asked for it (default
   * 0: released after every batch). A process that wants it meanwhile reserves the next turn and
   * gets it when our next batch ends, or after this. Only for a process whose event loop never
   * blocks (the broker): one blocked in a synchronous call would keep others waiting meanwhile.
   */
  idleHoldMs?: number;
  /**
   * With `idleHoldMs`: how long the idle hold may last while the lock's folder is watched for a
   * waiter's reservation, which then gets the lock as soon as it asks (default `idleHoldMs`). A
   * call's two records are often further apart than 1 ms (the upstream's time, a git command's),
   * and each take of the lock is a symlink and an unlink that on ext4 wait for the journal.
   */
  idleHoldWatchedMs?: number;
  /**
   * Runs a batch's fdatasync on the calling thread, not the threadpool, when `when()` says nothing
   * else in the process needs the event loop meanwhile (the broker: at most one call in flight).
   * A lone call then skips two thread hand-offs and an event-loop wake-up per record (on the
   * 2-core CI machine ~0.2 ms a record). Only while the last fdatasync took under `maxMs`
   * (default 2 ms; the first batch always uses the threadpool): a slow disk never blocks the loop
   * for long, and a disk that turns slow goes back to the threadpool after one batch.
   */
  syncInline?: { when: () => boolean; maxMs?: number };
  /**
   * Signed checkpoint records: after `everyRecords` records or `everyMs` since the last one
   * (whichever comes first, checked as batches are written), a `phase: "checkpoint"` record
   * carries the host key's signature over the head before it.
   */
  checkpoints?: { signer: AuditSigner; everyRecords?: number; everyMs?: number };
  /** The broker id written into every record (after `ts`, so the hash covers it). */
  broker?: string;
}

export const DEFAULT_CHECKPOINT_RECORDS = 1000;
export const DEFAULT_CHECKPOINT_MS = 60 * 60_000;

/** The signed head a checkpoint or rotation record carries: the record before it. */
export interface SignedHead {
  seq: number;
  hash: string;
  keyId: string;
  signature: string;
}

function signedHead(signer: AuditSigner, seq: number, hash: string): SignedHead {
  return { seq, hash, keyId: signer.keyId, signature: signer.sign(seq, hash) };
}

interface ReadyBody {
  body: Record<string, unknown>;
  /** JSON.stringify(body). */
  text: string;
}

interface Pending {
  entry: AuditEntry;
  ts: string;
  resolve: (record: AuditRecord) => void;
  reject: (err: Error) => void;
}

interface ChainTail {
  seq: number;
  hash: string;
}

/** "ENOSPC (no space left on device)" for a system error, else the message. */
function describeError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (!(e instanceof Error)) return String(err);
  if (!e.code) return e.message;
  const text = /^[A-Z0-9_]+: ([^,]+)/.exec(e.message)?.[1];
  return text ? `${e.code} (${text})` : e.code;
}

// Read-write: the tail and other processes' records are read through the descriptor that appends.
const OPEN_FLAGS = fsConstants.O_RDWR | fsConstants.O_APPEND | fsConstants.O_CREAT;

export class AuditLog {
  private queue: Pending[] = [];
  private draining: Promise<void> | null = null;
  private closed = false;
  /**
   * Set when a failed batch left bytes up to this file length that could not be cut off again.
   * The lock stays held meanwhile (other processes would take the bytes for records), and the cut
   * is retried before the next write.
   */
  private tornEnd: number | null = null;
  /** Set when the file was deleted or replaced; the next batch looks for a file that continues the chain. */
  private lostFile: string | null = null;
  /** Releases the lock kept after a batch once no batch has come for `idleHoldMs`. */
  private idleRelease: NodeJS.Timeout | undefined;
  /** Sees another process reserve the next turn while we hold the lock idle (idleHoldWatchedMs). */
  private reservations: FSWatcher | undefined;
  /** How long the last fdatasync took (ms); none yet counts as slow (see `syncInline`). */
  private lastSyncMs = Infinity;
  /** Where the last checkpoint (written by this process) stands. */
  private checkpointSeq = 0;
  private checkpointAt = Date.now();

  private constructor(
    readonly file: string,
    private fh: FileHandle,
    /** Length of the well-formed content as this process last saw it (ours and other Airlock processes'). */
    private size: number,
    private tail: ChainTail,
    private readonly lock: InterProcessLock,
    private readonly opts: AuditLogOptions,
  ) {
    this.checkpointSeq = tail.seq;
    if ((opts.idleHoldMs ?? 0) > 0 && (opts.idleHoldWatchedMs ?? 0) > opts.idleHoldMs!)
      this.reservations = lock.watchReservations(
        () => this.letWaiterIn(),
        () => (this.reservations = undefined), // holds stay short from now on
      );
  }

  /** A waiter reserved the next turn: an idle hold ends now, a batch in progress lets go at its end. */
  private letWaiterIn(): void {
    if (this.idleRelease === undefined || this.draining || this.tornEnd !== null) return;
    if (!this.lock.othersWaiting()) return;
    this.stopIdleHold();
    this.lock.release();
  }

  /**
   * Opens (creating, mode 0600, folder 0700) the log at `file` and continues its chain from the
   * last record. Refuses a file whose last line is torn or does not verify. Other Airlock
   * processes may append to the same file: each batch takes the lock `<file>.lock`.
   */
  static async open(file: string, opts: AuditLogOptions = {}): Promise<AuditLog> {
    const abs = path.resolve(file);
    try {
      await ensureDir(path.dirname(abs));
    } catch (err) {
      throw new AuditUnavailableError(
        `audit log unavailable: ${describeError(err)} creating ${path.dirname(abs)}`,
        {
          cause: err,
        },
      );
    }
    const existed = await stat(abs).then(
      () => true,
      () => false,
    );
    let fh: FileHandle;
    try {
      fh = await open(abs, OPEN_FLAGS, 0o600);
    } catch (err) {
      throw new AuditUnavailableError(`audit log unavailable: ${describeError(err)} opening ${abs}`, {
        cause: err,
      });
    }
    let lock: InterProcessLock | null = null;
    try {
      if (!existed) await syncDir(path.dirname(abs));
      const st = await fh.stat();
      if (!st.isFile())
        throw new AuditUnavailableError(`audit log unavailable: ${abs} is not a regular file`);
      // Every path to the file shares one lock, whichever spelling each process was given.
      lock = new InterProcessLock(
        (await realpath(abs)) + '.lock',
        abs,
        opts.lockTimeoutMs ?? DEFAULT_AUDIT_LOCK_TIMEOUT_MS,
        opts.staleLockMs ?? DEFAULT_AUDIT_STALE_LOCK_MS,
      );
      // Under the lock: another process's batch is never seen half-written.
      await lock.acquire();
      let size = fstatSync(fh.fd).size;
      const setAside = await setAsideTornTail(fh, abs, size);
      if (setAside) size = setAside.size;
      const tail = await readChainTail(fh, abs, size);
      const log = new AuditLog(abs, fh, size, tail, lock, opts);
      if (setAside) log.tornTailSetAside = { file: setAside.file, bytes: setAside.bytes };
      return log;
    } catch (err) {
      await fh.close().catch(() => {});
      if (err instanceof AuditUnavailableError) throw err;
      throw new AuditUnavailableError(`audit log unavailable: ${describeError(err)} reading ${abs}`, {
        cause: err,
      });
    } finally {
      lock?.release();
    }
  }

  /**
   * Set when opening found the last line half-written (a crash cut the write short) and moved it
   * to a file of its own: the caller logs it, so nothing is dropped silently.
   */
  tornTailSetAside?: { file: string; bytes: number };

  /** The last durable record's seq (0 for an empty log), as of this process's last batch. */
  get seq(): number {
    return this.tail.seq;
  }

  /**
   * Appends a record for `entry`; resolves with the record once it is written and fdatasynced.
   * Rejects with AuditUnavailableError if it could not be made durable (the chain does not
   * advance), or with TypeError if the entry has no JSON form.
   */
  append(entry: AuditEntry): Promise<AuditRecord> {
    if (this.closed)
      return Promise.reject(new AuditUnavailableError(`audit log unavailable: ${this.file} is closed`));
    const ts = new Date().toISOString();
    return new Promise<AuditRecord>((resolve, reject) => {
      this.queue.push({ entry, ts, resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    if (this.draining) return;
    this.draining = this.drain().finally(() => {
      this.draining = null;
      // An append that came after the drain loop's last look at the queue, but before this.
      if (this.queue.length > 0) this.kick();
    });
  }

  /** Waits for pending appends, then closes the file. Later appends reject. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.draining) await this.draining;
    if (this.tornEnd !== null) await this.cutBack(this.tornEnd); // last chance before letting go
    clearTimeout(this.idleRelease);
    this.reservations?.close();
    this.lock.release();
    await this.fh.close().catch(() => {});
  }

  private async drain(): Promise<void> {
    // Let appends made in the same tick join the first batch.
    await Promise.resolve();
    const maxBatch = Math.max(1, this.opts.maxBatch ?? 4096);
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, maxBatch);
      try {
        await this.commit(batch);
      } catch (err) {
        // commit settles every promise itself; this is only a guard against a bug leaving one hanging.
        const error = new AuditUnavailableError(
          `audit log unavailable: ${describeError(err)} in ${this.file}`,
        );
        for (const p of batch) p.reject(error);
      }
    }
    // A batch may have kept the lock for records that then failed to build.
    if (this.tornEnd === null && this.idleRelease === undefined) this.lock.release(); // unless held while idle
  }

  /** Keeps the lock after a good batch, until the next batch or `idleHoldMs` without one. */
  private holdWhileIdle(): void {
    if (this.idleRelease) {
      this.idleRelease.refresh();
      return;
    }
    this.idleRelease = setTimeout(() => {
      this.idleRelease = undefined;
      // A batch in progress releases (or keeps) the lock itself when it ends.
      if (!this.draining && this.tornEnd === null) this.lock.release();
    }, this.idleHoldFor());
    this.idleRelease.unref(); // an idle log never keeps the process alive
  }

  /** A watched hold may last longer: a waiter is let in as it asks (see letWaiterIn). */
  private idleHoldFor(): number {
    return this.reservations ? this.opts.idleHoldWatchedMs! : this.opts.idleHoldMs!;
  }

  private stopIdleHold(): void {
    clearTimeout(this.idleRelease);
    this.idleRelease = undefined;
  }

  /** Builds the record body (no envelope), scrubbed then truncated, and its JSON text. */
  private body(entry: AuditEntry): ReadyBody {
    const maxString = this.opts.maxString ?? DEFAULT_MAX_AUDIT_STRING;
    const maxBytes = this.opts.maxRecordBytes ?? DEFAULT_MAX_AUDIT_RECORD_BYTES;
    const redactor = this.opts.redactor;
    if (redactor) {
      const pass: OnePass = { scrub: (text) => redactor.scrub(text), digestedHidden: false };
      const truncated = truncateWalk(entry, maxString, 0, pass) as Record<string, unknown>;
      for (const k of ENVELOPE_KEYS) delete truncated[k];
      // The final safety check: what is written shows no secret, and no digest covers unscrubbed
      // values. (The hash is the same either way: canonicalJson takes values as JSON.stringify does.)
      // A record over maxBytes takes the full path below, which caps it.
      const text = JSON.stringify(truncated);
      if (Buffer.byteLength(text) <= maxBytes && !pass.digestedHidden && !redactor.contains(text))
        return { body: truncated, text };
    }
    const scrub = this.opts.scrub ?? (redactor ? (e: AuditEntry) => redactor.scrubDeep(e) : undefined);
    const scrubbed = scrub ? scrub(entry) : entry;
    // Scrub before truncating: a secret cut in half would no longer be recognised.
    const truncated = truncateForAudit(scrubbed, maxString) as Record<string, unknown>;
    // Hash exactly what a reader will parse back.
    const normalized = JSON.parse(JSON.stringify(truncated)) as Record<string, unknown>;
    for (const k of ENVELOPE_KEYS) delete normalized[k];
    const body = capRecord(normalized, maxBytes);
    return { body, text: JSON.stringify(body) };
  }

  private async commit(batch: Pending[]): Promise<void> {
    // Bodies are built before taking the lock; only chaining and I/O happen under it.
    const ready: { p: Pending; body: ReadyBody }[] = [];
    for (const p of batch) {
      try {
        ready.push({ p, body: this.body(p.entry) });
      } catch (err) {
        p.reject(err instanceof Error ? err : new TypeError(String(err)));
      }
    }
    if (ready.length === 0) return;
    let records: AuditRecord[];
    try {
      records = await this.commitLocked(ready);
    } catch (err) {
      const error =
        err instanceof AuditUnavailableError
          ? err
          : new AuditUnavailableError(`audit log unavailable: ${describeError(err)} writing ${this.file}`, {
              cause: err,
            });
      for (const { p } of ready) p.reject(error);
      return;
    }
    this.opts.onSync?.(records.length);
    ready.forEach(({ p }, i) => p.resolve(records[i]!));
  }

  /**
   * Under the lock: catches up with what other Airlock processes appended, chains the batch in
   * arrival order from the last record in the file, writes and syncs it. Every step but the
   * fdatasync is a synchronous metadata call or page-cache write, so an uncontended batch costs
   * one threadpool round-trip.
   */
  private async commitLocked(ready: { p: Pending; body: ReadyBody }[]): Promise<AuditRecord[]> {
    if (!this.lock.held) {
      try {
        await this.lock.acquire();
      } catch (err) {
        // A missing folder is better reported as what it is.
        if (this.fileStatus().status === 'deleted') this.throwDeleted();
        throw err;
      }
    }
    let written = false;
    try {
      await this.catchUp();
      let { seq, hash: prev } = this.tail;
      const records: AuditRecord[] = [];
      const lines: string[] = [];
      const broker = this.opts.broker;
      const brokerField = broker === undefined ? {} : { broker };
      const brokerText = broker === undefined ? '' : `"broker":${JSON.stringify(broker)},`;
      for (const { p, body } of ready) {
        const unhashed = { v: 1, seq: seq + 1, ts: p.ts, ...brokerField, ...body.body, prev };
        const hash = recordHash(prev, unhashed);
        const record = { ...unhashed, hash } as AuditRecord;
        // JSON.stringify(record), from the body's text (same key order: envelope keys are not in it).
        const fields = body.text.length > 2 ? body.text.slice(1, -1) + ',' : '';
        lines.push(
          `{"v":1,"seq":${seq + 1},"ts":${JSON.stringify(p.ts)},${brokerText}${fields}"prev":"${prev}","hash":"${hash}"}\n`,
        );
        records.push(record);
        seq += 1;
        prev = hash;
      }
      const cp = this.opts.checkpoints;
      const due =
        cp &&
        (seq - this.checkpointSeq >= (cp.everyRecords ?? DEFAULT_CHECKPOINT_RECORDS) ||
          Date.now() - this.checkpointAt >= (cp.everyMs ?? DEFAULT_CHECKPOINT_MS));
      if (due) {
        const unhashed = {
          v: 1,
          seq: seq + 1,
          ts: new Date().toISOString(),
          ...brokerField,
          phase: 'checkpoint',
          checkpoint: signedHead(cp.signer, seq, prev),
          prev,
        };
        const hash = recordHash(prev, unhashed);
        lines.push(JSON.stringify({ ...unhashed, hash }) + '\n');
        seq += 1;
        prev = hash;
      }
      await this.writeDurably(Buffer.from(lines.join(''), 'utf8'));
      this.tail = { seq, hash: prev };
      if (due) {
        this.checkpointSeq = seq;
        this.checkpointAt = Date.now();
      }
      written = true;
      return records;
    } finally {
      // Bytes that could not be cut would be taken for records by the next process: keep them out.
      // After a good batch the lock is kept for the next one (queued already, or coming within
      // idleHoldMs), unless another process waits for its turn or we have held it long
      // enough that it could be judged stale. A failed batch lets go at once.
      const torn = this.tornEnd !== null;
      const idleHold = (this.opts.idleHoldMs ?? 0) > 0;
      const keep =
        torn ||
        (written &&
          !this.closed &&
          (idleHold || this.queue.length > 0) &&
          this.lock.heldForMs() < LOCK_HOLD_ACROSS_BATCHES_MS &&
          !this.lock.othersWaiting());
      if (!keep) {
        this.stopIdleHold();
        this.lock.release();
      } else if (!torn && idleHold) this.holdWhileIdle();
    }
  }

  /**
   * Under the lock: makes `size` and `tail` describe the end of the file. Follows a restored
   * file, cuts what a failed batch of ours left, and adopts records other Airlock processes
   * appended — only if they are complete lines that continue the chain. Anything else (a
   * shorter file, foreign bytes, a torn line, a broken link) fails closed.
   */
  private async catchUp(): Promise<void> {
    const { status, size: sizeSeen } = this.fileStatus();
    if (status === 'same') this.lostFile = null;
    else {
      this.lostFile ??= status;
      if (status === 'deleted') this.throwDeleted();
      await this.adoptRestoredFile();
    }
    const torn = this.tornEnd !== null;
    if (torn) await this.cut(this.tornEnd!);
    // The usual batch (same file, nothing to cut): the size fileStatus read is still the size.
    const size = status === 'same' && !torn ? sizeSeen : fstatSync(this.fh.fd).size;
    if (size === this.size) return;
    const changed = `${this.file} changed size outside Airlock (${this.size} → ${size} bytes)`;
    const verifyHint = `run \`airlock audit verify --file ${this.file}\``;
    if (size < this.size) throw new AuditUnavailableError(`audit log unavailable: ${changed}; ${verifyHint}`);
    const more = await readContinuation(this.fh, this.size, size, this.tail);
    if (!more.ok) {
      const line = (await countLines(this.file, more.start).catch(() => NaN)) + 1;
      throw new AuditUnavailableError(
        `audit log unavailable: ${changed}; line ${line} does not continue the chain (${more.reason}); ${verifyHint}`,
      );
    }
    this.size = size;
    this.tail = more.tail;
  }

  private throwDeleted(): never {
    this.lostFile ??= 'deleted';
    throw new AuditUnavailableError(
      `audit log unavailable: ${this.file} was ${this.lostFile} while open (last record seq ${this.tail.seq}); ` +
        `restore it, or restart Airlock to begin a new log`,
    );
  }

  /** Under the lock: appends `data` and syncs it, or throws leaving the file at its last good length. */
  private async writeDurably(data: Buffer): Promise<void> {
    const fd = this.fh.fd;
    let written = 0;
    try {
      while (written < data.length) {
        const bytesWritten = writeSync(fd, data, written, data.length - written);
        if (bytesWritten <= 0) throw new Error('write made no progress');
        written += bytesWritten;
      }
      if (this.opts.afterWrite) await this.opts.afterWrite();
      const inline = this.opts.syncInline;
      const syncStarted = performance.now();
      if (inline && this.lastSyncMs < (inline.maxMs ?? INLINE_SYNC_MAX_MS) && inline.when())
        fdatasyncSync(fd);
      else await this.fh.datasync(); // the batch's one threadpool round-trip
      this.lastSyncMs = performance.now() - syncStarted;
      this.opts.onFsync?.(this.lastSyncMs / 1000);
      // Both checks from one pair of stats, after the sync (the batch is not answered before them).
      // The size holds unless a writer ignored (or broke, as stale) the lock: then the chain may
      // have forked.
      const { status, size: end } = this.fileStatus();
      if (end !== this.size + data.length) {
        throw new AuditUnavailableError(
          `audit log unavailable: ${this.file} was appended to by another writer during this write ` +
            `(${this.size} + ${data.length} → ${end} bytes); run \`airlock audit verify --file ${this.file}\``,
        );
      }
      // A file deleted or replaced during the write took the records with it (never adopt here:
      // the batch is in the old inode, not in whatever is at the path now).
      if (status !== 'same') {
        this.lostFile = status;
        throw new AuditUnavailableError(`audit log unavailable: ${this.file} was ${status} during a write`);
      }
    } catch (err) {
      await this.cutBack(this.size + written);
      throw err;
    }
    this.size += data.length;
  }

  /** Removes what a failed batch left past the last good length; on failure, retried later. */
  private async cutBack(end: number): Promise<void> {
    try {
      await this.cut(end);
    } catch {
      this.tornEnd = end;
    }
  }

  /**
   * Truncates the file back to `size` if it ends exactly where our failed batch ended; if it is
   * longer, another writer has appended after those bytes and cutting would take its records
   * too, so they are left for catchUp to judge.
   */
  private async cut(end: number): Promise<void> {
    const now = fstatSync(this.fh.fd).size;
    if (now === end && end > this.size) {
      ftruncateSync(this.fh.fd, this.size);
      await this.fh.datasync();
    }
    this.tornEnd = null;
  }

  /**
   * Whether the open file is still the one at the path, and the open file's size (synchronous:
   * two stats).
   */
  private fileStatus(): { status: 'same' | 'deleted' | 'replaced'; size: number } {
    const own = fstatSync(this.fh.fd);
    const onPath = statSync(this.file, { throwIfNoEntry: false });
    if (!onPath) return { status: 'deleted', size: own.size };
    if (own.nlink > 0 && onPath.dev === own.dev && onPath.ino === own.ino)
      return { status: 'same', size: own.size };
    return { status: 'replaced', size: own.size };
  }

  /**
   * Switches to the file now at the path if it continues this log's chain: its last record is
   * this log's last record, or the record ending at this log's length is (other Airlock
   * processes have appended since; catchUp checks what they added).
   */
  private async adoptRestoredFile(): Promise<void> {
    let fh: FileHandle | null = null;
    try {
      fh = await open(this.file, fsConstants.O_RDWR | fsConstants.O_APPEND);
      const st = await fh.stat();
      if (!st.isFile()) throw new Error('not a regular file');
      let size: number;
      // Records other processes appended to the old file before it went (e.g. rotated) count too.
      const oldSize = fstatSync(this.fh.fd).size;
      if (oldSize > this.size) {
        const more = await readContinuation(this.fh, this.size, oldSize, this.tail);
        if (more.ok) {
          this.tail = more.tail;
          this.size = oldSize;
        }
      }
      const tail = await readChainTail(fh, this.file, st.size);
      if (tail.seq === this.tail.seq && tail.hash === this.tail.hash) size = st.size;
      else if (st.size > this.size && (await recordEndsAt(fh, this.size, this.tail))) size = this.size;
      else if (await firstRecordContinues(fh, st.size, this.tail))
        size = 0; // a rotated log's new file
      else throw new Error(`its last record is seq ${tail.seq}, this log's is seq ${this.tail.seq}`);
      const old = this.fh;
      this.fh = fh;
      fh = null;
      this.size = size;
      this.tornEnd = null;
      this.lostFile = null;
      await old.close().catch(() => {});
    } catch (err) {
      throw new AuditUnavailableError(
        `audit log unavailable: ${this.file} was ${this.lostFile} while open and the file there now does not ` +
          `continue the chain (${err instanceof AuditUnavailableError ? err.message : describeError(err)}); ` +
          `restore it, or restart Airlock to begin a new log`,
        { cause: err },
      );
    } finally {
      await fh?.close().catch(() => {});
    }
  }
}

/** Whether the first line of the open file is the record after `tail` (how `audit rotate` starts a file). */
async function firstRecordContinues(fh: FileHandle, size: number, tail: ChainTail): Promise<boolean> {
  for await (const line of splitLines(readChunks(fh, 0, Math.min(size, 1 << 20)), 0, 1)) {
    return line.terminated && checkRecordLine(line.text, tail.seq + 1, tail.hash).ok;
  }
  return false;
}

/** Whether the line that ends just before byte `end` is the record `tail` (seq and hash). */
async function recordEndsAt(fh: FileHandle, end: number, tail: ChainTail): Promise<boolean> {
  if (end === 0) return tail.seq === 0;
  for await (const { text, terminated } of readLinesBackward(fh, end)) {
    if (!terminated) return false;
    const check = checkLastLine(text);
    return check.ok && check.record.seq === tail.seq && check.record.hash === tail.hash;
  }
  return false;
}

/**
 * Checks that bytes [start, end) of the open file are complete records continuing `tail` (each
 * checked as verifyAuditFile does) and returns the new tail, or where and why they do not.
 */
async function readContinuation(
  fh: FileHandle,
  start: number,
  end: number,
  tail: ChainTail,
): Promise<{ ok: true; tail: ChainTail } | { ok: false; start: number; reason: string }> {
  let { seq, hash } = tail;
  let lineStart = start;
  for await (const line of splitLines(readChunks(fh, start, end), start, 1)) {
    if (!line.terminated) {
      const reason = line.end < end ? 'file shrank while reading' : 'torn last line (no trailing newline)';
      return { ok: false, start: lineStart, reason };
    }
    const check = checkRecordLine(line.text, seq + 1, hash);
    if (!check.ok) return { ok: false, start: lineStart, reason: check.reason };
    ({ seq, hash } = check.record);
    lineStart = line.end;
  }
  if (lineStart < end) return { ok: false, start: lineStart, reason: 'file shrank while reading' };
  return { ok: true, tail: { seq, hash } };
}

/**
 * mkdir -p with mode 0700 for the folders it creates. Hand-rolled because Node's recursive
 * mkdir never settles on some failures (e.g. a path under /proc), and open must fail, not hang.
 */
async function ensureDir(dir: string): Promise<void> {
  try {
    const st = await stat(dir);
    if (st.isDirectory()) return;
    throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${dir}'`), { code: 'ENOTDIR' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const parent = path.dirname(dir);
  if (parent !== dir) await ensureDir(parent);
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

async function syncDir(dir: string): Promise<void> {
  const dh = await open(dir, fsConstants.O_RDONLY);
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** The longest torn tail set aside at start-up: a record is capped far below this. */
const MAX_TORN_TAIL_BYTES = 1024 * 1024;

/**
 * A crash (kill -9, power loss) can leave the last line half-written: Linux ends a write early
 * when its process is killed. That record was never fsynced, so no caller was told its call was
 * recorded. At start-up, under the lock, the torn bytes are copied to `<file>.torn-<time>` (0600,
 * fsynced) and cut off, but only when the line before them is a whole record that verifies;
 * anything else is left for readChainTail to refuse. Returns the new size, or undefined.
 */
async function setAsideTornTail(
  fh: FileHandle,
  file: string,
  size: number,
): Promise<{ size: number; file: string; bytes: number } | undefined> {
  if (size === 0) return undefined;
  const window = Math.min(size, MAX_TORN_TAIL_BYTES);
  const buf = Buffer.alloc(window);
  await fh.read(buf, 0, window, size - window);
  if (buf[window - 1] === 0x0a) return undefined;
  const nl = buf.lastIndexOf(0x0a);
  if (nl < 0 && window < size) return undefined; // longer than any record: not a torn write
  const cut = size - window + nl + 1;
  // The record before the torn bytes must end the chain cleanly, or nothing is touched.
  if (cut > 0) await readChainTail(fh, file, cut);
  const torn = buf.subarray(nl + 1);
  const aside = `${file}.torn-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  const out = await open(aside, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
  try {
    await out.writeFile(torn);
    await out.datasync();
  } finally {
    await out.close();
  }
  await fh.truncate(cut);
  await fh.datasync();
  await syncDir(path.dirname(file));
  return { size: cut, file: aside, bytes: torn.length };
}

/**
 * Reads only the last line of the log and returns where its chain ends. Refuses (fail closed) a
 * torn or unverifiable last line, naming its line number.
 */
async function readChainTail(fh: FileHandle, file: string, size: number): Promise<ChainTail> {
  if (size === 0) return { seq: 0, hash: GENESIS_PREV };
  const refuse = async (start: number, why: string): Promise<never> => {
    const line = (await countLines(file, start)) + 1;
    throw new AuditUnavailableError(
      `audit log unavailable: ${file} line ${line}: ${why}; refusing to append. ` +
        `Run \`airlock audit verify --file ${file}\` and repair or move the file`,
    );
  };
  for await (const { text, start, terminated } of readLinesBackward(fh, size)) {
    if (!terminated) return refuse(start, 'torn last line (no trailing newline)');
    const check = checkLastLine(text);
    if (!check.ok) return refuse(start, check.reason);
    return { seq: check.record.seq, hash: check.record.hash };
  }
  return refuse(0, 'no record found');
}
