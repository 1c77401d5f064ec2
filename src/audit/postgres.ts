// The central audit table in PostgreSQL: its schema (`airlock audit migrate`), the rows the
// shipper inserts, and the checks `airlock audit verify --postgres` runs on every broker's chain.
//
// A row holds the record's exact line (`line`, what the hash was computed over, byte for byte) and
// the same record as jsonb (`record`, for queries), plus columns copied out of it for indexes and
// reports. jsonb cannot hold U+0000, so `record` has it replaced by U+FFFD; `line` keeps the escape.
import type pg from 'pg';
import { canonicalJson, GENESIS_PREV, recordHash, type AuditRecord } from './log.js';

export type PgClient = pg.Client;

/** `schema.table` or `table`, each part double-quoted (the config only admits lower-case identifiers). */
export function quoteTable(table: string): string {
  return table
    .split('.')
    .map((part) => `"${part.replace(/"/g, '""')}"`)
    .join('.');
}

/** The role name in a postgres:// URL, or undefined. */
export function urlUser(url: string): string | undefined {
  try {
    const user = decodeURIComponent(new URL(url).username);
    return user || undefined;
  } catch {
    return undefined;
  }
}

/** A connected client with bounded waits; `onLost` hears of a connection dropped while idle. */
export async function connectPostgres(url: string, onLost?: (err: Error) => void): Promise<pg.Client> {
  // Loaded on first use: commands and brokers without a central audit never load the driver.
  const { default: driver } = await import('pg');
  const client = new driver.Client({
    connectionString: url,
    connectionTimeoutMillis: 5000,
    query_timeout: 30_000,
    application_name: 'airlock-audit',
  });
  // Without a listener, a server that goes away would crash the process (an 'error' event).
  client.on('error', (err) => onLost?.(err));
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  return client;
}

/** The statements `airlock audit migrate` runs (idempotent). `shipper` gets INSERT and SELECT only. */
export function migrationSql(table: string, shipper: string | undefined): string[] {
  const t = quoteTable(table);
  const base = table.split('.').pop()!;
  const fn = quoteTable(
    table.includes('.') ? `${table.split('.')[0]}.${base}_append_only` : `${base}_append_only`,
  );
  const role = shipper === undefined ? undefined : `"${shipper.replace(/"/g, '""')}"`;
  const schema = table.includes('.') ? `"${table.split('.')[0]}"` : undefined;
  return [
    ...(schema ? [`CREATE SCHEMA IF NOT EXISTS ${schema}`] : []),
    `CREATE TABLE IF NOT EXISTS ${t} (
      broker text NOT NULL,
      seq bigint NOT NULL,
      ts timestamptz NOT NULL,
      team text,
      server text,
      tool text,
      decision text,
      outcome text,
      hash text NOT NULL,
      prev text NOT NULL,
      record jsonb NOT NULL,
      line text NOT NULL,
      shipped_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (broker, seq)
    )`,
    `CREATE INDEX IF NOT EXISTS "${base}_ts" ON ${t} (ts)`,
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       RAISE EXCEPTION 'the Airlock audit table %.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
         USING ERRCODE = 'insufficient_privilege';
     END $$`,
    `DROP TRIGGER IF EXISTS "${base}_no_change" ON ${t}`,
    `CREATE TRIGGER "${base}_no_change" BEFORE UPDATE OR DELETE ON ${t} FOR EACH ROW EXECUTE FUNCTION ${fn}()`,
    `DROP TRIGGER IF EXISTS "${base}_no_truncate" ON ${t}`,
    `CREATE TRIGGER "${base}_no_truncate" BEFORE TRUNCATE ON ${t} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`,
    ...(role
      ? [
          `REVOKE ALL ON ${t} FROM ${role}`,
          `GRANT INSERT, SELECT ON ${t} TO ${role}`,
          ...(schema ? [`GRANT USAGE ON SCHEMA ${schema} TO ${role}`] : []),
        ]
      : []),
  ];
}

/** The form jsonb stores: U+0000 (which jsonb refuses) becomes U+FFFD, in keys and strings. */
export function jsonbForm(value: unknown): unknown {
  if (typeof value === 'string') return value.includes('\u0000') ? value.replace(/\u0000/g, '\ufffd') : value;
  if (Array.isArray(value)) return value.map(jsonbForm);
  if (value !== null && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [jsonbForm(k) as string, jsonbForm(v)]));
  return value;
}

/** One local record as the row the shipper inserts. */
export interface ShipRow {
  seq: number;
  ts: string;
  team: string | null;
  server: string | null;
  tool: string | null;
  decision: string | null;
  outcome: string | null;
  hash: string;
  prev: string;
  record: string;
  line: string;
}

const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);

export function shipRow(rec: AuditRecord, line: string): ShipRow {
  return {
    seq: rec.seq,
    ts: rec.ts,
    team: str(rec.team),
    server: str(rec.server),
    tool: str(rec.tool),
    decision: str(rec.decision),
    outcome: str(rec.outcome),
    hash: rec.hash,
    prev: rec.prev,
    record: JSON.stringify(jsonbForm(rec)),
    line,
  };
}

/**
 * Inserts `rows` of `broker` in one statement; rows already there are left alone. Returns the
 * seqs that were already there with a different hash (a local chain that no longer matches what
 * was shipped, or another broker using this id).
 */
export async function insertRows(
  client: pg.Client,
  table: string,
  broker: string,
  rows: ShipRow[],
): Promise<{ inserted: number; conflicts: Array<{ seq: number; local: string; table: string }> }> {
  if (rows.length === 0) return { inserted: 0, conflicts: [] };
  const t = quoteTable(table);
  const col = <K extends keyof ShipRow>(k: K) => rows.map((r) => r[k]);
  const res = await client.query<{ seq: string }>(
    `INSERT INTO ${t} (broker, seq, ts, team, server, tool, decision, outcome, hash, prev, record, line)
     SELECT $1, * FROM unnest($2::bigint[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[],
                              $8::text[], $9::text[], $10::text[], $11::jsonb[], $12::text[])
     ON CONFLICT (broker, seq) DO NOTHING
     RETURNING seq`,
    [
      broker,
      col('seq'),
      col('ts'),
      col('team'),
      col('server'),
      col('tool'),
      col('decision'),
      col('outcome'),
      col('hash'),
      col('prev'),
      col('record'),
      col('line'),
    ],
  );
  const inserted = new Set(res.rows.map((r) => Number(r.seq)));
  const skipped = rows.filter((r) => !inserted.has(r.seq));
  const conflicts: Array<{ seq: number; local: string; table: string }> = [];
  if (skipped.length) {
    const there = await client.query<{ seq: string; hash: string }>(
      `SELECT seq, hash FROM ${t} WHERE broker = $1 AND seq = ANY($2::bigint[])`,
      [broker, skipped.map((r) => r.seq)],
    );
    const hashes = new Map(there.rows.map((r) => [Number(r.seq), r.hash]));
    for (const r of skipped) {
      const h = hashes.get(r.seq);
      if (h !== undefined && h !== r.hash) conflicts.push({ seq: r.seq, local: r.hash, table: h });
    }
  }
  return { inserted: inserted.size, conflicts };
}

/** The last shipped seq of `broker` (0 when none). */
export async function tableHead(client: pg.Client, table: string, broker: string): Promise<number> {
  const res = await client.query<{ max: string | null }>(
    `SELECT max(seq) AS max FROM ${quoteTable(table)} WHERE broker = $1`,
    [broker],
  );
  return Number(res.rows[0]?.max ?? 0);
}

export interface TableRow {
  broker: string;
  seq: number;
  ts: Date;
  hash: string;
  prev: string;
  record: unknown;
  line: string;
}

/** Every row of the table in (broker, seq) order, a page at a time. */
export async function* tableRows(
  client: pg.Client,
  table: string,
  opts: { broker?: string; pageSize?: number } = {},
): AsyncGenerator<TableRow> {
  const t = quoteTable(table);
  const page = opts.pageSize ?? 5000;
  let after: [string, number] = [opts.broker ?? '', 0];
  for (;;) {
    const res = await client.query<{
      broker: string;
      seq: string;
      ts: Date;
      hash: string;
      prev: string;
      record: unknown;
      line: string;
    }>(
      `SELECT broker, seq, ts, hash, prev, record, line FROM ${t}
        WHERE (broker, seq) > ($1, $2) ${opts.broker !== undefined ? 'AND broker = $1' : ''}
        ORDER BY broker, seq LIMIT ${page}`,
      after,
    );
    for (const r of res.rows) yield { ...r, seq: Number(r.seq) };
    if (res.rows.length < page) return;
    const last = res.rows[res.rows.length - 1]!;
    after = [last.broker, Number(last.seq)];
  }
}

/** Why a row does not hold the record it claims to (its own content), or undefined. */
export function rowProblem(row: TableRow): string | undefined {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(row.line) as Record<string, unknown>;
  } catch {
    return 'its line is not JSON';
  }
  if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) return 'its line is not a record';
  if (JSON.stringify(rec) !== row.line) return 'its line differs from the record Airlock wrote';
  if (rec.seq !== row.seq) return `its record says seq ${JSON.stringify(rec.seq)}`;
  if (rec.broker !== undefined && rec.broker !== row.broker)
    return `its record names broker ${JSON.stringify(rec.broker)}`;
  if (rec.hash !== row.hash || rec.prev !== row.prev)
    return 'its hash or prev column differs from its record';
  const { hash, ...rest } = rec;
  if (typeof rec.prev !== 'string' || recordHash(rec.prev, rest) !== hash)
    return 'hash mismatch (the record was altered)';
  if (canonicalJson(row.record) !== canonicalJson(jsonbForm(rec)))
    return 'its record column differs from its line';
  if (typeof rec.ts !== 'string' || Date.parse(rec.ts) !== row.ts.getTime())
    return 'its ts column differs from its record';
  return undefined;
}

export interface BrokerChainReport {
  broker: string;
  ok: boolean;
  count: number;
  last?: { seq: number; hash: string };
  /** The first problem found, with the seq it is at. */
  problem?: string;
  seq?: number;
}

/**
 * Checks every broker's chain in the table: each row holds the record it claims (hash), seqs run
 * from 1 without gaps (a deleted row), and each record's prev is the hash of the one before (a
 * replaced or inserted row, or a fork: a second chain continuing from the same broker id).
 */
export async function verifyTable(client: pg.Client, table: string): Promise<BrokerChainReport[]> {
  const reports: BrokerChainReport[] = [];
  let cur: (BrokerChainReport & { prevHash: string }) | undefined;
  const finish = () => {
    if (!cur) return;
    const { prevHash: _, ...report } = cur;
    reports.push(report);
  };
  for await (const row of tableRows(client, table)) {
    if (!cur || cur.broker !== row.broker) {
      finish();
      cur = { broker: row.broker, ok: true, count: 0, prevHash: GENESIS_PREV };
    }
    if (!cur.ok) continue;
    const expected = (cur.last?.seq ?? 0) + 1;
    const fail = (problem: string) => Object.assign(cur!, { ok: false, problem, seq: row.seq });
    if (row.seq !== expected) {
      fail(
        row.seq - expected === 0
          ? `seq ${row.seq} repeats`
          : `gap: seq ${expected}${row.seq - 1 > expected ? `..${row.seq - 1}` : ''} missing (deleted rows)`,
      );
      continue;
    }
    const problem = rowProblem(row);
    if (problem) {
      fail(`changed row at seq ${row.seq}: ${problem}`);
      continue;
    }
    if (row.prev !== cur.prevHash) {
      fail(
        `chain broken at seq ${row.seq}: its prev is not the hash of seq ${row.seq - 1} ` +
          `(a row was replaced or inserted, or the chain forks: two chains under one broker id)`,
      );
      continue;
    }
    cur.count++;
    cur.last = { seq: row.seq, hash: row.hash };
    cur.prevHash = row.hash;
  }
  finish();
  return reports;
}
