// The hostile-statement corpus (129 statements): every entry is sent by an agent through the broker socket to a
// real cluster, as a role that owns the tables and may write, create, read server files and run
// programs. Each must be refused (or fail harmlessly) and leave the database exactly as it was:
// the assertion is on a fingerprint of the data, schema objects, roles and settings, not only on
// the message. Nothing of the forbidden table's data may appear in any answer.
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditRecords, shopPolicy, startPgBroker, type PgBroker } from './context.js';

let env: PgBroker;
let baseline: string;
const PWNED = '/tmp/airlock-pg-pwned';

beforeAll(async () => {
  env = await startPgBroker({
    policy: shopPolicy(`      loose:
        connection: pg-shop
        poolSize: 1
        functions: ["pg_catalog.set_config", "pg_catalog.pg_advisory_lock", "pg_catalog.current_setting"]
      loosew:
        connection: pg-shop
        access: read-write
        poolSize: 1
        tables: ["public.*"]
        functions: ["pg_catalog.set_config", "pg_catalog.pg_advisory_lock", "pg_catalog.current_setting"]
      tight:
        connection: pg-shop
        poolSize: 1
        acquireTimeoutMs: 300
        statementTimeoutMs: 20000
`),
  });
  baseline = await env.snapshot();
});
afterAll(async () => {
  await env?.close();
});

type Expect =
  | 'stack'
  | 'never'
  | 'access'
  | 'tables'
  | 'functions'
  | 'credential'
  | 'catalogs'
  | 'unfiltered'
  | 'maxAffected'
  | 'missing'
  | 'readonly';

const EXPECT: Record<Expect, RegExp> = {
  stack: /^denied: postgres\.sql: one statement per call: this text holds \d+ statements/,
  never: /^denied: postgres\.sql: .*never allowed/,
  access: /^denied: postgres\.databases\.\w+\.(access|ddl): /,
  tables: /^denied: postgres\.databases\.\w+\.tables: /,
  functions: /^denied: postgres\.databases\.\w+\.functions: /,
  credential: /^denied: postgres\.credentialCatalogs: /,
  catalogs: /^denied: postgres\.databases\.\w+\.catalogs: /,
  unfiltered: /^denied: postgres\.databases\.\w+\.allowUnfilteredWrites: /,
  maxAffected: /^denied: postgres\.databases\.\w+\.maxAffectedRows: /,
  // A name the search_path does not resolve reads nothing: Postgres's own error.
  missing: /^error: 42P01: relation "[^"]+" does not exist/,
  readonly: /^error: 25006: cannot execute .* in a read-only transaction/,
};

interface Entry {
  sql: string;
  expect: Expect;
  database?: string;
  params?: unknown[];
}

const CORPUS: Entry[] = [
  // Stacking and transaction escapes, in every spelling.
  { sql: 'SELECT 1; COMMIT; DROP TABLE orders', expect: 'stack' },
  { sql: 'SELECT 1; DROP TABLE orders --', expect: 'stack' },
  { sql: 'SELECT 1 /* ; */ ; DELETE FROM orders', expect: 'stack' },
  { sql: "SELECT ';'; DELETE FROM orders", expect: 'stack' },
  { sql: "SELECT E'\\';'; DROP TABLE customers", expect: 'stack' },
  { sql: 'SELECT $$;$$; DELETE FROM orders', expect: 'stack' },
  { sql: 'SELECT $tag$ ; $tag$ ; TRUNCATE orders', expect: 'stack' },
  { sql: 'SELECT 1\n;\nUPDATE orders SET total = 0 WHERE true', expect: 'stack' },
  { sql: 'COMMIT; DELETE FROM orders', expect: 'stack' },
  { sql: 'BEGIN; DELETE FROM orders; COMMIT', expect: 'stack' },
  { sql: 'BEGIN READ WRITE', expect: 'never' },
  { sql: 'START TRANSACTION READ WRITE', expect: 'never' },
  { sql: 'COMMIT', expect: 'never' },
  { sql: 'ROLLBACK', expect: 'never' },
  { sql: 'SAVEPOINT s1', expect: 'never' },
  { sql: 'SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE', expect: 'never' },
  { sql: 'SET transaction_read_only = off', expect: 'never' },
  { sql: 'SET search_path = secret, public', expect: 'never' },
  { sql: 'RESET ALL', expect: 'never' },
  { sql: 'DO $$BEGIN DELETE FROM public.orders; END$$', expect: 'never' },
  // Writes in disguise.
  { sql: 'WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d', expect: 'never' },
  { sql: 'WITH u AS (UPDATE orders SET total = 0 WHERE true RETURNING 1) SELECT 1', expect: 'never' },
  {
    sql: "WITH i AS (INSERT INTO customers VALUES (999, 'x', 'y') RETURNING 1) SELECT * FROM i",
    expect: 'never',
  },
  { sql: 'EXPLAIN ANALYZE DELETE FROM orders', expect: 'access' },
  { sql: 'EXPLAIN (ANALYZE, FORMAT JSON) UPDATE orders SET total = 0 WHERE id > 0', expect: 'access' },
  { sql: 'EXPLAIN ANALYZE WITH d AS (DELETE FROM orders RETURNING 1) SELECT 1', expect: 'never' },
  { sql: 'EXPLAIN ANALYZE DELETE FROM orders WHERE id = 1', database: 'shopw', expect: 'access' },
  { sql: 'PREPARE p AS DELETE FROM orders', expect: 'never' },
  { sql: 'EXECUTE p', expect: 'never' },
  { sql: 'SELECT * FROM orders FOR UPDATE', expect: 'never' },
  { sql: 'SELECT * FROM orders FOR SHARE SKIP LOCKED', expect: 'never' },
  { sql: 'SELECT * FROM (SELECT * FROM orders FOR UPDATE) s', expect: 'never' },
  { sql: `COPY orders TO PROGRAM 'touch ${PWNED}'`, expect: 'never' },
  { sql: `COPY (SELECT 1) TO '${PWNED}'`, expect: 'never' },
  { sql: "COPY customers FROM '/etc/passwd'", expect: 'never' },
  { sql: 'CREATE TEMP TABLE t AS SELECT 1', expect: 'access' },
  { sql: 'SELECT * INTO TEMP t2 FROM orders', expect: 'never' },
  { sql: 'CREATE TABLE public.x (a int)', expect: 'access' },
  { sql: 'DROP TABLE orders', expect: 'access' },
  { sql: 'TRUNCATE orders', expect: 'access' },
  { sql: "INSERT INTO customers VALUES (1000, 'x', 'y')", expect: 'access' },
  { sql: 'DELETE FROM orders WHERE id = 1', expect: 'access' },
  { sql: 'EXPLAIN INSERT INTO customers VALUES (1001)', expect: 'access' },
  {
    sql: 'MERGE INTO customers c USING (SELECT 1 AS id) s ON c.id = s.id WHEN MATCHED THEN DELETE',
    database: 'shopw',
    expect: 'never',
  },
  { sql: 'LOCK TABLE orders', expect: 'never' },
  { sql: 'CALL public.some_procedure()', expect: 'never' },
  { sql: 'GRANT ALL ON secret.payroll TO public', expect: 'never' },
  { sql: 'ALTER ROLE agent_rw SUPERUSER', expect: 'never' },
  { sql: "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", expect: 'never' },
  { sql: 'LISTEN ch', expect: 'never' },
  { sql: "NOTIFY ch, 'x'", expect: 'never' },
  { sql: 'DECLARE c CURSOR WITH HOLD FOR SELECT 1', expect: 'never' },
  { sql: 'VACUUM orders', expect: 'never' },
  { sql: 'ALTER SYSTEM SET fsync = off', expect: 'never' },
  { sql: "LOAD 'auto_explain'", expect: 'never' },
  { sql: 'DELETE FROM customers', database: 'shopw', expect: 'unfiltered' },
  { sql: 'UPDATE orders SET total = 0 WHERE id > 0', database: 'shopw', expect: 'maxAffected' },
  { sql: "INSERT INTO secret.payroll VALUES (3, 'mallory', 1)", database: 'shopw', expect: 'tables' },
  {
    sql: 'INSERT INTO customers (id, name) SELECT id + 100, employee FROM secret.payroll',
    database: 'shopw',
    expect: 'tables',
  },
  {
    sql: 'UPDATE customers SET name = p.employee FROM secret.payroll p WHERE p.id = customers.id',
    database: 'shopw',
    expect: 'tables',
  },
  {
    sql: 'DELETE FROM customers USING secret.payroll p WHERE p.id = customers.id',
    database: 'shopw',
    expect: 'tables',
  },
  { sql: 'DROP TABLE orders', database: 'shopw', expect: 'access' },
  // Forbidden functions in every position.
  { sql: "SELECT pg_read_file('/etc/passwd')", expect: 'functions' },
  { sql: 'SELECT pg_read_file($1)', params: ['/etc/passwd'], expect: 'functions' },
  { sql: "SELECT * FROM pg_read_file('/etc/passwd')", expect: 'functions' },
  { sql: "SELECT 1 WHERE pg_read_file('/etc/passwd') IS NOT NULL", expect: 'functions' },
  { sql: "SELECT * FROM orders ORDER BY pg_read_binary_file('/etc/passwd')", expect: 'functions' },
  { sql: "SELECT length(pg_catalog.pg_read_file('/etc/passwd'))", expect: 'functions' },
  { sql: 'SELECT "pg_read_file"(\'/etc/passwd\')', expect: 'functions' },
  { sql: "SELECT CAST(pg_read_file('/etc/passwd') AS text)", expect: 'functions' },
  { sql: "VALUES (pg_read_file('/etc/passwd'))", expect: 'functions' },
  { sql: "SELECT count(*) FROM orders GROUP BY pg_ls_dir('.')", expect: 'functions' },
  { sql: "SELECT * FROM generate_series(1, 3) g, pg_ls_dir('/') d", expect: 'functions' },
  { sql: "SELECT * FROM orders WHERE note = ANY (SELECT pg_ls_dir('/'))", expect: 'functions' },
  { sql: "SELECT lo_import('/etc/passwd')", expect: 'functions' },
  { sql: 'SELECT pg_terminate_backend(pg_backend_pid())', expect: 'functions' },
  { sql: 'SELECT pg_cancel_backend(1)', expect: 'functions' },
  { sql: 'SELECT pg_reload_conf()', expect: 'functions' },
  { sql: "SELECT set_config('search_path', 'secret', false)", expect: 'functions' },
  { sql: 'SELECT pg_advisory_lock(1)', expect: 'functions' },
  { sql: 'SELECT pg_sleep(10)', expect: 'functions' },
  { sql: "SELECT * FROM dblink('host=evil.example', 'select 1') AS t(x int)", expect: 'functions' },
  { sql: "SELECT query_to_xml('select * from secret.payroll', true, false, '')", expect: 'functions' },
  { sql: "SELECT table_to_xml('secret.payroll', true, false, '')", expect: 'functions' },
  { sql: "SELECT schema_to_xml('secret', true, false, '')", expect: 'functions' },
  { sql: "SELECT ts_stat('select to_tsvector(employee) from secret.payroll')", expect: 'functions' },
  { sql: 'SELECT * FROM leak()', expect: 'functions' },
  { sql: 'SELECT public.leak()', expect: 'functions' },
  { sql: 'SELECT lower(o) FROM orders o', expect: 'functions' },
  { sql: 'SELECT o.lower FROM orders o', expect: 'functions' },
  { sql: 'SELECT (o).lower FROM orders o', expect: 'functions' },
  { sql: 'SELECT 1 OPERATOR(public.+) 1', expect: 'functions' },
  // Attribute notation calls a one-argument function: x.f is f(x).
  { sql: "SELECT ('/etc/passwd'::text).pg_read_file", expect: 'functions' },
  { sql: "SELECT s.x.pg_read_file FROM (SELECT '/etc/passwd'::text AS x) s", expect: 'functions' },
  { sql: "SELECT x.pg_read_file FROM (SELECT '/etc/passwd'::text AS x) s", expect: 'functions' },
  { sql: 'SELECT * FROM orders TABLESAMPLE system_rows(1)', expect: 'functions' },
  // Table-rule escapes.
  { sql: 'SELECT * FROM secret.payroll', expect: 'tables' },
  { sql: 'SELECT * FROM "secret"."payroll"', expect: 'tables' },
  { sql: 'SELECT * FROM SECRET.PAYROLL', expect: 'tables' },
  { sql: 'TABLE secret.payroll', expect: 'tables' },
  { sql: 'SELECT * FROM shop.secret.payroll', expect: 'tables' },
  { sql: 'SELECT * FROM orders o JOIN secret.payroll p ON true', expect: 'tables' },
  { sql: 'SELECT * FROM orders WHERE id IN (SELECT id FROM secret.payroll)', expect: 'tables' },
  { sql: 'SELECT * FROM orders, LATERAL (SELECT * FROM secret.payroll) p', expect: 'tables' },
  { sql: 'SELECT id FROM orders UNION SELECT id FROM secret.payroll', expect: 'tables' },
  { sql: 'WITH p AS (SELECT * FROM secret.payroll) SELECT * FROM p', expect: 'tables' },
  { sql: 'WITH orders AS (SELECT * FROM secret.payroll) SELECT * FROM orders', expect: 'tables' },
  { sql: 'SELECT (SELECT max(salary) FROM secret.payroll) AS x', expect: 'tables' },
  { sql: 'SELECT ARRAY(SELECT salary FROM secret.payroll)', expect: 'tables' },
  { sql: 'SELECT * FROM orders WHERE total > ALL (SELECT salary FROM secret.payroll)', expect: 'tables' },
  { sql: 'SELECT row_to_json(p) FROM secret.payroll p', expect: 'tables' },
  { sql: 'SELECT * FROM orders WHERE EXISTS (SELECT 1 FROM sales.targets)', expect: 'tables' },
  { sql: 'SELECT * FROM payroll_view', expect: 'tables' },
  { sql: 'SELECT * FROM public.nested_view', expect: 'tables' },
  { sql: 'SELECT * FROM leaky_view', expect: 'tables' },
  // Unqualified names resolve by the connection's search_path (public), never into secret.
  { sql: 'SELECT * FROM payroll', expect: 'missing' },
  { sql: 'SELECT * FROM "Payroll"', expect: 'missing' },
  { sql: 'SELECT * FROM "mixedcase"', expect: 'missing' },
  // Credential catalogs, in any spelling, whatever the database allows.
  { sql: 'SELECT * FROM pg_authid', expect: 'credential' },
  { sql: 'SELECT rolpassword FROM pg_catalog.pg_authid', expect: 'credential' },
  { sql: 'SELECT * FROM pg_shadow', expect: 'credential' },
  { sql: 'SELECT * FROM pg_user_mappings', expect: 'credential' },
  { sql: 'SELECT * FROM pg_catalog.pg_largeobject', expect: 'credential' },
  { sql: 'SELECT query FROM pg_stat_activity', expect: 'credential' },
  { sql: 'SELECT * FROM pg_authid', database: 'wide', expect: 'credential' },
  { sql: 'SELECT * FROM pg_class', database: 'nocat', expect: 'catalogs' },
  { sql: 'SELECT * FROM information_schema.tables', database: 'nocat', expect: 'catalogs' },
  // What the role itself would refuse in a READ ONLY transaction, were the rules to miss it.
  { sql: "SELECT nextval('public.orders_id_seq')", expect: 'functions' },
];

describe('hostile statements', () => {
  it('the corpus has at least 60 statements', () => {
    expect(CORPUS.length).toBeGreaterThanOrEqual(60);
  });

  for (const [i, entry] of CORPUS.entries()) {
    it(`#${i + 1} ${entry.database ?? 'shop'}: ${entry.sql.replace(/\s+/g, ' ').slice(0, 90)}`, async () => {
      const r = await env.call('query', {
        database: entry.database ?? 'shop',
        sql: entry.sql,
        ...(entry.params ? { params: entry.params } : {}),
      });
      expect(r.isError).toBe(true);
      expect(r.text).toMatch(EXPECT[entry.expect]);
      // Nothing of the forbidden table reached the agent.
      expect(r.text).not.toMatch(/alice|250000/);
      expect(await env.snapshot()).toBe(baseline);
      expect(existsSync(PWNED)).toBe(false);
    });
  }

  it('every refusal is audited as a denial naming its rule', async () => {
    const records = await auditRecords(env.inst.auditFile);
    const denials = records.filter((r) => r.tool === 'query' && r.decision === 'deny');
    expect(denials.length).toBeGreaterThanOrEqual(CORPUS.filter((e) => e.expect !== 'missing').length);
    for (const d of denials) expect(d.rule).toMatch(/^postgres\./);
  });
});

describe('nothing survives on a pooled connection', () => {
  // `loose` allows set_config and advisory locks by policy, and has one connection: whatever a
  // call leaves behind, the next call would get.
  it('set_config(…, false) does not outlive its call', async () => {
    const before = await env.call('query', {
      database: 'loose',
      sql: "SELECT current_setting('search_path')",
    });
    const set = await env.call('query', {
      database: 'loose',
      sql: "SELECT set_config('search_path', 'secret, public', false), set_config('work_mem', '77MB', false)",
    });
    expect(set.isError).toBe(false);
    const after = await env.call('query', {
      database: 'loose',
      sql: "SELECT current_setting('search_path'), current_setting('work_mem')",
    });
    expect((after.structured?.rows as unknown[][])[0]).toEqual([
      (before.structured?.rows as unknown[][])[0]![0],
      '4MB',
    ]);
    // And the unqualified name still does not reach secret.payroll.
    const probe = await env.call('query', { database: 'loose', sql: 'SELECT * FROM payroll' });
    expect(probe.text).toMatch(EXPECT.missing);
  });

  it('a session advisory lock is released when the call ends', async () => {
    const r = await env.call('query', { database: 'loose', sql: 'SELECT pg_advisory_lock(4242)' });
    expect(r.isError).toBe(false);
    const locks = await env.admin.query(
      "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242",
    );
    expect(locks.rows[0].n).toBe(0);
  });

  it('a connection is not reused before its reset finished: committed session settings are gone', async () => {
    // On a read-write database a write commits, and with it a session-level set_config (ROLLBACK
    // cannot undo it; only the reset does). Back-to-back calls on a pool of one: the next one gets
    // the same connection and must see the defaults and no advisory lock.
    for (let round = 0; round < 5; round++) {
      const set = await env.call('query', {
        database: 'loosew',
        sql: "UPDATE customers SET name = name WHERE id = 1 AND set_config('work_mem', '77MB', false) = '77MB' AND set_config('application_name', 'leaked', false) = 'leaked'",
      });
      expect(set.isError, set.text).toBe(false);
      expect(set.structured?.rowCount).toBe(1);
      const [read, lock] = await Promise.all([
        env.call('query', {
          database: 'loosew',
          sql: "SELECT current_setting('work_mem'), current_setting('application_name')",
        }),
        env.call('query', { database: 'loosew', sql: 'SELECT pg_advisory_lock(4343)' }),
      ]);
      expect(read.structured?.rows).toEqual([['4MB', 'airlock']]);
      expect(lock.isError, lock.text).toBe(false);
      const locks = await env.call('query', {
        database: 'loosew',
        sql: "SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND objid = 4343",
      });
      expect(locks.structured?.rows).toEqual([[0]]);
    }
  });

  it('a full pool answers "busy, retry" after a bounded wait, and recovers', async () => {
    // tight: one connection, a 300 ms wait for it. The first call holds it with a long statement.
    const slow = env.call('query', {
      database: 'tight',
      sql: 'SELECT count(*) FROM generate_series(1, 3000000000)',
    });
    // Wait until the slow statement is running on the server before asking for the connection.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const r = await env.admin.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%3000000000%' AND pid <> pg_backend_pid()",
      );
      if (r.rows[0].n > 0 || Date.now() > deadline) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    const busy = await env.call('query', { database: 'tight', sql: 'SELECT 1' });
    expect(busy.isError).toBe(true);
    expect(busy.text).toMatch(
      /^error: busy: all 1 connections to database "tight" are in use; retry shortly/,
    );
    // Cancel the slow one from outside; the pool serves the next call.
    await env.admin.query(
      "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%3000000000%' AND pid <> pg_backend_pid()",
    );
    expect((await slow).isError).toBe(true);
    const next = await env.call('query', { database: 'tight', sql: 'SELECT 2 AS two' });
    expect(next.structured?.rows).toEqual([[2]]);
  });
});
