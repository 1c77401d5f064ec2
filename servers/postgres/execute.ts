// Running one agent statement on a leased connection: inside its own transaction with local
// timeouts, names resolved and re-checked in that same transaction, rows fetched through a
// portal a page at a time so maxRows and maxResultBytes stop the fetch (not a filter after
// loading everything), writes bounded by maxAffectedRows, and values rendered exactly.
import pg from 'pg';
import { ToolError } from '../../src/tool.js';
import {
  Batch,
  pageRowsFor,
  type BatchError,
  type BatchResult,
  type BatchSpec,
  type ControlStatement,
} from './batch.js';
import { checkResolved } from './rules.js';
import {
  GUARD_MISMATCH,
  guardQuery,
  needsResolution,
  readResolution,
  resolutionQuery,
  viewDependencyQuery,
  type Resolution,
} from './resolve.js';
import {
  control,
  preparedOn,
  resetSession,
  withCancel,
  type Lease,
  type PostgresRuntime,
} from './runtime.js';
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

/**
 * At most this many rows per Execute: what a byte cap reached mid-page still has the server
 * produce (and the broker read and drop). With the default maxRows (1,000) a read is one page,
 * so its batch can end with ROLLBACK and the reset: one round trip fewer than a paged read.
 */
const MAX_PAGE_ROWS = 1024;

/** Runs one batch (batch.ts) on the lease's connection, cancelled past the deadline or on abort. */
async function runBatch(
  lease: Lease,
  deadlineMs: number,
  signal: AbortSignal,
  spec: BatchSpec,
): Promise<BatchResult> {
  const done = new Promise<BatchResult>((resolve, reject) => {
    const batch = new Batch({ ...spec, parsedNames: lease.state.prepared }, (err, result) =>
      err ? reject(err) : resolve(result!),
    );
    void lease.client.query(batch as unknown as pg.QueryConfig);
  });
  return (await withCancel(lease, deadlineMs, signal, done)).value;
}

/** The command tag's verb and count (`INSERT 0 3` → INSERT, 3), as pg reads them. */
function commandTag(tag: string): { command: string; count: number | undefined } {
  const m = /^([A-Za-z]+)(?: (\d+))?(?: (\d+))?/.exec(tag);
  if (!m) return { command: '', count: undefined };
  const n = m[3] ?? m[2];
  return { command: m[1]!, count: n === undefined ? undefined : Number(n) };
}

export interface ExecuteOptions {
  dbName: string;
  db: DatabasePolicy;
  facts: SqlFacts;
  signal: AbortSignal;
  runtime: PostgresRuntime;
  /** The agent's statement has $n parameters (so its planning mode is restored after the lookup). */
  hasParams?: boolean;
  /**
   * What makes this call's facts what they are (tool and exact SQL): set, an allowed statement's
   * lookup rows are remembered under it, and the next such call checks them with a guard that
   * goes out with the statement itself (see inTransaction).
   */
  verdictKey?: string;
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

/** Renders nothing: the lookup's rows are read as the text Postgres sent. */
const rawText = (raw: string | null) => raw;

/**
 * Borrows a connection, opens the call's transaction, resolves names, runs `body`, and cleans up.
 *
 * Round trips: BEGIN with its SET LOCALs goes out with the name lookup (one trip); when nothing
 * needs looking up, it goes out with the statement itself instead. The statement's batch ends
 * with ROLLBACK and the session reset when it is the call's last (runRead with `last`), so a
 * read takes two trips, or more when its result spans pages. The connection returns to the
 * pool only after the reset, so no other call can get it with this call's state.
 *
 * A statement allowed before (same `verdictKey`, same policy object) takes one trip: instead of
 * the lookup, a guard (resolve.ts guardQuery) compares the lookup's rows, under the search_path
 * as it is now, with the ones that verdict was reached on, inside this transaction, ahead of the
 * statement in the same batch. Unequal, it fails and the server skips the statement; the call
 * then rolls back and takes the full path, whose lookup and check decide afresh.
 */
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
    const state = lease.state;
    // Built for each batch: whether a statement still needs its Parse is the connection's state then.
    const opening = (): ControlStatement[] => [
      control(state, WRITE_CLASSES.has(facts.statementClass) ? 'beginReadWrite' : 'beginReadOnly'),
      control(state, 'limits', [String(t), String(t + 10_000)]),
    ];
    if (!needsResolution(facts)) {
      lease.pending = opening();
      const out = await body(lease, undefined);
      broken = false;
      return out;
    }
    let rollbackFirst = false;
    const key = opts.verdictKey;
    const known = key ? runtime.verdicts.get(db, key) : undefined;
    if (key && known) {
      const guard = guardQuery(facts, known.rows);
      lease.pending = [
        ...opening(),
        control(state, 'genericPlans'),
        {
          text: guard.text,
          values: guard.values.map(textArray),
          prepared: preparedOn(state, guard.name, guard.types),
        },
        ...(opts.hasParams ? [control(state, 'autoPlans')] : []),
      ];
      try {
        const out = await body(lease, known.resolution);
        broken = false;
        return out;
      } catch (err) {
        const e = err as BatchError & { code?: string };
        const mismatch =
          e.airlockBatchPart === 'before' && e.code === '22P02' && e.message.includes(GUARD_MISMATCH);
        if (!mismatch) throw err;
        // The guard parsed and ran, then failed: the batch did not count it, it is prepared all the same.
        state.prepared.add(guard.name);
        // The guard refused: nothing after it ran. Roll back, and decide afresh.
        lease.pending = undefined;
        runtime.verdicts.forget(db, key);
        rollbackFirst = true;
      }
    }
    const lookup = resolutionQuery(facts);
    const found = await runBatch(lease, t, signal, {
      // The broker's prepared lookup keeps one generic plan instead of being planned per call;
      // the agent's own parameterised statement is planned as Postgres normally would.
      before: [
        ...(rollbackFirst ? [control(state, 'rollback')] : []),
        ...opening(),
        control(state, 'genericPlans'),
      ],
      main: {
        text: lookup.text,
        values: lookup.values.map(textArray),
        prepared: preparedOn(state, lookup.name, lookup.types),
        maxRows: Number.MAX_SAFE_INTEGER,
        maxBytes: Number.POSITIVE_INFINITY,
        pageRows: 0,
        render: rawText,
      },
      after: opts.hasParams ? [control(state, 'autoPlans')] : [],
    }).catch((err: BatchError) => {
      // Which of the control statements ran is not known: the connection goes.
      err.airlockBatchPart = 'before';
      throw err;
    });
    const rows = found.rows as Array<Array<string | null>>;
    const resolution = readResolution(facts, rows);
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
    if (refusal) {
      broken = false;
      throw new ToolError(refusal.reason, 'denied', refusal.rule);
    }
    // Views are not remembered: what they read comes from a second query the guard does not repeat.
    if (key && resolution.viewOids.length === 0) runtime.verdicts.remember(db, key, { rows, resolution });
    const out = await body(lease, resolution);
    broken = false;
    return out;
  } catch (err) {
    if (err instanceof ToolError) {
      // A refusal of ours (or maxAffectedRows): ROLLBACK undoes whatever ran, the connection is fine.
      broken = false;
      throw err;
    }
    // A statement error leaves an aborted transaction that ROLLBACK clears; a cancel, a dropped
    // connection or a failed control statement leaves doubt, so that connection is destroyed.
    const e = err as { code?: string; airlockCancelled?: boolean } & BatchError;
    broken =
      !e.code ||
      Boolean(e.airlockCancelled) ||
      signal.aborted ||
      (e.airlockBatchPart !== undefined && e.airlockBatchPart !== 'main');
    throw describePgError(err, db, positionOffset);
  } finally {
    await lease.release(broken);
  }
}

/** A text[] parameter in Postgres's array literal syntax (every element quoted; null as NULL). */
function textArray(items: ReadonlyArray<string | null>): string {
  const quote = (v: string) => `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  return `{${items.map((v) => (v === null ? 'NULL' : quote(v))).join(',')}}`;
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

/** Columns with type names (looked up once for types that are not built in) and the rows as kept. */
async function toRows(lease: Lease, runtime: PostgresRuntime, result: BatchResult): Promise<Rows> {
  const fields = result.fields;
  // After the reset this runs outside the call's transaction: a catalog read with no user input.
  await typeNames(
    runtime,
    lease.client,
    fields.map((f) => f.dataTypeID),
  );
  const columns = fields.map((f) => ({
    name: f.name,
    type: TYPE_NAMES[f.dataTypeID] ?? runtime.typeNames.get(f.dataTypeID) ?? `oid ${f.dataTypeID}`,
  }));
  return {
    columns,
    rows: result.rows,
    rowCount: result.rows.length,
    truncated: result.truncated,
    command: commandTag(result.command).command,
  };
}

/** Agent parameters as text, the way pg would send them. */
const paramText = (params: unknown[]): Array<string | null> =>
  params.map((v) => (v === null || v === undefined ? null : String(v)));

/** What runs ahead of the call's first statement: the opening, when the lookup did not send it. */
function takePending(lease: Lease): ControlStatement[] {
  const before = lease.pending ?? [];
  lease.pending = undefined;
  return before;
}

/** ROLLBACK and the session reset, appended to the call's last statement. */
const finishRead = (lease: Lease) => [control(lease.state, 'rollback'), ...resetSession(lease.state)];

/**
 * Runs a read (SELECT/VALUES/TABLE/WITH/EXPLAIN) through a capped portal, a page at a time.
 * `last`: nothing else runs in this transaction, so ROLLBACK and the reset go in the same batch.
 */
export async function runRead(
  lease: Lease,
  opts: ExecuteOptions,
  text: string,
  params: unknown[],
  last = false,
): Promise<Rows> {
  const { db, signal, runtime } = opts;
  const result = await runBatch(lease, db.statementTimeoutMs, signal, {
    before: takePending(lease),
    main: {
      text,
      values: paramText(params),
      maxRows: db.maxRows,
      maxBytes: db.maxResultBytes,
      pageRows: pageRowsFor(db.maxRows, MAX_PAGE_ROWS),
      render: renderValue,
    },
    after: last ? finishRead(lease) : [],
  });
  if (last) lease.finished = true;
  return toRows(lease, runtime, result);
}

/** Runs one INSERT/UPDATE/DELETE (or DDL); commits only if it changed at most maxAffectedRows rows. */
export async function runWrite(
  lease: Lease,
  opts: ExecuteOptions,
  text: string,
  params: unknown[],
): Promise<Rows> {
  const { db, dbName, signal, runtime } = opts;
  const t = db.statementTimeoutMs;
  // One Execute for all of it (the command tag counts the changed rows once they all ran).
  const result = await runBatch(lease, t, signal, {
    before: takePending(lease),
    main: {
      text,
      values: paramText(params),
      maxRows: db.maxRows,
      maxBytes: Number.POSITIVE_INFINITY,
      pageRows: 0,
      render: renderValue,
    },
  });
  const affected = commandTag(result.command).count ?? 0;
  if (opts.facts.statementClass !== 'ddl' && affected > db.maxAffectedRows) {
    // The transaction is rolled back by the lease's release: nothing of the write survives.
    throw new ToolError(
      `the statement would change ${affected} rows, more than maxAffectedRows (${db.maxAffectedRows}); it was rolled back and nothing changed`,
      'denied',
      `postgres.databases.${dbName}.maxAffectedRows`,
    );
  }
  // COMMIT as the main statement: its failure (a deferred constraint) is the agent's error.
  await runBatch(lease, t, signal, {
    main: {
      text: 'COMMIT',
      values: [],
      maxRows: 0,
      maxBytes: 0,
      pageRows: 0,
      render: rawText,
    },
    after: resetSession(lease.state),
  });
  lease.finished = true;
  const rows = await toRows(lease, runtime, result);
  rows.rowCount = affected;
  return rows;
}
