// Fleet-wide limit counters in PostgreSQL (`limits: { store: postgres }`). One table, one row
// per (team, key, period); every check is one INSERT … ON CONFLICT DO UPDATE … RETURNING, so
// the row lock serializes brokers on every host and no check can see a stale count:
//
//   rateLimit        key "rate:<server>/<tool>", period "bucket": a token bucket with the same
//                    meaning as the local one (src/policy/ratelimit.ts): N in a burst, refilled
//                    at N per period, a changed limit starts a full bucket. Time is the
//                    server's clock, so hosts whose clocks disagree still share one bucket.
//   dailyTokenBudget key "model.tokens", period the UTC day (server clock) "YYYY-MM-DD": tokens
//                    used plus reserved by requests in flight; a request is admitted while the
//                    row is under the budget and adds its reservation in the same statement.
//
// The pool is small and bounded, and every wait (connect, pool checkout, statement) is bounded
// by timeoutMs. The connection URL never leaves this file: errors carry codes and messages
// from pg, which name hosts and roles but no password.
import type pg from 'pg';
import type { RateLimitSpec } from '../policy/ratelimit.js';
import { LIMITS_TABLE } from './names.js';

const BUCKET_PERIOD = 'bucket';

/** The schema `airlock limits migrate` creates (README "Fleet-wide limits" documents it). */
export const LIMITS_SCHEMA_SQL = `CREATE TABLE IF NOT EXISTS ${LIMITS_TABLE} (
  team         text             NOT NULL,
  key          text             NOT NULL,
  period       text             NOT NULL,
  spec         text             NOT NULL,
  amount       double precision NOT NULL,
  last_allowed boolean          NOT NULL,
  updated_at   timestamptz      NOT NULL,
  PRIMARY KEY (team, key, period)
)`;

// The bucket after refilling up to now (EXCLUDED.updated_at is this statement's clock reading).
const REFILLED = `(CASE WHEN l.spec <> EXCLUDED.spec THEN $4::float8
  ELSE LEAST($4::float8, l.amount
    + GREATEST(0, EXTRACT(EPOCH FROM EXCLUDED.updated_at - l.updated_at)::float8 * 1000) * $4::float8 / $5::float8)
  END)`;

const TAKE_TOKEN_SQL = `INSERT INTO ${LIMITS_TABLE} AS l (team, key, period, spec, amount, last_allowed, updated_at)
VALUES ($1, $2, '${BUCKET_PERIOD}', $3, $4::float8 - 1, true, clock_timestamp())
ON CONFLICT (team, key, period) DO UPDATE SET
  amount = CASE WHEN ${REFILLED} >= 1 THEN ${REFILLED} - 1 ELSE ${REFILLED} END,
  last_allowed = ${REFILLED} >= 1,
  spec = EXCLUDED.spec,
  updated_at = EXCLUDED.updated_at
RETURNING last_allowed AS allowed, amount`;

const RESERVE_SQL = `INSERT INTO ${LIMITS_TABLE} AS l (team, key, period, spec, amount, last_allowed, updated_at)
VALUES ($1, $2, to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD'), $3,
  CASE WHEN $5::float8 > 0 THEN $4::float8 ELSE 0 END, $5::float8 > 0, clock_timestamp())
ON CONFLICT (team, key, period) DO UPDATE SET
  amount = CASE WHEN l.amount < $5::float8 THEN l.amount + $4::float8 ELSE l.amount END,
  last_allowed = l.amount < $5::float8,
  spec = EXCLUDED.spec,
  updated_at = EXCLUDED.updated_at
RETURNING last_allowed AS allowed, amount, period`;

const ADJUST_SQL = `UPDATE ${LIMITS_TABLE}
SET amount = GREATEST(0, amount + $4::float8), updated_at = clock_timestamp()
WHERE team = $1 AND key = $2 AND period = $3`;

/** Connections one broker holds to the store: checks are one short statement each. */
export const LIMITS_POOL_SIZE = 4;

export interface TokenTaken {
  allowed: boolean;
  /** Tokens left in the bucket after this check. */
  tokens: number;
}

export interface BudgetReserved {
  allowed: boolean;
  /** Tokens used and reserved today across the fleet (after the reservation when allowed). */
  used: number;
  /** The UTC day of the row, for settling the reservation later. */
  day: string;
}

export class PostgresLimitStore {
  private readonly pool: pg.Pool;

  /** `driver` is the pg module, loaded by the caller on first use (src/limits/fleet.ts). */
  constructor(
    driver: typeof pg,
    connectionString: string,
    timeoutMs: number,
    onIdleError: (err: Error & { code?: string }) => void,
  ) {
    this.pool = new driver.Pool({
      connectionString,
      max: LIMITS_POOL_SIZE,
      idleTimeoutMillis: 30_000,
      connectionTimeoutMillis: timeoutMs,
      query_timeout: timeoutMs,
      statement_timeout: timeoutMs,
      application_name: 'airlock-limits',
    });
    // An idle connection that dies (server restart) must not crash the broker.
    this.pool.on('error', onIdleError);
  }

  async takeToken(team: string, key: string, spec: RateLimitSpec): Promise<TokenTaken> {
    const r = await this.pool.query<{ allowed: boolean; amount: number }>({
      name: 'airlock-limits-take',
      text: TAKE_TOKEN_SQL,
      values: [team, key, spec.text, spec.count, spec.periodMs],
    });
    const row = r.rows[0]!;
    return { allowed: row.allowed, tokens: row.amount };
  }

  async reserve(team: string, key: string, budget: number, tokens: number): Promise<BudgetReserved> {
    const r = await this.pool.query<{ allowed: boolean; amount: number; period: string }>({
      name: 'airlock-limits-reserve',
      text: RESERVE_SQL,
      values: [team, key, String(budget), tokens, budget],
    });
    const row = r.rows[0]!;
    return { allowed: row.allowed, used: row.amount, day: row.period };
  }

  /** Adds `delta` (negative: a reservation larger than the real usage) to a day's row. */
  async adjust(team: string, key: string, day: string, delta: number): Promise<void> {
    await this.pool.query({
      name: 'airlock-limits-adjust',
      text: ADJUST_SQL,
      values: [team, key, day, delta],
    });
  }

  /**
   * For `airlock doctor`: whether the counter table exists and this role may use it as the
   * broker does (SELECT, INSERT, UPDATE). has_table_privilege with a list is true if any one is
   * held, so each is asked on its own.
   */
  async readiness(): Promise<'ready' | 'missing' | 'no-privilege'> {
    const r = await this.pool.query<{ present: boolean; usable: boolean | null }>({
      text: `SELECT to_regclass($1) IS NOT NULL AS present,
        CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE
          has_table_privilege(to_regclass($1), 'SELECT') AND has_table_privilege(to_regclass($1), 'INSERT')
          AND has_table_privilege(to_regclass($1), 'UPDATE') END AS usable`,
      values: [LIMITS_TABLE],
    });
    const row = r.rows[0]!;
    return !row.present ? 'missing' : row.usable ? 'ready' : 'no-privilege';
  }

  /** Creates the table; safe to run again, and from several hosts at once. */
  async migrate(): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      // Two CREATE TABLE IF NOT EXISTS at once can still collide on the catalog: take turns.
      await client.query("SELECT pg_advisory_xact_lock(hashtext('airlock_limits migrate'))");
      await client.query(LIMITS_SCHEMA_SQL);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  close(): Promise<void> {
    return this.pool.end();
  }
}
