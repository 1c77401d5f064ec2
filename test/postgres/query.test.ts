// The postgres tools against a real cluster through a real broker socket: exact rendering,
// caps enforced while fetching, timeouts cancelled on the server with the pool still healthy,
// bounded writes, explain, list_tables and describe_table, and the audit detail.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectSocketClient } from '../helpers/fixture.js';
import { AGENT_ROLE, auditRecords, shopPolicy, startPgBroker, type PgBroker } from './context.js';

let env: PgBroker;
beforeAll(async () => {
  env = await startPgBroker({
    policy: shopPolicy(`      paged:
        connection: pg-shop
        maxRows: 2000
      one:
        connection: pg-shop
        poolSize: 1
        tables: ["public.*"]
      fresh:
        connection: pg-shop
        poolSize: 1
        tables: ["public.*"]
`),
  });
});
afterAll(async () => {
  await env?.close();
});

/** Polls `check` until it holds (bounded: the test fails with the last state after 15 s). */
async function waitFor(check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await check()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

const rowsOf = (r: { structured?: Record<string, unknown> }) => r.structured?.rows as unknown[][];

describe('query', () => {
  it('renders values JSON cannot hold exactly as exact strings, and names column types', async () => {
    const r = await env.call('query', {
      database: 'shop',
      sql: 'SELECT id, total, placed_at, blob, big, span, note IS NULL AS no_note, 1.5::float8 AS f FROM orders WHERE id = $1',
      params: [1],
    });
    expect(r.isError).toBe(false);
    expect(r.structured?.columns).toEqual([
      { name: 'id', type: 'bigint' },
      { name: 'total', type: 'numeric' },
      { name: 'placed_at', type: 'timestamp with time zone' },
      { name: 'blob', type: 'bytea' },
      { name: 'big', type: 'bigint' },
      { name: 'span', type: 'interval' },
      { name: 'no_note', type: 'boolean' },
      { name: 'f', type: 'double precision' },
    ]);
    // 9007199254740994 is past 2^53: as a JSON number it would silently become ...992.
    expect(rowsOf(r)).toEqual([
      [
        '1',
        '10.25',
        '2026-01-01 01:00:00+00',
        '\\xdeadbeef',
        '9007199254740994',
        '1 day 02:03:04.5',
        false,
        1.5,
      ],
    ]);
    expect(r.structured?.rowCount).toBe(1);
    expect(r.structured?.truncated).toBe(false);
    // The text rendering: a heading, the column names, one tab-separated line per row.
    const text = await env.call('query', {
      database: 'shop',
      sql: `SELECT id, NULL::text AS none, id > 1 AS later, 2.5::float8 AS f, '{"a": [1]}'::jsonb AS j FROM customers WHERE id <= 2 ORDER BY id`,
    });
    expect(text.text).toBe(
      'SELECT: 2 rows\nid\tnone\tlater\tf\tj\n1\tNULL\tfalse\t2.5\t{"a":[1]}\n2\tNULL\ttrue\t2.5\t{"a":[1]}',
    );
  });

  it('a result of millions of rows stops at maxRows while fetching (truncated), and the pool stays usable', async () => {
    const r = await env.call('query', {
      database: 'shop',
      sql: 'SELECT generate_series(1, 50000000) AS g',
    });
    expect(r.isError).toBe(false);
    expect(rowsOf(r)).toHaveLength(100);
    expect(r.structured?.truncated).toBe(true);
    expect(r.text).toContain('truncated');
    // Had the portal been drained, 50 million rows at maxRows would have hit the 2 s statement timeout.
    const next = await env.call('query', { database: 'shop', sql: 'SELECT count(*) FROM orders' });
    expect(rowsOf(next)).toEqual([['50']]);
  });

  it('a result of several pages arrives whole and in order, and an error on a later page leaves the connection usable', async () => {
    // wide: maxRows 100,000, so rows come about 1,000 per Execute; 2,345 rows take three pages.
    const r = await env.call('query', { database: 'wide', sql: 'SELECT g FROM generate_series(1, 2345) g' });
    expect(r.isError, r.text).toBe(false);
    expect(r.structured).toMatchObject({ rowCount: 2345, truncated: false });
    expect(rowsOf(r)).toEqual(Array.from({ length: 2345 }, (_, i) => [i + 1]));
    // Division by zero at row 2,200: on the third page, after two pages came back.
    const bad = await env.call('query', {
      database: 'wide',
      sql: 'SELECT 1 / (g - 2200) FROM generate_series(1, 2500) g',
    });
    expect(bad.isError).toBe(true);
    expect(bad.text).toMatch(/^error: 22012: division by zero/);
    const next = await env.call('query', { database: 'wide', sql: 'SELECT 7 AS seven' });
    expect(rowsOf(next)).toEqual([[7]]);
  });

  it('maxRows + 1 rows end the fetch on the page that reaches them (truncated), in one page or several', async () => {
    // slow keeps the default maxRows (1,000): one page. paged (maxRows 2,000): two pages of 1,001.
    for (const [database, max] of [
      ['slow', 1000],
      ['paged', 2000],
    ] as const) {
      const whole = await env.call('query', { database, sql: `SELECT g FROM generate_series(1, ${max}) g` });
      expect(whole.structured).toMatchObject({ rowCount: max, truncated: false });
      const cut = await env.call('query', {
        database,
        sql: `SELECT g FROM generate_series(1, ${max + 1}) g`,
      });
      expect(cut.structured).toMatchObject({ rowCount: max, truncated: true });
      expect(rowsOf(cut).at(-1)).toEqual([max]);
      const next = await env.call('query', { database, sql: 'SELECT 8 AS eight' });
      expect(rowsOf(next)).toEqual([[8]]);
    }
  });

  it('every connection is back to idle (transaction ended) once its call answered', async () => {
    await Promise.all(
      ['shop', 'wide', 'slow', 'paged'].map((database) =>
        env.call('query', { database, sql: 'SELECT count(*) FROM orders' }),
      ),
    );
    const open = await env.admin.query(
      "SELECT state FROM pg_stat_activity WHERE application_name = 'airlock' AND state <> 'idle'",
    );
    expect(open.rows).toEqual([]);
  });

  it('a 10 MB single value is cut by maxResultBytes, not shipped', async () => {
    const r = await env.call('query', {
      database: 'capped',
      sql: "SELECT 'small' AS v UNION ALL SELECT repeat('x', 10 * 1024 * 1024)",
    });
    expect(r.isError).toBe(false);
    expect(rowsOf(r)).toEqual([['small']]);
    expect(r.structured?.truncated).toBe(true);
    expect(JSON.stringify(r.structured).length).toBeLessThan(65536);
  });

  it('a query past statementTimeoutMs is cancelled on the server and the next call works', async () => {
    const r = await env.call('query', {
      database: 'wide',
      sql: 'SELECT count(*) FROM generate_series(1, 1000000000)',
    });
    expect(r.isError).toBe(true);
    expect(r.text).toMatch(/^error: 57014: the statement ran past statementTimeoutMs \(500 ms\)/);
    const active = await env.admin.query(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%generate_series(1, 1000000000)%' AND state = 'active' AND pid <> pg_backend_pid()",
    );
    expect(active.rows[0].n).toBe(0);
    const next = await env.call('query', { database: 'wide', sql: 'SELECT 42 AS answer' });
    expect(rowsOf(next)).toEqual([[42]]);
  });

  it('a session that closes mid-query has its statement stopped on the server (cancel, then terminate)', async () => {
    const { client } = await connectSocketClient(env.inst.socket('acme', 'postgres'));
    const marker = 'SELECT count(*) FROM generate_series(1, 4000000000) AS closing_session';
    const pending = client
      .callTool({ name: 'query', arguments: { database: 'slow', sql: marker } })
      .catch(() => undefined);
    const running = () =>
      env.admin
        .query(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%closing_session%' AND pid <> pg_backend_pid()",
        )
        .then((r) => r.rows[0].n as number);
    await waitFor(async () => (await running()) > 0);
    await client.close();
    await pending;
    // statementTimeoutMs is 60 s: only the broker's cancel can have stopped it this soon.
    await waitFor(async () => (await running()) === 0);
    expect(await running()).toBe(0);
  });

  it('errors carry the SQLSTATE and Postgres message so the agent can fix its SQL', async () => {
    const r = await env.call('query', { database: 'shop', sql: 'SELECT nope FROM orders' });
    expect(r.isError).toBe(true);
    expect(r.text).toMatch(/^error: 42703: column "nope" does not exist \(at character 8\)/);
    const syntax = await env.call('query', { database: 'shop', sql: 'SELEC 1' });
    expect(syntax.text).toMatch(/^invalid argument: sql: syntax error at or near "SELEC"/);
  });

  it('params are bound, never spliced', async () => {
    const r = await env.call('query', {
      database: 'shop',
      sql: 'SELECT name FROM customers WHERE name = $1',
      params: ["x' OR '1'='1"],
    });
    expect(r.isError).toBe(false);
    expect(rowsOf(r)).toEqual([]);
  });

  it('audits statement class, tables and functions in the request, rowCount and truncated in the result', async () => {
    await env.call('query', {
      database: 'shop',
      sql: 'SELECT count(*), max(total) FROM orders o JOIN customers c ON c.id = o.customer_id',
    });
    const records = await auditRecords(env.inst.auditFile);
    const request = records.filter((r) => r.phase === 'request' && r.tool === 'query').at(-1)!;
    expect(request).toMatchObject({
      statementClass: 'select',
      statement: 'SELECT',
      tables: ['orders', 'customers'],
      functions: ['count', 'max'],
    });
    const result = records.find((r) => r.phase === 'result' && r.call === request.call)!;
    expect(result).toMatchObject({ outcome: 'ok', rowCount: 1, truncated: false });
  });
});

describe('read-write', () => {
  it('a write within maxAffectedRows commits', async () => {
    const r = await env.call('query', {
      database: 'shopw',
      sql: 'UPDATE customers SET email = $1 WHERE id = 1 RETURNING id, email',
      params: ['new@example.com'],
    });
    expect(r.isError).toBe(false);
    expect(r.structured).toMatchObject({ command: 'UPDATE', rowCount: 1, rows: [[1, 'new@example.com']] });
    const check = await env.admin.query('SELECT email FROM customers WHERE id = 1');
    expect(check.rows[0].email).toBe('new@example.com');
    await env.admin.query("UPDATE customers SET email = 'c1@example.com' WHERE id = 1");
  });

  it('a write past maxAffectedRows is rolled back with a denial and changes nothing', async () => {
    const before = await env.snapshot();
    const r = await env.call('query', {
      database: 'shopw',
      sql: "UPDATE orders SET note = 'x' WHERE id <= 6",
    });
    expect(r.isError).toBe(true);
    expect(r.text).toMatch(
      /^denied: postgres\.databases\.shopw\.maxAffectedRows: the statement would change 6 rows/,
    );
    expect(await env.snapshot()).toBe(before);
    const records = await auditRecords(env.inst.auditFile);
    expect(records.at(-1)).toMatchObject({
      decision: 'deny',
      outcome: 'denied',
      rule: 'postgres.databases.shopw.maxAffectedRows',
    });
  });

  it('UPDATE and DELETE without WHERE are refused before they run', async () => {
    const before = await env.snapshot();
    for (const sql of ['DELETE FROM customers', "UPDATE orders SET note = 'x'"]) {
      const r = await env.call('query', { database: 'shopw', sql });
      expect(r.text).toMatch(/^denied: postgres\.databases\.shopw\.allowUnfilteredWrites: /);
    }
    expect(await env.snapshot()).toBe(before);
  });

  it('with ddl: true, DDL runs under the table globs (and TRUNCATE still needs allowUnfilteredWrites)', async () => {
    const made = await env.call('query', {
      database: 'schema',
      sql: 'CREATE TABLE public.agent_notes (id int, body text)',
    });
    expect(made.isError).toBe(false);
    const exists = await env.admin.query("SELECT to_regclass('public.agent_notes') IS NOT NULL AS ok");
    expect(exists.rows[0].ok).toBe(true);
    const before = await env.snapshot();
    for (const [sql, rule] of [
      ['CREATE TABLE secret.agent_notes (id int)', 'tables'],
      ['DROP TABLE secret.payroll', 'tables'],
      ['DROP TABLE orders', 'tables'],
      ['ALTER TABLE public.orders ADD COLUMN x int', 'tables'],
      ['TRUNCATE public.agent_notes', 'allowUnfilteredWrites'],
      ['DROP SCHEMA secret CASCADE', 'sql'],
    ] as const) {
      const r = await env.call('query', { database: 'schema', sql });
      expect(r.text, sql).toMatch(new RegExp(`^denied: postgres\\.(databases\\.schema\\.)?${rule}: `));
    }
    expect(await env.snapshot()).toBe(before);
    const dropped = await env.call('query', { database: 'schema', sql: 'DROP TABLE agent_notes' });
    expect(dropped.isError).toBe(false);
    const gone = await env.admin.query("SELECT to_regclass('public.agent_notes') IS NULL AS ok");
    expect(gone.rows[0].ok).toBe(true);
  });

  it('DDL is refused on a read-write database without ddl: true', async () => {
    const before = await env.snapshot();
    const r = await env.call('query', {
      database: 'shopw',
      sql: 'CREATE TABLE public.made_by_agent (x int)',
    });
    expect(r.text).toMatch(/^denied: postgres\.databases\.shopw\.ddl: CREATE TABLE is DDL/);
    expect(await env.snapshot()).toBe(before);
  });
});

describe('a statement allowed before', () => {
  // The second time a statement comes, its lookup goes out as a guard in the statement's own
  // batch; a catalog that changed under it must be decided afresh, never run on the old verdict.
  /** DDL as the agent's role, which owns the shop's tables (the broker's role reads them). */
  const asAgent = (sql: string) => env.admin.query(`SET ROLE ${AGENT_ROLE}; ${sql}; RESET ROLE`);

  it('runs through the guard, and is refused once its name resolves to something the policy forbids', async () => {
    await asAgent('CREATE TABLE public.guard_t (x int); INSERT INTO public.guard_t VALUES (1)');
    const sql = 'SELECT * FROM guard_t';
    for (let i = 0; i < 3; i++) {
      const r = await env.call('query', { database: 'one', sql });
      expect(rowsOf(r), r.text).toEqual([[1]]);
    }
    // One connection: the guard ran on it (prepared once, next to the lookup of that shape).
    const prepared = await env.call('query', {
      database: 'one',
      sql: "SELECT name FROM pg_prepared_statements WHERE name LIKE 'airlock%' ORDER BY 1",
    });
    // (This query's own lookup, of another shape, is there too.)
    expect(rowsOf(prepared)).toEqual(
      expect.arrayContaining([['airlock_guard_v3_1'], ['airlock_resolve_v3_1']]),
    );

    // The same name is now a view over a table outside public.*.
    await asAgent(
      'ALTER TABLE public.guard_t RENAME TO guard_old; CREATE VIEW public.guard_t AS SELECT * FROM secret.payroll',
    );
    const refused = await env.call('query', { database: 'one', sql });
    expect(refused.isError).toBe(true);
    expect(refused.text).toMatch(/^denied: postgres\.databases\.one\.tables: .*secret\.payroll/);
    expect(refused.text).not.toMatch(/alice|250000/);

    // And a change the policy allows: decided afresh on the same connection, and it runs.
    await asAgent('DROP VIEW public.guard_t; CREATE VIEW public.guard_t AS SELECT 2 AS x');
    const again = await env.call('query', { database: 'one', sql });
    expect(rowsOf(again), again.text).toEqual([[2]]);
    await asAgent('DROP VIEW public.guard_t; ALTER TABLE public.guard_old RENAME TO guard_t');
    const back = await env.call('query', { database: 'one', sql });
    expect(rowsOf(back), back.text).toEqual([[1]]);
    await asAgent('DROP TABLE public.guard_t');
  });

  it('a schema of the search_path created after the connection opened is searched, as Postgres searches it', async () => {
    // The default search_path is "$user", public: once a schema named after the role exists, an
    // unqualified name means the relation there, on connections already open too.
    await asAgent('CREATE TABLE public.path_t (x int); INSERT INTO public.path_t VALUES (1)');
    const sql = 'SELECT * FROM path_t';
    const other = 'SELECT x FROM path_t';
    for (let i = 0; i < 2; i++)
      expect(rowsOf(await env.call('query', { database: 'one', sql }))).toEqual([[1]]);
    await asAgent(
      `CREATE SCHEMA ${AGENT_ROLE}; CREATE VIEW ${AGENT_ROLE}.path_t AS SELECT count(*)::int AS x FROM secret.payroll`,
    );
    try {
      // A statement allowed before (its guard) and one never seen (its lookup): both refused.
      for (const text of [sql, other]) {
        const refused = await env.call('query', { database: 'one', sql: text });
        expect(refused.isError, refused.text).toBe(true);
        expect(refused.text).toMatch(
          new RegExp(`^denied: postgres\\.databases\\.one\\.tables: .*${AGENT_ROLE}\\.path_t`),
        );
      }
    } finally {
      await asAgent(`DROP SCHEMA ${AGENT_ROLE} CASCADE`);
    }
    expect(rowsOf(await env.call('query', { database: 'one', sql }))).toEqual([[1]]);
    await asAgent('DROP TABLE public.path_t');
  });

  it('a guard that refused the first time it ran stays prepared, so the next guarded call runs', async () => {
    // Its own one-connection database: the guard is parsed for the first time in the batch where
    // it refuses (the server keeps it; the broker must know it has it, or the next Parse fails).
    await asAgent('CREATE TABLE public.guard_p (x int); INSERT INTO public.guard_p VALUES (1)');
    const sql = 'SELECT * FROM guard_p';
    expect(rowsOf(await env.call('query', { database: 'fresh', sql }))).toEqual([[1]]);
    // The same name as another kind of relation (r → p): the guard refuses, the call is decided
    // afresh and allowed, and the call after it goes through the guard again.
    await asAgent('DROP TABLE public.guard_p; CREATE TABLE public.guard_p (x int) PARTITION BY RANGE (x)');
    try {
      for (let i = 0; i < 2; i++) {
        const r = await env.call('query', { database: 'fresh', sql });
        expect(rowsOf(r), r.text).toEqual([]);
      }
    } finally {
      await asAgent('DROP TABLE public.guard_p');
    }
  });

  it('a statement that failed after its guard leaves the connection usable', async () => {
    const sql = 'SELECT 1 / (id - 1) FROM customers WHERE id = 1';
    for (let i = 0; i < 2; i++) {
      const r = await env.call('query', { database: 'one', sql });
      expect(r.text).toMatch(/^error: 22012: division by zero/);
    }
    const ok = await env.call('query', { database: 'one', sql: 'SELECT count(*) FROM customers' });
    expect(rowsOf(ok)).toEqual([['20']]);
  });

  it("the broker's own statements are prepared once per connection and outlive the agent's errors", async () => {
    // BEGIN, the limits, ROLLBACK and the reset are named statements: parsed on a connection's
    // first call, then only bound. An error in the agent's statement (after them in the batch,
    // or before the ROLLBACK and reset, which then never ran) must not make the broker think
    // a statement is prepared when it is not (the next call would fail) or the other way round.
    const control = async () => {
      const r = await env.call('query', {
        database: 'one',
        sql: "SELECT name, prepare_time::text FROM pg_prepared_statements WHERE name LIKE 'airlock%' AND name NOT LIKE 'airlock%v3%' ORDER BY 1",
      });
      return rowsOf(r);
    };
    const before = await control();
    expect(before.map((row) => row[0])).toEqual(
      expect.arrayContaining([
        'airlock_beginReadOnly',
        'airlock_genericPlans',
        'airlock_limits',
        'airlock_reset0',
        'airlock_reset6',
        'airlock_rollback',
      ]),
    );
    for (const sql of ['SELECT 1 / 0', 'SELECT 1 / (id - 1) FROM customers WHERE id = 1', 'SELECT 1 / 0']) {
      const r = await env.call('query', { database: 'one', sql });
      expect(r.text).toMatch(/^error: 22012: division by zero/);
    }
    // The same connection (poolSize 1) and the same statements: none was dropped or parsed again.
    expect(await control()).toEqual(before);
  });
});

describe('explain, list_tables, describe_table', () => {
  it('explain returns the plan as text and JSON without running the statement', async () => {
    const before = await env.snapshot();
    const r = await env.call('explain', {
      database: 'shopw',
      sql: 'DELETE FROM orders WHERE id = $1',
      params: [3],
    });
    expect(r.isError).toBe(false);
    expect(r.structured?.planText).toMatch(/Delete on orders/);
    expect(JSON.stringify(r.structured?.plan)).toContain('"Node Type":"ModifyTable"');
    expect(await env.snapshot()).toBe(before);
  });

  it('explain analyze measures a plain read', async () => {
    const r = await env.call('explain', { database: 'shop', sql: 'SELECT * FROM orders', analyze: true });
    expect(r.isError).toBe(false);
    expect(r.structured?.planText).toMatch(/actual time=/);
  });

  it('list_tables shows only what the table rules allow', async () => {
    const r = await env.call('list_tables', { database: 'shop' });
    const names = rowsOf(r).map((row) => `${row[0]}.${row[1]}`);
    expect(names).toContain('public.orders');
    expect(names).toContain('public.MixedCase');
    expect(names.some((n) => n.startsWith('secret.') || n.startsWith('sales.'))).toBe(false);
  });

  it('describe_table resolves the name as the search_path does and lists columns', async () => {
    const r = await env.call('describe_table', { database: 'shop', table: 'orders' });
    expect(r.structured?.table).toBe('public.orders');
    expect(rowsOf(r)[0]).toEqual(['id', 'bigint', false, null, true]);
    const mixed = await env.call('describe_table', { database: 'shop', table: '"MixedCase"' });
    expect(mixed.structured?.table).toBe('public.MixedCase');
    const denied = await env.call('describe_table', { database: 'shop', table: 'secret.payroll' });
    expect(denied.text).toMatch(/^denied: postgres\.databases\.shop\.tables: secret\.payroll/);
  });
});
