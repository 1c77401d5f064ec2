// Running one agent statement on a leased connection: inside its own transaction with local
// timeouts, names resolved and re-checked in that same transaction, rows fetched through a
// portal a page at a time so maxRows and maxResultBytes stop the fetch (not a filter after
// loading everything), writes bounded by maxAffectedRows, and values rendered exactly.
import pg from 'pg';
import { ToolError } from '../../src/tool.js';
import { checkResolved } from './rules.js';
import {
  needsResolution,
  readResolution,
  resolutionQuery,
  viewDependencyQuery,
  type Resolution,
} from './resolve.js';
import { withCancel, type Lease, type PostgresRuntime } from './runtime.js';
import type { DatabasePolicy } from './section.js';
import type { SqlFacts } from './sql.js';

export interface Column {
  name: string;
  type: string;
}

export interface Rows {
  columns: Column[];
  rows: unknown[][];
  rowCount: number;
  truncated: boolean;
  /** The command tag's verb (SELECT, INSERT, …). */
  command: string;
}

/** Built-in type names by OID (anything else is looked up once with format_type). */
const TYPE_NAMES: Record<number, string> = {
  16: 'boolean',
  17: 'bytea',
  18: 'char',
  19: 'name',
  20: 'bigint',
  21: 'smallint',
  23: 'integer',
  25: 'text',
  26: 'oid',
  114: 'json',
  142: 'xml',
  700: 'real',
  701: 'double precision',
  790: 'money',
  869: 'inet',
  650: 'cidr',
  829: 'macaddr',
  1042: 'character',
  1043: 'character varying',
  1082: 'date',
  1083: 'time without time zone',
  1114: 'timestamp without time zone',
  1184: 'timestamp with time zone',
  1186: 'interval',
  1266: 'time with time zone',
  1700: 'numeric',
  2950: 'uuid',
  3802: 'jsonb',
  705: 'unknown',
  2249: 'record',
  1000: 'boolean[]',
  1007: 'integer[]',
  1016: 'bigint[]',
  1009: 'text[]',
  1015: 'character varying[]',
  3614: 'tsvector',
};

/** int2, int4, oid: always exact as JSON numbers. */
const INTEGER_TYPES = new Set([21, 23, 26]);
const FLOAT_TYPES = new Set([700, 701]);
const JSON_TYPES = new Set([114, 3802]);

/**
 * A value as JSON can carry it exactly: booleans, small integers and finite floats as JSON;
 * json/jsonb parsed; bigint, numeric, money, bytea (\x hex), dates, times, timestamps and
 * intervals — and everything else — as the exact text Postgres wrote.
 */
export function renderValue(raw: string | null, typeOid: number): unknown {
  if (raw === null) return null;
  if (typeOid === 16) return raw === 't';
  if (INTEGER_TYPES.has(typeOid)) return Number(raw);
  if (FLOAT_TYPES.has(typeOid)) {
    const n = Number(raw);
    return Number.isFinite(n) && String(n) === raw ? n : raw;
  }
  if (JSON_TYPES.has(typeOid)) {
    try {
      return JSON.parse(raw);
    } catch {
      return raw;
    }
  }
  return raw;
}

interface QueryInternals {
  handleDataRow(msg: { fields: Array<string | null> }): void;
  handlePortalSuspended(connection: { sync(): void }): void;
  handleError(err: Error, connection: { sync(): void }): void;
}
type QueryCallback = (err: Error | null, result?: pg.QueryResult | pg.QueryResult[]) => void;
const QueryBase = pg.Query as unknown as new (
  config: Record<string, unknown>,
  values: undefined,
  callback: QueryCallback,
) => QueryInternals;

/**
 * pg's Query over a portal (`rows` per Execute) that stops fetching once maxRows or the byte cap
 * is reached: the remaining rows are never produced by the server (Sync closes the portal).
 */
class CappedQuery extends QueryBase {
  kept = 0;
  bytes = 0;
  truncated = false;

  constructor(
    config: Record<string, unknown>,
    private readonly maxRows: number,
    private readonly maxBytes: number,
    callback: QueryCallback,
  ) {
    super({ ...config, rows: Math.min(maxRows + 1, 500) }, undefined, callback);
  }

  override handleDataRow(msg: { fields: Array<string | null> }): void {
    if (this.truncated) return;
    let size = 16;
    for (const f of msg.fields) size += f === null ? 4 : f.length + 4;
    if (this.kept >= this.maxRows || this.bytes + size > this.maxBytes) {
      this.truncated = true;
      return;
    }
    this.kept++;
    this.bytes += size;
    super.handleDataRow(msg);
  }

  override handlePortalSuspended(connection: { sync(): void }): void {
    if (this.truncated) connection.sync();
    else super.handlePortalSuspended(connection);
  }

  override handleError(err: Error, connection: { sync(): void }): void {
    // Paged execution sends Flush, not Sync: after an error the server skips everything until a
    // Sync, so without this the connection's next query would wait forever (pg-cursor does the same).
    connection.sync();
    super.handleError(err, connection);
  }
}

function runCapped(
  client: pg.PoolClient,
  text: string,
  values: unknown[],
  maxRows: number,
  maxBytes: number,
): Promise<{ result: pg.QueryResult; truncated: boolean }> {
  return new Promise((resolve, reject) => {
    const query = new CappedQuery(
      { text, values, rowMode: 'array', queryMode: 'extended' },
      maxRows,
      maxBytes,
      (err, result) => {
        if (err) reject(err);
        else resolve({ result: result as pg.QueryResult, truncated: query.truncated });
      },
    );
    void client.query(query as unknown as pg.QueryConfig);
  });
}

export interface ExecuteOptions {
  dbName: string;
  db: DatabasePolicy;
  facts: SqlFacts;
  signal: AbortSignal;
  runtime: PostgresRuntime;
  /** The agent's statement has $n parameters (so its planning mode is restored after the lookup). */
  hasParams?: boolean;
}

/** Postgres errors as the agent sees them: SQLSTATE and message (redacted by the pipeline). */
export function describePgError(err: unknown, db: DatabasePolicy, positionOffset = 0): ToolError {
  const e = err as pg.DatabaseError & { airlockCancelled?: boolean };
  if (e.airlockCancelled || (e.code === '57014' && /statement timeout/.test(e.message ?? '')))
    return new ToolError(
      `57014: the statement ran past statementTimeoutMs (${db.statementTimeoutMs} ms) and was cancelled on the server`,
      'upstream',
    );
  if (!e.code)
    return new ToolError(`the database connection failed: ${e.message ?? String(err)}`, 'upstream');
  const position = e.position ? Number(e.position) - positionOffset : undefined;
  const bits = [
    `${e.code}: ${e.message}`,
    position && position > 0 ? ` (at character ${position})` : '',
    e.detail ? `; detail: ${e.detail}` : '',
    e.hint ? `; hint: ${e.hint}` : '',
  ];
  return new ToolError(bits.join('').slice(0, 4000), 'upstream');
}

/** Statements that run READ WRITE (only ever on a read-write database: checkStatic refuses them elsewhere). */
const WRITE_CLASSES: ReadonlySet<string> = new Set(['insert', 'update', 'delete', 'ddl', 'truncate']);

/** Borrows a connection, opens the call's transaction, resolves names, runs `body`, and cleans up. */
export async function inTransaction<T>(
  opts: ExecuteOptions,
  body: (lease: Lease, resolution: Resolution | undefined) => Promise<T>,
  positionOffset = 0,
): Promise<T> {
  const { db, dbName, facts, runtime, signal } = opts;
  const lease = await runtime.acquire(dbName, db);
  let broken = true;
  try {
    const t = db.statementTimeoutMs;
    const begin =
      `BEGIN ${WRITE_CLASSES.has(facts.statementClass) ? 'READ WRITE' : 'READ ONLY'}; ` +
      `SET LOCAL statement_timeout = ${t}; SET LOCAL lock_timeout = ${t}; ` +
      `SET LOCAL idle_in_transaction_session_timeout = ${t + 10_000}; ` +
      // The broker's prepared lookup keeps one generic plan instead of being planned per call.
      `SET LOCAL plan_cache_mode = force_generic_plan`;
    await withCancel(lease, t, signal, lease.client.query(begin));
    let resolution: Resolution | undefined;
    if (needsResolution(facts)) {
      const { value } = await withCancel(
        lease,
        t,
        signal,
        lease.client.query({ ...resolutionQuery(facts, lease.state.searchPath), rowMode: 'array' }),
      );
      resolution = readResolution(facts, value.rows as unknown[][]);
      if (resolution.viewOids.length) {
        const deps = await withCancel(
          lease,
          t,
          signal,
          lease.client.query({ text: viewDependencyQuery(resolution.viewOids), rowMode: 'array' }),
        );
        readResolution(facts, deps.value.rows as unknown[][], resolution);
      }
      const refusal = checkResolved(dbName, db, facts, resolution);
      // The agent's own parameterised statement is planned as Postgres normally would.
      if (opts.hasParams)
        await withCancel(lease, t, signal, lease.client.query('SET LOCAL plan_cache_mode = auto'));
      if (refusal) {
        broken = false;
        throw new ToolError(refusal.reason, 'denied', refusal.rule);
      }
    }
    const out = await body(lease, resolution);
    broken = false;
    return out;
  } catch (err) {
    if (err instanceof ToolError) {
      // A refusal of ours (or maxAffectedRows): ROLLBACK undoes whatever ran, the connection is fine.
      broken = false;
      throw err;
    }
    // A statement error leaves an aborted transaction that ROLLBACK clears; a cancel or a
    // dropped connection leaves doubt, so that connection is destroyed.
    const e = err as { code?: string; airlockCancelled?: boolean };
    broken = !e.code || Boolean(e.airlockCancelled) || signal.aborted;
    throw describePgError(err, db, positionOffset);
  } finally {
    await lease.release(broken);
  }
}

async function typeNames(runtime: PostgresRuntime, client: pg.PoolClient, oids: number[]): Promise<void> {
  const unknown = [...new Set(oids)].filter((o) => TYPE_NAMES[o] === undefined && !runtime.typeNames.has(o));
  if (unknown.length === 0) return;
  const r = await client.query({
    text: 'SELECT oid::int, format_type(oid, NULL) FROM pg_type WHERE oid = ANY($1::oid[])',
    values: [unknown],
    rowMode: 'array',
  });
  for (const [oid, name] of r.rows as Array<[string, string]>) runtime.typeNames.set(Number(oid), name);
}

function toRows(
  runtime: PostgresRuntime,
  result: pg.QueryResult,
  truncated: boolean,
  rowCount?: number,
): Rows {
  const fields = result.fields ?? [];
  const columns = fields.map((f) => ({
    name: f.name,
    type: TYPE_NAMES[f.dataTypeID] ?? runtime.typeNames.get(f.dataTypeID) ?? `oid ${f.dataTypeID}`,
  }));
  const rows = (result.rows as unknown as Array<Array<string | null>>).map((row) =>
    row.map((v, i) => renderValue(v, fields[i]!.dataTypeID)),
  );
  return { columns, rows, rowCount: rowCount ?? rows.length, truncated, command: result.command ?? '' };
}

/** Runs a read (SELECT/VALUES/TABLE/WITH/EXPLAIN) through a capped portal. */
export async function runRead(
  lease: Lease,
  opts: ExecuteOptions,
  text: string,
  params: unknown[],
): Promise<Rows> {
  const { db, signal, runtime } = opts;
  const { value } = await withCancel(
    lease,
    db.statementTimeoutMs,
    signal,
    runCapped(lease.client, text, params, db.maxRows, db.maxResultBytes),
  );
  await typeNames(
    runtime,
    lease.client,
    (value.result.fields ?? []).map((f) => f.dataTypeID),
  );
  return toRows(runtime, value.result, value.truncated);
}

/** Runs one INSERT/UPDATE/DELETE (or DDL); commits only if it changed at most maxAffectedRows rows. */
export async function runWrite(
  lease: Lease,
  opts: ExecuteOptions,
  text: string,
  params: unknown[],
): Promise<Rows> {
  const { db, dbName, signal, runtime } = opts;
  const { value: result } = await withCancel(
    lease,
    db.statementTimeoutMs,
    signal,
    lease.client.query({ text, values: params, rowMode: 'array', queryMode: 'extended' } as pg.QueryConfig),
  );
  const affected = result.rowCount ?? 0;
  if (opts.facts.statementClass !== 'ddl' && affected > db.maxAffectedRows) {
    // The transaction is rolled back by the lease's release: nothing of the write survives.
    throw new ToolError(
      `the statement would change ${affected} rows, more than maxAffectedRows (${db.maxAffectedRows}); it was rolled back and nothing changed`,
      'denied',
      `postgres.databases.${dbName}.maxAffectedRows`,
    );
  }
  await typeNames(
    runtime,
    lease.client,
    (result.fields ?? []).map((f) => f.dataTypeID),
  );
  await withCancel(lease, db.statementTimeoutMs, signal, lease.client.query('COMMIT'));
  const rows = toRows(runtime, result, false, affected);
  if (rows.rows.length > db.maxRows) {
    rows.rows = rows.rows.slice(0, db.maxRows);
    rows.truncated = true;
  }
  return rows;
}
