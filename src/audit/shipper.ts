// Ships the local audit log to the central PostgreSQL table (`audit.postgres` in airlock.yaml).
//
// The local file stays the durable, fail-closed record: a call is answered once its record is
// fsynced there, and the shipper only ever reads the file. It runs beside the calls, never in
// their path: it reads records after the table's last seq for this broker, inserts them in
// batches (INSERT … ON CONFLICT DO NOTHING on (broker, seq): at least once and idempotent),
// retries with backoff while PostgreSQL is unreachable, and resumes from the table's max(seq)
// after every (re)connect, so a restart or an outage loses nothing. A row already in the table
// with another hash is reported, not ignored. Progress goes to <stateDir>/audit-shipping.json
// (read by `airlock doctor`); `lag()` is there for metrics.
import { readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.js';
import { auditFileHead, readAuditLines, type AuditRecord } from './log.js';
import { connectPostgres, insertRows, shipRow, tableHead, type PgClient, type ShipRow } from './postgres.js';

export const SHIPPING_STATUS_FILE = 'audit-shipping.json';

/** What the shipper writes to <stateDir>/audit-shipping.json. */
export interface ShippingStatus {
  broker: string;
  table: string;
  pid: number;
  /** The table's last seq for this broker as last seen (undefined: never reached the table). */
  shippedSeq?: number;
  /** The local log's last seq. */
  headSeq: number;
  lagRecords: number;
  lagSeconds: number;
  lastShippedAt?: string;
  lastError?: string;
  lastErrorAt?: string;
  /** Rows in the table whose hash differs from the local record with the same seq. */
  conflicts: Array<{ seq: number; local: string; table: string }>;
  /** A local log that lost records which were already shipped. */
  localProblem?: string;
  updatedAt: string;
}

export interface AuditShipperOptions {
  file: string;
  broker: string;
  table: string;
  stateDir: string;
  /** The postgres:// URL (resolved from the secret store when needed, never logged). */
  connection: () => Promise<string>;
  log: Logger;
  batchSize?: number;
  /** How often the log is looked at when no append woke the shipper (default 1000 ms). */
  pollMs?: number;
  /** Longest wait between attempts while PostgreSQL is unreachable (default 5000 ms). */
  maxBackoffMs?: number;
}

const ROTATED_SUFFIX = /^\.\d{8}T\d{6}Z(-\d+)?$/;
const MAX_CONFLICTS_KEPT = 20;

interface Cursor {
  file: string;
  ino: number;
  offset: number;
  line: number;
  /** The seq of the record that starts at `offset`. */
  seq: number;
}

export class AuditShipper {
  private client: PgClient | undefined;
  private shipped: number | undefined;
  private head = 0;
  private cursor: Cursor | undefined;
  /** ts of the oldest record not yet in the table, when known. */
  private pendingTs: number | undefined;
  private lastError: { message: string; at: string } | undefined;
  private lastShippedAt: string | undefined;
  private conflicts: ShippingStatus['conflicts'] = [];
  private localProblem: string | undefined;
  private stopped = false;
  private wakeUp: (() => void) | undefined;
  private woken = false;
  private loop: Promise<void> | undefined;
  private readonly statusFile: string;
  /** The last status written, as a hint for lag before the table is reached after a restart. */
  private previousShipped: number | undefined;

  constructor(private readonly opts: AuditShipperOptions) {
    this.statusFile = path.join(opts.stateDir, SHIPPING_STATUS_FILE);
  }

  start(): void {
    if (this.loop) return;
    this.loop = this.run();
  }

  /** A record was appended: ship soon rather than at the next poll. */
  wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  /** Records and seconds the table is behind the local log (seconds: age of the oldest unshipped record). */
  lag(): { records: number; seconds: number } {
    const shipped = this.shipped ?? this.previousShipped ?? 0;
    const records = Math.max(0, this.head - shipped);
    const seconds =
      records > 0 && this.pendingTs !== undefined ? Math.max(0, (Date.now() - this.pendingTs) / 1000) : 0;
    return { records, seconds };
  }

  status(): ShippingStatus {
    const lag = this.lag();
    return {
      broker: this.opts.broker,
      table: this.opts.table,
      pid: process.pid,
      ...(this.shipped !== undefined ? { shippedSeq: this.shipped } : {}),
      headSeq: this.head,
      lagRecords: lag.records,
      lagSeconds: Math.round(lag.seconds * 10) / 10,
      ...(this.lastShippedAt ? { lastShippedAt: this.lastShippedAt } : {}),
      ...(this.lastError ? { lastError: this.lastError.message, lastErrorAt: this.lastError.at } : {}),
      conflicts: this.conflicts,
      ...(this.localProblem ? { localProblem: this.localProblem } : {}),
      updatedAt: new Date().toISOString(),
    };
  }

  /** Stops shipping after one last attempt (bounded by `graceMs`) to send what is left. */
  async stop(graceMs = 2000): Promise<void> {
    this.stopped = true;
    this.wake();
    if (this.loop) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.loop, new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
    }
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
    await this.writeStatus();
  }

  private async run(): Promise<void> {
    try {
      const prev = JSON.parse(await readFile(this.statusFile, 'utf8')) as Partial<ShippingStatus>;
      if (prev.broker === this.opts.broker && typeof prev.shippedSeq === 'number')
        this.previousShipped = prev.shippedSeq;
    } catch {
      // No earlier status: lag is known once the table answers.
    }
    let backoff = 0;
    const maxBackoff = this.opts.maxBackoffMs ?? 5000;
    for (;;) {
      const finalRound = this.stopped;
      let more = false;
      try {
        more = await this.shipOnce();
        backoff = 0;
        if (this.lastError) {
          this.opts.log.info({ table: this.opts.table }, 'audit shipping resumed');
          this.lastError = undefined;
        }
      } catch (err) {
        this.dropClient();
        const message = describe(err);
        if (this.lastError?.message !== message)
          this.opts.log.warn(
            { table: this.opts.table, err: message },
            'cannot ship audit records to PostgreSQL; the local log continues, shipping retries',
          );
        this.lastError = { message, at: new Date().toISOString() };
        backoff = Math.min(maxBackoff, backoff ? backoff * 2 : 250);
        // Stopping while PostgreSQL is unreachable: what is left ships after the next start.
        if (this.stopped) return this.writeStatus();
      }
      await this.writeStatus();
      if (finalRound) return;
      if (more && !backoff) continue;
      await this.sleep(backoff || (this.opts.pollMs ?? 1000));
    }
  }

  /** Waits `ms`; an append cuts the wait short, except a backoff during an outage (it spaces retries). */
  private sleep(ms: number): Promise<void> {
    const interruptible = () => !this.lastError || this.stopped;
    if (this.woken && interruptible()) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        this.wakeUp = undefined;
        this.woken = false;
        resolve();
      };
      const timer = setTimeout(finish, ms);
      timer.unref(); // never what keeps a stopping process alive
      this.wakeUp = () => {
        if (interruptible()) finish();
      };
    });
  }

  private dropClient(): void {
    const client = this.client;
    this.client = undefined;
    this.shipped = undefined; // re-read from the table: it is what resuming starts from
    void client?.end().catch(() => undefined);
  }

  /** One round: connect if needed, ship one batch. True when more records are waiting. */
  private async shipOnce(): Promise<boolean> {
    await this.readHead();
    if (!this.client) {
      this.client = await connectPostgres(await this.opts.connection(), () => {
        // Dropped while idle (server restart): the next round reconnects.
        if (this.client) this.dropClient();
      });
    }
    const client = this.client;
    if (this.shipped === undefined) {
      this.shipped = await tableHead(client, this.opts.table, this.opts.broker);
      this.previousShipped = this.shipped;
    }
    const batchSize = this.opts.batchSize ?? 500;
    const { rows, records } = await this.readFrom(this.shipped + 1, batchSize);
    this.pendingTs = records[0] ? Date.parse(records[0].ts) : undefined;
    if (rows.length === 0) {
      this.checkLocalHead();
      return false;
    }
    const { conflicts } = await insertRows(client, this.opts.table, this.opts.broker, rows);
    if (conflicts.length) {
      this.opts.log.error(
        { table: this.opts.table, broker: this.opts.broker, seqs: conflicts.map((c) => c.seq) },
        'audit records in the central table differ from the local log (the local log was rewritten after shipping, or another broker uses this broker id); run airlock audit verify',
      );
      this.conflicts = [...this.conflicts, ...conflicts].slice(-MAX_CONFLICTS_KEPT);
    }
    this.shipped = rows[rows.length - 1]!.seq;
    this.previousShipped = this.shipped;
    this.lastShippedAt = new Date().toISOString();
    this.localProblem = undefined;
    if (rows.length < batchSize) this.pendingTs = undefined;
    return rows.length === batchSize;
  }

  private async readHead(): Promise<void> {
    try {
      this.head = (await auditFileHead(this.opts.file)).seq;
    } catch {
      // A write in progress (or no file yet): the next round looks again.
    }
  }

  private checkLocalHead(): void {
    if (this.shipped !== undefined && this.head < this.shipped && this.head > 0) {
      const problem =
        `the local log ends at seq ${this.head} but the table holds seq ${this.shipped} for broker ` +
        `${this.opts.broker}: records were removed from the local log after shipping; run airlock audit verify`;
      if (this.localProblem !== problem) this.opts.log.error({ table: this.opts.table }, problem);
      this.localProblem = problem;
    }
  }

  /** Up to `max` complete records from seq `from` on, across rotated files. */
  private async readFrom(from: number, max: number): Promise<{ rows: ShipRow[]; records: AuditRecord[] }> {
    const rows: ShipRow[] = [];
    const records: AuditRecord[] = [];
    let cursor = await this.validCursor(from);
    while (cursor && rows.length < max) {
      let reachedEnd = true;
      const c: Cursor = cursor;
      for await (const { line, text, terminated, end } of readAuditLines(c.file, c.offset, c.line)) {
        if (!terminated) break; // a write in progress
        if (rows.length >= max) {
          reachedEnd = false;
          break;
        }
        let rec: AuditRecord;
        try {
          rec = JSON.parse(text) as AuditRecord;
        } catch {
          throw new Error(`${c.file}:${line}: not a JSON record; run airlock audit verify`);
        }
        if (rec?.seq !== c.seq)
          throw new Error(
            `${c.file}:${line}: seq ${JSON.stringify(rec?.seq)} where ${c.seq} was expected; run airlock audit verify`,
          );
        rows.push(shipRow(rec, text));
        records.push(rec);
        c.offset = end;
        c.line = line + 1;
        c.seq++;
      }
      this.cursor = c;
      // The end of a rotated file: the next one starts with the following seq.
      if (reachedEnd && rows.length < max && c.file !== this.opts.file) cursor = await this.locate(c.seq);
      else break;
    }
    return { rows, records };
  }

  /** The cursor at seq `from`, reusing the last one when it still points into the same file. */
  private async validCursor(from: number): Promise<Cursor | undefined> {
    const c = this.cursor;
    if (c && c.seq === from) {
      const st = await stat(c.file).catch(() => undefined);
      if (st && st.ino === c.ino && st.size >= c.offset) return c;
    }
    return this.locate(from);
  }

  /**
   * Finds where record `seq` starts: in the current log, else in a rotated one. In the current
   * log, just after `seq - 1` when `seq` is not written yet. Undefined when no file holds it.
   */
  private async locate(seq: number): Promise<Cursor | undefined> {
    for (const file of await this.files()) {
      const st = await stat(file).catch(() => undefined);
      if (!st) continue;
      let first: number | undefined;
      let last: number | undefined;
      let start = 0;
      let lineNo = 1;
      for await (const { line, text, terminated, end } of readAuditLines(file, 0, 1)) {
        if (!terminated) break;
        const s = Number(/^\{"v":1,"seq":(\d+),/.exec(text)?.[1] ?? NaN);
        first ??= s;
        if (!(first <= seq)) break; // this file starts after it: look in an older one
        if (s === seq) return { file, ino: st.ino, offset: start, line, seq };
        last = s;
        start = end;
        lineNo = line + 1;
      }
      const current = file === this.opts.file;
      if (current && (first === undefined ? seq === 1 : last === seq - 1))
        return { file, ino: st.ino, offset: start, line: lineNo, seq };
      if (first !== undefined && first <= seq) return undefined;
    }
    return undefined;
  }

  /** The current log first, then its rotated files, newest first. */
  private async files(): Promise<string[]> {
    const dir = path.dirname(this.opts.file);
    const base = path.basename(this.opts.file);
    const names = await readdir(dir).catch(() => [] as string[]);
    const rotated = names
      .filter((n) => n.startsWith(base) && ROTATED_SUFFIX.test(n.slice(base.length)))
      .sort()
      .reverse()
      .map((n) => path.join(dir, n));
    return [this.opts.file, ...rotated];
  }

  private async writeStatus(): Promise<void> {
    const tmp = `${this.statusFile}.${process.pid}.tmp`;
    try {
      await writeFile(tmp, JSON.stringify(this.status()) + '\n', { mode: 0o644 });
      await rename(tmp, this.statusFile);
    } catch (err) {
      this.opts.log.debug({ err: describe(err) }, 'could not write the audit shipping status');
    }
  }
}

/** A short, secret-free description of a failure (pg errors carry a code; messages never hold the URL). */
function describe(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const message = e?.message ?? String(err);
  return e?.code && !message.includes(e.code) ? `${e.code}: ${message}` : message;
}

/** Reads the status file a running (or last) shipper wrote, for `airlock doctor`. */
export async function readShippingStatus(stateDir: string): Promise<ShippingStatus | undefined> {
  try {
    return JSON.parse(await readFile(path.join(stateDir, SHIPPING_STATUS_FILE), 'utf8')) as ShippingStatus;
  } catch {
    return undefined;
  }
}
