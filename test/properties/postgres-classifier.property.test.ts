// The Postgres classifier's promise, checked against a real cluster: a statement it accepts for a
// read-only database never changes that database when run. Generated SQL (test/properties/
// sql-grammar.ts: reads with allowlisted and harmful functions, joins, subqueries, CTEs plain and
// data-modifying, row locks, SELECT INTO, writes, DDL, utility statements, stacking, comments,
// dollar quotes) goes through analyzeSql and checkStatic exactly as the query tool's first check
// does; every accepted text is then run as the superuser, outside any READ ONLY transaction (the
// server's second line of defence is left out on purpose), and a fingerprint of the data and
// catalog taken before and after it must match. The database has no user-defined functions, so
// the catalog check (checkResolved) could only refuse more: static acceptance is the wider set.
import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgresCluster, type PostgresCluster } from '../../src/demo/postgres-cluster.js';
import { analyzeSql, loadSqlParser, SqlRefusal } from '../../servers/postgres/sql.js';
import { checkStatic } from '../../servers/postgres/rules.js';
import { databaseSchema } from '../../servers/postgres/section.js';
import { GRAMMAR_FINGERPRINT_SQL, GRAMMAR_SETUP_SQL, sqlText } from './sql-grammar.js';

const db = databaseSchema.parse({ connection: 'pg', tables: ['public.*'] });

/** What the classifier says of `sql` for the read-only database: accepted, or why not. */
export function classifyReadOnly(sql: string): { accepted: true } | { accepted: false; why: string } {
  try {
    const refusal = checkStatic('db', db, analyzeSql(sql));
    return refusal ? { accepted: false, why: refusal.reason } : { accepted: true };
  } catch (err) {
    // Anything but a SqlRefusal is a classifier crash, and fails the property.
    if (err instanceof SqlRefusal) return { accepted: false, why: err.message };
    throw err;
  }
}

describe('postgres classifier on a real cluster', () => {
  let cluster: PostgresCluster;
  let admin: pg.Client;

  beforeAll(async () => {
    await loadSqlParser();
    cluster = await startPostgresCluster();
    await cluster.admin('CREATE DATABASE prop');
    await cluster.admin(GRAMMAR_SETUP_SQL, 'prop');
    admin = new pg.Client({
      connectionString: cluster.url({
        user: cluster.superuser,
        password: cluster.superPassword,
        database: 'prop',
      }),
    });
    await admin.connect();
  }, 120_000);

  afterAll(async () => {
    await admin?.end();
    await cluster?.close();
  });

  const fingerprint = async () => (await admin.query<{ md5: string }>(GRAMMAR_FINGERPRINT_SQL)).rows[0]!.md5;

  /** Runs `sql` as the superuser in a transaction; the fingerprints before and after it (then rolls back). */
  async function runAndFingerprint(sql: string): Promise<{ before: string; after: string; error?: string }> {
    await admin.query('BEGIN');
    try {
      await admin.query("SET LOCAL statement_timeout = '2s'");
      const before = await fingerprint();
      await admin.query('SAVEPOINT stmt');
      let error: string | undefined;
      try {
        await admin.query(sql);
      } catch (err) {
        error = (err as Error).message;
        await admin.query('ROLLBACK TO SAVEPOINT stmt');
      }
      const after = await fingerprint();
      return { before, after, ...(error !== undefined ? { error } : {}) };
    } finally {
      await admin.query('ROLLBACK');
    }
  }

  it('the fingerprint sees a change (control: a write, a DDL and nextval each change it)', async () => {
    for (const sql of [
      'DELETE FROM b WHERE id = 1',
      'ALTER TABLE a ADD COLUMN z int',
      "SELECT nextval('s')",
    ]) {
      expect(classifyReadOnly(sql).accepted, sql).toBe(false);
      const { before, after } = await runAndFingerprint(sql);
      expect(after, sql).not.toBe(before);
    }
  });

  it('a generated statement the classifier accepts as read-only never changes the database', async () => {
    const counts = { generated: 0, accepted: 0, refused: 0, ranWithError: 0 };
    await fc.assert(
      fc.asyncProperty(sqlText, async (sql) => {
        counts.generated++;
        const verdict = classifyReadOnly(sql);
        if (!verdict.accepted) {
          counts.refused++;
          return;
        }
        counts.accepted++;
        const { before, after, error } = await runAndFingerprint(sql);
        if (error !== undefined) counts.ranWithError++;
        expect(after, `accepted as read-only, but it changed the database: ${sql}`).toBe(before);
      }),
      { numRuns: 1500 },
    );
    console.log(
      `[classifier] ${counts.generated} statements: ${counts.accepted} accepted and run (${counts.ranWithError} of them errored at run time), ${counts.refused} refused; no accepted statement changed the database`,
    );
    // The grammar reaches both sides (otherwise the property would hold vacuously).
    expect(counts.accepted).toBeGreaterThan(100);
    expect(counts.refused).toBeGreaterThan(100);
  }, 180_000);
});
