// The demo's Postgres part: a throwaway cluster (system binaries or the npm package's, so a
// fresh machine needs only `npm ci`) with a small shop database, a least-privilege role whose
// URL is a secret the agent never sees, and the agent's allowed and refused queries.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import type { AgentStep, StepReport } from './agent.js';
import { startPostgresCluster, type PostgresCluster } from './postgres-cluster.js';

const ROLE = 'demo_agent';
/** Rows SHOP puts in orders; the refused write must leave them all. */
const SHOP_ORDERS = 12;

/** The same shape as the demo's parts (index.ts): steps, what each must do, host-side checks. */
export interface PostgresPart {
  steps: AgentStep[];
  expectations: Array<{
    label: string;
    expect: 'ok' | 'denied' | 'done';
    verify?: (step: StepReport) => string | undefined;
    show?: (step: StepReport) => string;
  }>;
  after: () => Promise<string[]>;
}

export interface DemoPostgres {
  cluster: PostgresCluster;
  /** The role's password: registered with the demo's leak check. */
  password: string;
  /** The airlock.yaml line for the connection secret. */
  secretLine: string;
  /** The team policy's postgres section. */
  policy: string;
  part(socket: string, fail: (problem: string) => void): PostgresPart;
  close(): Promise<void>;
}

const SHOP = `
  CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, country text);
  CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int REFERENCES customers(id),
                       total numeric(10,2) NOT NULL, status text NOT NULL, placed_at timestamptz NOT NULL);
  CREATE SCHEMA hr;
  CREATE TABLE hr.salaries (employee text, salary numeric);
  INSERT INTO customers VALUES (1, 'Ada', 'UK'), (2, 'Grace', 'US'), (3, 'Linus', 'FI');
  INSERT INTO orders SELECT g, 1 + g % 3, 19.99 * g, (ARRAY['paid','shipped','refunded'])[1 + g % 3],
                            timestamptz '2026-11-01 09:00:00+00' + g * interval '7 hours'
                       FROM generate_series(1, 12) g;
  INSERT INTO hr.salaries VALUES ('Ada', 185000), ('Grace', 190000);
`;

/** Starts the cluster and writes the role's URL as a 0600 secret file in `secretsDir`. */
export async function startDemoPostgres(secretsDir: string, team: string): Promise<DemoPostgres> {
  const cluster = await startPostgresCluster();
  try {
    const password = `pg-demo-${randomBytes(12).toString('hex')}`;
    await cluster.admin('CREATE DATABASE shop');
    await cluster.admin(SHOP, 'shop');
    // Least privilege, as the README recommends: the role can only read; Airlock is not alone.
    await cluster.admin(
      `CREATE ROLE ${ROLE} LOGIN PASSWORD '${password}';
       REVOKE CREATE ON SCHEMA public FROM PUBLIC;
       GRANT USAGE ON SCHEMA public, hr TO ${ROLE};
       GRANT SELECT ON ALL TABLES IN SCHEMA public, hr TO ${ROLE};`,
      'shop',
    );
    const url = cluster.url({ user: ROLE, password, database: 'shop' });
    await fs.writeFile(path.join(secretsDir, 'pg-shop'), url + '\n', { mode: 0o600 });
    const adminUrl = cluster.url({
      user: cluster.superuser,
      password: cluster.superPassword,
      database: 'shop',
    });
    return {
      cluster,
      password,
      secretLine: `  pg-shop: { file: ./secrets/pg-shop, teams: [${team}] }`,
      policy: `  postgres:
    databases:
      shop:
        connection: pg-shop     # secret holding the postgres:// URL
        tables: ["public.*"]    # hr.* is not for the agent
        maxRows: 100
        statementTimeoutMs: 3000
    tools:
      list_tables: {}
      describe_table: {}
      query: {}
      explain: {}
`,
      part: (socket, fail) => postgresPart(socket, fail, adminUrl),
      close: () => cluster.close(),
    };
  } catch (err) {
    await cluster.close();
    throw err;
  }
}

function postgresPart(socket: string, fail: (problem: string) => void, adminUrl: string): PostgresPart {
  const query = (label: string, sql: string): AgentStep => ({
    kind: 'call',
    label,
    socket,
    tool: 'query',
    arguments: { database: 'shop', sql },
  });
  const steps: AgentStep[] = [
    { kind: 'tools', label: 'postgres: tools/list', socket },
    { kind: 'call', label: 'list_tables shop', socket, tool: 'list_tables', arguments: { database: 'shop' } },
    query(
      'SELECT revenue by status',
      'SELECT status, count(*) AS orders, sum(total) AS revenue FROM orders GROUP BY status ORDER BY status',
    ),
    query('DELETE FROM orders (a write)', 'DELETE FROM orders WHERE id = 1'),
    query('SELECT 1; DROP TABLE orders (stacked)', 'SELECT 1; DROP TABLE orders'),
    query("SELECT pg_read_file('/etc/passwd') (function)", "SELECT pg_read_file('/etc/passwd')"),
    query('SELECT * FROM hr.salaries (table outside the globs)', 'SELECT * FROM hr.salaries'),
  ];
  const rows = (s: StepReport) => ((s.structured as { rows?: unknown[][] }).rows ?? []) as unknown[][];
  const count = async () => {
    const client = new pg.Client({ connectionString: adminUrl });
    await client.connect();
    try {
      return Number((await client.query('SELECT count(*) AS n FROM orders')).rows[0].n);
    } finally {
      await client.end();
    }
  };
  return {
    steps,
    expectations: [
      {
        label: 'postgres: tools/list',
        expect: 'done',
        show: (s) => `tools offered: ${(s.tools ?? []).join(', ')}`,
      },
      {
        label: 'list_tables shop',
        expect: 'ok',
        verify: (s) => (rows(s).some((r) => r[0] === 'hr') ? 'hr.salaries was listed' : undefined),
        show: (s) =>
          rows(s)
            .map((r) => `${r[0]}.${r[1]}`)
            .join(', '),
      },
      {
        label: steps[2]!.label,
        expect: 'ok',
        verify: (s) => (rows(s).length === 3 ? undefined : `expected 3 statuses, got ${rows(s).length}`),
        show: (s) =>
          rows(s)
            .map((r) => `${r[0]} ${r[1]} = ${r[2]}`)
            .join(', '),
      },
      { label: steps[3]!.label, expect: 'denied' },
      { label: steps[4]!.label, expect: 'denied' },
      { label: steps[5]!.label, expect: 'denied' },
      { label: steps[6]!.label, expect: 'denied' },
    ],
    after: async () => {
      const now = await count();
      if (now !== SHOP_ORDERS) fail(`the orders table changed: ${now} rows, expected ${SHOP_ORDERS}`);
      return [`postgres: the role's password stayed in a host secret; orders still holds ${now} rows`];
    },
  };
}
