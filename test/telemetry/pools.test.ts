// Pool gauges from a real `airlock serve`: a team's postgres pool (a real cluster) shows up as
// db.client.connection.count (used / idle) and db.client.connection.pending_requests.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgresCluster, type PostgresCluster } from '../../src/demo/postgres-cluster.js';
import { waitFor } from '../approvals/helpers.js';
import { startCollector, type Collector } from './collector.js';
import { startTelemetryServe, telemetryYaml, type ServeSetup } from './helpers.js';

const PASSWORD = 'pw-otel-Pool-8Hq2Lx9';

let cluster: PostgresCluster;
let collector: Collector;
let serve: ServeSetup;

beforeAll(async () => {
  cluster = await startPostgresCluster();
  await cluster.admin('CREATE DATABASE shop');
  await cluster.admin(
    `CREATE ROLE agent LOGIN PASSWORD '${PASSWORD}'; CREATE TABLE public.items (id int); GRANT SELECT ON public.items TO agent;`,
    'shop',
  );
  collector = await startCollector();
  serve = await startTelemetryServe({
    telemetryYaml: telemetryYaml(collector.endpoint, 'http/json'),
    server: {
      name: 'postgres',
      secrets: { 'pg-shop': cluster.url({ user: 'agent', password: PASSWORD, database: 'shop' }) },
      policy: [
        'team: acme',
        'servers:',
        '  postgres:',
        '    databases:',
        '      shop: { connection: pg-shop, tables: ["public.*"] }',
        '    tools:',
        '      query: {}',
        '',
      ].join('\n'),
    },
  });
}, 120_000);

afterAll(async () => {
  await serve?.stop();
  await collector?.close();
  await cluster?.close();
});

describe('postgres pool gauges', () => {
  it("report each team database pool's connections and waiting calls", async () => {
    const r = (await serve.client.callTool({
      name: 'query',
      arguments: { database: 'shop', sql: 'SELECT count(*) FROM public.items' },
    })) as CallToolResult;
    expect(r.isError, JSON.stringify(r.content)).toBeFalsy();
    // After the call its connection is back in the pool, idle.
    const idle = await waitFor('an idle connection in acme/shop', () =>
      collector
        .metricPoints('db.client.connection.count')
        .find(
          (p) =>
            p.attributes['db.client.connection.pool.name'] === 'acme/shop' &&
            p.attributes['db.client.connection.state'] === 'idle' &&
            p.value === 1,
        ),
    );
    expect(idle.attributes).toMatchObject({ 'airlock.team': 'acme', 'airlock.server': 'postgres' });
    const pending = collector
      .metricPoints('db.client.connection.pending_requests')
      .filter((p) => p.attributes['db.client.connection.pool.name'] === 'acme/shop');
    expect(pending.length).toBeGreaterThan(0);
    expect(pending.at(-1)!.value).toBe(0);
  });
});
