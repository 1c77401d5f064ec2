// TLS options in the connection URL are honoured: against a cluster that refuses TCP without TLS,
// `sslmode=verify-full&sslrootcert=…` connects (and the session really is encrypted, as
// pg_stat_ssl says), while the same URL without them is refused by the server.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startPostgresCluster, type PostgresCluster } from '../../src/demo/postgres-cluster.js';
import { AGENT_PASSWORD, AGENT_ROLE, startPgBroker, type PgBroker } from './context.js';

let cluster: PostgresCluster;
let env: PgBroker;

beforeAll(async () => {
  cluster = await startPostgresCluster({ tls: true });
  await cluster.admin('CREATE DATABASE shop');
  await cluster.admin(`CREATE ROLE ${AGENT_ROLE} LOGIN PASSWORD '${AGENT_PASSWORD}'`);
  const url = cluster.url({ user: AGENT_ROLE, password: AGENT_PASSWORD, database: 'shop' });
  env = await startPgBroker({
    cluster,
    secrets: {
      'pg-tls': `${url}?sslmode=verify-full&sslrootcert=${encodeURIComponent(cluster.caFile!)}`,
      'pg-plain': url,
    },
    policy: `team: acme
servers:
  postgres:
    databases:
      tls: { connection: pg-tls }
      plain: { connection: pg-plain }
    tools:
      query: {}
`,
  });
});
afterAll(async () => {
  await env?.close();
  await cluster?.close();
});

it('connects with the URL TLS options, encrypted', async () => {
  const r = await env.call('query', { database: 'tls', sql: 'SELECT current_user AS who' });
  expect(r.isError, r.text).toBe(false);
  expect(r.structured?.rows).toEqual([[AGENT_ROLE]]);
  // The broker's pooled connection, seen from the server: TLS 1.2 or 1.3.
  const seen = await env.admin.query(
    `SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = $1`,
    [AGENT_ROLE],
  );
  expect(seen.rows.length).toBeGreaterThan(0);
  for (const row of seen.rows) {
    expect(row.ssl).toBe(true);
    expect(row.version).toMatch(/^TLSv1\.[23]$/);
  }
});

it('without them the server refuses the connection', async () => {
  const r = await env.call('query', { database: 'plain', sql: 'SELECT 1' });
  expect(r.isError).toBe(true);
  expect(r.text).toMatch(/^error: cannot connect to database "plain" \(28000\): .*no encryption/);
  expect(r.text).not.toContain(AGENT_PASSWORD);
});
