// The audit log: one JSON record per line, hash-chained, each record durable (written and
// fdatasynced) before its `append` resolves. See SPEC "Audit record".
//
// - Chain: hash = sha256(prev + canonicalJson(record without hash)); the first prev is 64 zeros.
// - Group commit: appends that arrive while a batch is being written and synced wait for the
//   next batch; each batch is one write and one fdatasync, so concurrency does not cost syncs.
// - Fail closed: a batch that cannot be made durable rejects every append in it with
//   AuditUnavailableError, leaves no torn bytes behind and does not advance the chain.
import { createHash } from 'node:crypto';
import { constants as fsConstants, createReadStream } from 'node:fs';
import { mkdir, open, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';

export type AuditPhase = 'request' | 'result';

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
const MAX_AUDIT_DEPTH = 32;
const ENVELOPE_KEYS = new Set(['v', 'seq', 'ts', 'prev', 'hash']);
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

function truncateString(s: string, maxString: number): string {
  if (s.length <= maxString) return s;
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

function truncateWalk(value: unknown, maxString: number, depth: number): unknown {
  if (typeof value === 'string') return truncateString(value, maxString);
  if (value === null || typeof value !== 'object') return value;
  if (Buffer.isBuffer(value)) return truncateString(value.toString('utf8'), maxString);
  if (depth >= MAX_AUDIT_DEPTH) return '…[nested too deep]';
  if (Array.isArray(value)) {
    const kept = value.slice(0, MAX_AUDIT_ARRAY_ITEMS).map((v) => truncateWalk(v, maxString, depth + 1));
    if (value.length > MAX_AUDIT_ARRAY_ITEMS)
      kept.push(`…[${value.length - MAX_AUDIT_ARRAY_ITEMS} more items]`);
    return kept;
  }
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    return truncateWalk((value as { toJSON(): unknown }).toJSON(), maxString, depth);
  }
  // fromEntries defines own properties, so a hostile "__proto__" key stays a plain key.
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => [
      truncateString(k, maxString),
      truncateWalk(v, maxString, depth + 1),
    ]),
  );
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
  let pending: Buffer[] = [];
  let offset = start;
  let line = firstLine;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
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
  } finally {
    stream.destroy();
  }
  if (pending.length > 0) {
    const buf = Buffer.concat(pending);
    yield { line, text: buf.toString('utf8'), terminated: false, end: offset + buf.length };
  }
}

/**
 * Yields complete lines from the end of an open file backwards (last first), reading in chunks,
 * so the tail of a multi-gigabyte log costs a few reads. `end` must be at a line boundary.
 */
async function* readLinesBackward(
  fh: FileHandle,
  end: number,
): AsyncGenerator<{ text: string; start: number }> {
  if (end <= 0) return;
  const CHUNK = 64 * 1024;
  let pos = end;
  // The newline that terminates the last line does not start another one.
  const lastByte = Buffer.alloc(1);
  await fh.read(lastByte, 0, 1, end - 1);
  if (lastByte[0] === 10) pos -= 1;
  let carry: Buffer = Buffer.alloc(0); // bytes after the earliest newline seen so far
  while (pos > 0) {
    const size = Math.min(CHUNK, pos);
    const buf = Buffer.alloc(size);
    const { bytesRead } = await fh.read(buf, 0, size, pos - size);
    if (bytesRead !== size) throw new Error('file shrank while reading');
    pos -= size;
    let data = carry.length ? Buffer.concat([buf, carry]) : buf;
    for (let nl = data.lastIndexOf(10); nl !== -1; nl = data.lastIndexOf(10)) {
      yield { text: data.subarray(nl + 1).toString('utf8'), start: pos + nl + 1 };
      data = data.subarray(0, nl);
    }
    carry = data;
  }
  yield { text: carry.toString('utf8'), start: 0 };
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
  const rec = parsed as Record<string, unknown>;
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
  if (JSON.stringify(parsed) !== text)
    return { ok: false, reason: 'line differs from the record Airlock wrote (altered)' };
  return { ok: true, record: parsed as AuditRecord };
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

export function parseRecordLine(text: string, file: string, line: number): AuditRecord {
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
// The writer

export interface AuditLogOptions {
  /** Removes secret values from a record before it is hashed and written (the broker's redactor). */
  scrub?: (record: AuditEntry) => AuditEntry;
  /** Longest string kept whole (after scrubbing); default 1024. */
  maxString?: number;
  /** Most records per write+sync; default 4096. 1 gives one fsync per record (benchmark baseline). */
  maxBatch?: number;
  /** Called after each durable batch with its record count (tests, metrics). */
  onSync?: (records: number) => void;
  /** Tests only: runs after a batch is written and before it is synced, to inject failures there. */
  afterWrite?: () => Promise<void> | void;
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

// Read-write: the tail is read through the same descriptor that appends.
const OPEN_FLAGS = fsConstants.O_RDWR | fsConstants.O_APPEND | fsConstants.O_CREAT;

export class AuditLog {
  private queue: Pending[] = [];
  private draining: Promise<void> | null = null;
  private closed = false;
  /** Set when a failed write may have left bytes past `size` that must be cut before writing again. */
  private tornBytes = false;
  /** Set when the file was deleted or replaced; the next batch looks for a file that continues the chain. */
  private lostFile: string | null = null;

  private constructor(
    readonly file: string,
    private fh: FileHandle,
    /** Length of the durable, well-formed content. */
    private size: number,
    private tail: ChainTail,
    private readonly opts: AuditLogOptions,
  ) {}

  /**
   * Opens (creating, mode 0600, folder 0700) the log at `file` and continues its chain from the
   * last record. Refuses a file whose last line is torn or does not verify.
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
    try {
      if (!existed) await syncDir(path.dirname(abs));
      const st = await fh.stat();
      if (!st.isFile())
        throw new AuditUnavailableError(`audit log unavailable: ${abs} is not a regular file`);
      const tail = await readChainTail(fh, abs, st.size);
      return new AuditLog(abs, fh, st.size, tail, opts);
    } catch (err) {
      await fh.close().catch(() => {});
      if (err instanceof AuditUnavailableError) throw err;
      throw new AuditUnavailableError(`audit log unavailable: ${describeError(err)} reading ${abs}`, {
        cause: err,
      });
    }
  }

  /** The last durable record's seq (0 for an empty log). */
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
  }

  /** Builds the normalized record body (no envelope), scrubbed then truncated. */
  private body(entry: AuditEntry): Record<string, unknown> {
    const scrubbed = this.opts.scrub ? this.opts.scrub(entry) : entry;
    // Scrub before truncating: a secret cut in half would no longer be recognised.
    const truncated = truncateForAudit(scrubbed, this.opts.maxString ?? DEFAULT_MAX_AUDIT_STRING) as Record<
      string,
      unknown
    >;
    // Hash exactly what a reader will parse back.
    const normalized = JSON.parse(JSON.stringify(truncated)) as Record<string, unknown>;
    for (const k of ENVELOPE_KEYS) delete normalized[k];
    return normalized;
  }

  private async commit(batch: Pending[]): Promise<void> {
    // Chain the batch in arrival order from the last durable record.
    let seq = this.tail.seq;
    let prev = this.tail.hash;
    const lines: string[] = [];
    const done: { p: Pending; record: AuditRecord }[] = [];
    for (const p of batch) {
      let body: Record<string, unknown>;
      try {
        body = this.body(p.entry);
      } catch (err) {
        p.reject(err instanceof Error ? err : new TypeError(String(err)));
        continue;
      }
      const unhashed = { v: 1, seq: seq + 1, ts: p.ts, ...body, prev };
      const hash = recordHash(prev, unhashed);
      const record = { ...unhashed, hash } as AuditRecord;
      lines.push(JSON.stringify(record) + '\n');
      done.push({ p, record });
      seq += 1;
      prev = hash;
    }
    if (done.length === 0) return;
    try {
      await this.writeDurably(Buffer.from(lines.join(''), 'utf8'));
    } catch (err) {
      const error =
        err instanceof AuditUnavailableError
          ? err
          : new AuditUnavailableError(`audit log unavailable: ${describeError(err)} writing ${this.file}`, {
              cause: err,
            });
      for (const { p } of done) p.reject(error);
      return;
    }
    this.tail = { seq, hash: prev };
    this.opts.onSync?.(done.length);
    for (const { p, record } of done) p.resolve(record);
  }

  /** Appends `data` and syncs it, or throws leaving the file at its last good length. */
  private async writeDurably(data: Buffer): Promise<void> {
    await this.ensureSameFile();
    if (this.tornBytes) {
      await this.fh.truncate(this.size);
      await this.fh.datasync();
      this.tornBytes = false;
    }
    const st = await this.fh.stat();
    if (st.size !== this.size) {
      throw new AuditUnavailableError(
        `audit log unavailable: ${this.file} changed size outside Airlock (${this.size} → ${st.size} bytes); ` +
          `run \`airlock audit verify --file ${this.file}\``,
      );
    }
    try {
      let written = 0;
      while (written < data.length) {
        const { bytesWritten } = await this.fh.write(data, written, data.length - written);
        if (bytesWritten <= 0) throw new Error('write made no progress');
        written += bytesWritten;
      }
      await this.opts.afterWrite?.();
      await this.fh.datasync();
      // A file deleted or replaced during the write took the records with it (never adopt here:
      // the batch is in the old inode, not in whatever is at the path now).
      const status = await this.fileStatus();
      if (status !== 'same') {
        this.lostFile = status;
        throw new AuditUnavailableError(`audit log unavailable: ${this.file} was ${status} during a write`);
      }
    } catch (err) {
      await this.cutBack();
      throw err;
    }
    this.size += data.length;
  }

  /** Removes whatever a failed batch left past the last good length. */
  private async cutBack(): Promise<void> {
    try {
      await this.fh.truncate(this.size);
      await this.fh.datasync();
      this.tornBytes = false;
    } catch {
      this.tornBytes = true; // retried before the next write
    }
  }

  /**
   * Checks that the open file is still the one at `file` (not deleted, not replaced). If it was,
   * looks for a file at the path that continues this chain (the operator restored it) and
   * switches to it; otherwise throws, so nothing is written into an orphaned inode.
   */
  private async ensureSameFile(): Promise<void> {
    const status = await this.fileStatus();
    if (status === 'same') {
      this.lostFile = null;
      return;
    }
    this.lostFile ??= status;
    if (status === 'deleted') {
      throw new AuditUnavailableError(
        `audit log unavailable: ${this.file} was ${this.lostFile} while open (last record seq ${this.tail.seq}); ` +
          `restore it, or restart Airlock to begin a new log`,
      );
    }
    await this.adoptRestoredFile();
  }

  /** Whether the open file is still the one at the path. */
  private async fileStatus(): Promise<'same' | 'deleted' | 'replaced'> {
    const own = await this.fh.stat();
    const onPath = await stat(this.file).catch(() => null);
    if (!onPath) return 'deleted';
    if (own.nlink > 0 && onPath.dev === own.dev && onPath.ino === own.ino) return 'same';
    return 'replaced';
  }

  /** Switches to the file now at the path if its last record is this log's last durable record. */
  private async adoptRestoredFile(): Promise<void> {
    let fh: FileHandle | null = null;
    try {
      fh = await open(this.file, fsConstants.O_RDWR | fsConstants.O_APPEND);
      const st = await fh.stat();
      if (!st.isFile()) throw new Error('not a regular file');
      const tail = await readChainTail(fh, this.file, st.size);
      if (tail.seq !== this.tail.seq || tail.hash !== this.tail.hash) {
        throw new Error(`its last record is seq ${tail.seq}, this log's is seq ${this.tail.seq}`);
      }
      const old = this.fh;
      this.fh = fh;
      fh = null;
      this.size = st.size;
      this.tornBytes = false;
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
  const last = Buffer.alloc(1);
  await fh.read(last, 0, 1, size - 1);
  if (last[0] !== 10) {
    // The torn line starts after the last newline.
    let start = 0;
    for await (const l of readLinesBackward(fh, size)) {
      start = l.start;
      break;
    }
    return refuse(start, 'torn last line (no trailing newline)');
  }
  for await (const { text, start } of readLinesBackward(fh, size)) {
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return refuse(start, 'last line is not valid JSON');
    }
    const seq = rec?.seq;
    const prev = rec?.prev;
    if (typeof seq !== 'number' || !Number.isInteger(seq) || seq < 1 || typeof prev !== 'string') {
      return refuse(start, 'last line is not an audit record');
    }
    const check = checkRecordLine(text, seq, prev);
    if (!check.ok) return refuse(start, `last record does not verify: ${check.reason}`);
    return { seq, hash: check.record.hash };
  }
  return refuse(0, 'no record found');
}
