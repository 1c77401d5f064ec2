// Per-team connections: one bounded pg pool per database, created on first use from the
// database's connection secret. Every call borrows a connection, runs inside its own transaction
// (BEGIN READ ONLY unless it is a write on a read-write database) with local timeouts, and gives the
// connection back only after ROLLBACK/COMMIT and a reset of everything a session can carry
// (the pieces of DISCARD ALL, which cannot run in the same round trip). A connection whose
// state is in doubt (an error in our own control statements, a cancel, a timeout) is destroyed.
import net from 'node:net';
import pg from 'pg';
import { ToolError, type PoolUse, type SecretAccess } from '../../src/tool.js';
import type { Logger } from '../../src/log.js';
import type { ControlStatement, Prepared } from './batch.js';
import type { Resolution } from './resolve.js';
import type { DatabasePolicy } from './section.js';

/** Extra time past statementTimeoutMs before the broker cancels from its side. */
const CANCEL_GRACE_MS = 1000;
/** After a cancel, how long to wait for the server to answer before dropping the connection. */
const CANCEL_WAIT_MS = 2000;

/**
 * Session state reset after every call: DISCARD ALL's parts that may run in one multi-statement
 * query — except DEALLOCATE ALL and DISCARD PLANS, which would drop (or re-plan) the broker's own
 * prepared statements: the agent cannot prepare statements (PREPARE is refused and its SQL goes
 * through unnamed statements), and a cached plan holds no session state.
 */
export const RESET_SESSION_STATEMENTS: readonly string[] = [
  'CLOSE ALL',
  'SET SESSION AUTHORIZATION DEFAULT',
  'RESET ALL',
  'UNLISTEN *',
  'SELECT pg_advisory_unlock_all()',
  'DISCARD SEQUENCES',
  'DISCARD TEMP',
];
const RESET_SESSION = RESET_SESSION_STATEMENTS.join('; ');

/**
 * The broker's own statements, each parsed once per connection under a fixed name: a call's
 * BEGIN, limits, ROLLBACK and reset are then a Bind and an Execute each, which Postgres runs
 * without parsing and analysing them again (pgbench: ~1.6× the batches a second).
 */
const CONTROL = {
  beginReadOnly: 'BEGIN READ ONLY',
  beginReadWrite: 'BEGIN READ WRITE',
  // SET LOCAL takes no parameters; set_config(…, true) is the same setting, as one statement.
  limits:
    "SELECT pg_catalog.set_config('statement_timeout', $1, true), pg_catalog.set_config('lock_timeout', $1, true), " +
    "pg_catalog.set_config('idle_in_transaction_session_timeout', $2, true)",
  genericPlans: 'SET LOCAL plan_cache_mode = force_generic_plan',
  autoPlans: 'SET LOCAL plan_cache_mode = auto',
  rollback: 'ROLLBACK',
} as const;

/** A named statement of the broker's, and whether this connection has parsed it already. */
export function preparedOn(state: ConnectionState, name: string, types?: number[]): Prepared {
  return { name, parsed: state.prepared.has(name), ...(types ? { types } : {}) };
}

function named(
  state: ConnectionState,
  name: string,
  text: string,
  values: Array<string | null>,
): ControlStatement {
  return { text, values, prepared: preparedOn(state, name) };
}

/** One of the broker's own statements on this connection (see CONTROL). */
export function control(
  state: ConnectionState,
  name: keyof typeof CONTROL,
  values: Array<string | null> = [],
): ControlStatement {
  return named(state, `airlock_${name}`, CONTROL[name], values);
}

/** The session reset, as the broker's prepared statements on this connection. */
export function resetSession(state: ConnectionState): ControlStatement[] {
  return RESET_SESSION_STATEMENTS.map((text, i) => named(state, `airlock_reset${i}`, text, []));
}

// Values come back exactly as Postgres wrote them; execute.ts decides what becomes a JSON number.
const RAW_TEXT: pg.CustomTypesConfig = { getTypeParser: () => (value: string) => value };

export interface ConnectionState {
  /** Names of the broker's statements this connection has prepared. */
  prepared: Set<string>;
}

export class PostgresRuntime {
  private readonly pools = new Map<string, Promise<pg.Pool>>();
  /** The pools created so far, by database (read by telemetry without waiting). */
  private readonly created = new Map<string, pg.Pool>();
  private readonly states = new WeakMap<pg.PoolClient, ConnectionState>();
  /** Type OID → name (format_type), shared by a team's databases' calls (OIDs of built-ins are fixed). */
  readonly typeNames = new Map<number, string>();
  /** Statements this team's policy allowed, with the lookup rows that verdict was reached on. */
  readonly verdicts = new Verdicts();
  private closed = false;

  constructor(
    private readonly secrets: SecretAccess,
    private readonly log: Logger,
  ) {}

  private async pool(dbName: string, db: DatabasePolicy): Promise<pg.Pool> {
    let pool = this.pools.get(dbName);
    if (!pool) {
      pool = this.createPool(dbName, db);
      this.pools.set(dbName, pool);
      pool.catch(() => this.pools.delete(dbName));
    }
    return pool;
  }

  private async createPool(dbName: string, db: DatabasePolicy): Promise<pg.Pool> {
    const url = await this.secrets.get(db.connection);
    const config = connectionConfig(url, db.connection, dbName);
    const pool = new pg.Pool({
      ...config,
      max: db.poolSize,
      idleTimeoutMillis: 30_000,
      connectionTimeoutMillis: db.acquireTimeoutMs,
      application_name: 'airlock',
      // Session defaults (RESET ALL returns to them): unambiguous text for dates, intervals and bytea.
      options: '-c DateStyle=ISO,YMD -c IntervalStyle=postgres -c bytea_output=hex -c extra_float_digits=1',
      types: RAW_TEXT,
    });
    this.created.set(dbName, pool);
    // An idle connection that dies (server restart) must not crash the broker.
    pool.on('error', (err) =>
      this.log.warn(
        { database: dbName, code: (err as { code?: string }).code },
        'idle postgres connection failed',
      ),
    );
    return pool;
  }

  /** Borrows a connection; the caller must call `release` exactly once. */
  async acquire(dbName: string, db: DatabasePolicy): Promise<Lease> {
    if (this.closed) throw new ToolError('the postgres server is shutting down; retry', 'upstream');
    const pool = await this.pool(dbName, db);
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (err) {
      throw connectError(err, dbName, db, pool);
    }
    let state = this.states.get(client);
    if (!state) {
      // A connection dropped while leased (server restart, our own destroy after a failed
      // cancel) rejects the pending query; without a listener it would also crash the process.
      client.on('error', () => undefined);
      state = { prepared: new Set() };
      this.states.set(client, state);
    }
    return new Lease(client, state, pool);
  }

  poolUse(): PoolUse[] {
    return [...this.created].map(([name, pool]) => ({
      name,
      total: pool.totalCount,
      idle: pool.idleCount,
      waiting: pool.waitingCount,
    }));
  }

  async close(): Promise<void> {
    this.closed = true;
    const pools = [...this.pools.values()];
    this.pools.clear();
    this.created.clear();
    await Promise.all(pools.map((p) => p.then((pool) => pool.end()).catch(() => undefined)));
  }
}

/** A remembered allow: the lookup's rows (for the guard) and what they resolved to. */
export interface Verdict {
  rows: Array<Array<string | null>>;
  resolution: Resolution;
}

/**
 * Allowed statements per database policy object (a reload builds new ones, so nothing decided
 * under an earlier policy is found), by key; bounded, the oldest entry goes first.
 */
export class Verdicts {
  static readonly PER_DATABASE = 256;
  private readonly byPolicy = new WeakMap<DatabasePolicy, Map<string, Verdict>>();

  get(db: DatabasePolicy, key: string): Verdict | undefined {
    return this.byPolicy.get(db)?.get(key);
  }

  remember(db: DatabasePolicy, key: string, verdict: Verdict): void {
    let map = this.byPolicy.get(db);
    if (!map) this.byPolicy.set(db, (map = new Map()));
    map.delete(key);
    if (map.size >= Verdicts.PER_DATABASE) map.delete(map.keys().next().value!);
    map.set(key, verdict);
  }

  forget(db: DatabasePolicy, key: string): void {
    this.byPolicy.get(db)?.delete(key);
  }
}

export class Lease {
  private released = false;
  /** The call's opening statements when they have not been sent yet (they go with its first statement). */
  pending: ControlStatement[] | undefined;
  /** The transaction ended and the session was reset (by the call's last batch). */
  finished = false;
  constructor(
    readonly client: pg.PoolClient,
    readonly state: ConnectionState,
    private readonly pool: pg.Pool,
  ) {}

  /** Ends the transaction and resets the session; destroys the connection if that fails or `broken`. */
  async release(broken: boolean): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (!broken && !this.finished) {
      try {
        // ROLLBACK after a COMMIT only warns; the reset runs either way.
        await this.client.query(`ROLLBACK; ${RESET_SESSION}`);
      } catch {
        broken = true;
      }
    }
    this.client.release(broken ? true : undefined);
  }

  /**
   * Cancels the running statement: first with the protocol's CancelRequest (a fresh socket with
   * the backend's cancel key, no authentication round trip), and if that cannot be sent, with
   * pg_cancel_backend from a separate connection as the same role (one's own backend needs no
   * extra privilege). The pool's own connections may all be busy, so neither uses the pool.
   */
  async cancel(): Promise<void> {
    const c = this.client as unknown as {
      processID?: number;
      secretKey?: number;
      connectionParameters?: { host?: string; port?: number };
    };
    if (!c.processID) return;
    try {
      await sendCancelRequest(
        c.connectionParameters?.host,
        c.connectionParameters?.port,
        c.processID,
        c.secretKey ?? 0,
      );
      return;
    } catch {
      // Fall through to the SQL-level cancel.
    }
    await this.signalBackend('pg_cancel_backend');
  }

  /** Ends the backend (the statement ignored its cancel), from a separate connection as the same role. */
  terminate(): Promise<void> {
    return this.signalBackend('pg_terminate_backend');
  }

  private async signalBackend(fn: 'pg_cancel_backend' | 'pg_terminate_backend'): Promise<void> {
    const pid = (this.client as unknown as { processID?: number }).processID;
    if (!pid) return;
    const opts = this.pool.options as pg.ClientConfig;
    const other = new pg.Client({ ...opts, connectionTimeoutMillis: CANCEL_WAIT_MS, types: RAW_TEXT });
    try {
      await other.connect();
      await other.query({ text: `SELECT ${fn}($1)`, values: [pid] });
    } catch {
      // The caller drops the connection either way.
    } finally {
      await other.end().catch(() => undefined);
    }
  }
}

/** The wire protocol's CancelRequest: length 16, code 80877102, backend pid, cancel key. */
function sendCancelRequest(
  host: string | undefined,
  port: number | undefined,
  pid: number,
  key: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const h = host ?? 'localhost';
    const p = port ?? 5432;
    const socket = h.startsWith('/') ? net.connect(`${h}/.s.PGSQL.${p}`) : net.connect(p, h);
    const timer = setTimeout(() => socket.destroy(new Error('cancel request timed out')), CANCEL_WAIT_MS);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('connect', () => {
      const packet = Buffer.alloc(16);
      packet.writeInt32BE(16, 0);
      packet.writeInt32BE(80877102, 4);
      packet.writeInt32BE(pid, 8);
      packet.writeInt32BE(key, 12);
      // The server reads the packet and closes the socket without an answer.
      socket.end(packet, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  });
}

/**
 * Runs `work` and, if it does not settle by `deadlineMs` or `signal` aborts, cancels it on the
 * server; if the server still does not answer, the connection is dropped so the call can end.
 */
export async function withCancel<T>(
  lease: Lease,
  deadlineMs: number,
  signal: AbortSignal,
  work: Promise<T>,
): Promise<{ value: T; cancelled: boolean }> {
  let cancelled = false;
  let destroyTimer: NodeJS.Timeout | undefined;
  const cancel = () => {
    if (cancelled) return;
    cancelled = true;
    void lease.cancel();
    destroyTimer = setTimeout(() => {
      // The statement did not stop: end its backend and our socket; the pending query rejects.
      void lease.terminate();
      (
        lease.client as unknown as { connection?: { stream?: { destroy(): void } } }
      ).connection?.stream?.destroy();
    }, CANCEL_WAIT_MS);
  };
  const timer = setTimeout(cancel, deadlineMs + CANCEL_GRACE_MS);
  const onAbort = () => cancel();
  if (signal.aborted) cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    const value = await work;
    return { value, cancelled };
  } catch (err) {
    if (cancelled) (err as { airlockCancelled?: boolean }).airlockCancelled = true;
    throw err;
  } finally {
    clearTimeout(timer);
    clearTimeout(destroyTimer);
    signal.removeEventListener('abort', onAbort);
  }
}

/** pg settings from the secret's URL; never echoes the URL (it holds the password). */
function connectionConfig(url: string, secretName: string, dbName: string): pg.ClientConfig {
  const bad = new ToolError(
    `database "${dbName}": the value of secret "${secretName}" is not a valid postgres:// URL`,
    'upstream',
  );
  const trimmed = url.trim();
  if (!/^postgres(ql)?:\/\//i.test(trimmed)) throw bad;
  try {
    // WHATWG parsing of the non-special postgres: scheme (host may be empty for ?host=/socket/dir).
    new URL(trimmed);
  } catch {
    throw bad;
  }
  return { connectionString: trimmed };
}

function connectError(err: unknown, dbName: string, db: DatabasePolicy, pool: pg.Pool): ToolError {
  const message = (err as Error)?.message ?? String(err);
  if (/timeout exceeded when trying to connect/i.test(message) && pool.totalCount >= db.poolSize)
    return new ToolError(
      `busy: all ${db.poolSize} connections to database "${dbName}" are in use; retry shortly`,
      'upstream',
    );
  const code = (err as { code?: string }).code;
  // Postgres's own message (e.g. password authentication failed for user "x") names no secret value.
  return new ToolError(
    `cannot connect to database "${dbName}"${code ? ` (${code})` : ''}: ${message}`,
    'upstream',
  );
}
