// The central audit shipper's lag (audit.postgres, a real cluster) reaches the collector as the
// airlock.audit.shipping.lag and .delay gauges, and the resource's service.instance.id is the
// broker id the audit records carry.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgresCluster, type PostgresCluster } from '../../src/demo/postgres-cluster.js';
import { auditRecords, runCli, waitFor } from '../approvals/helpers.js';
import { startCollector, type Collector } from './collector.js';
import { startTelemetryServe, telemetryYaml, type ServeSetup } from './helpers.js';

let cluster: PostgresCluster;
let collector: Collector;
let serve: ServeSetup;

beforeAll(async () => {
  cluster = await startPostgresCluster();
  await cluster.admin('CREATE DATABASE fleet');
  collector = await startCollector();
  serve = await startTelemetryServe({
    telemetryYaml: telemetryYaml(collector.endpoint, 'http/json'),
    secrets: {
      'pg-audit': cluster.url({
        user: cluster.superuser,
        password: cluster.superPassword,
        database: 'fleet',
      }),
    },
    auditYaml: '  postgres: { connection: pg-audit }\n',
    beforeServe: async (inst) => {
      const r = await runCli(['audit', 'migrate', '--config', inst.configFile]);
      expect(r.code, r.stderr).toBe(0);
    },
  });
}, 120_000);

afterAll(async () => {
  await serve?.stop();
  await collector?.close();
  await cluster?.close();
});

describe('audit shipping telemetry', () => {
  it('exports the shipping lag, which falls to 0 once the records are in the table', async () => {
    const r = (await serve.client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${serve.upstream.origin}/v1/shipped` },
    })) as CallToolResult;
    expect(r.isError).toBeFalsy();
    const records = await auditRecords(serve.inst);
    const seq = records.at(-1)!.seq;
    const table = new pg.Client({
      host: cluster.socketDir,
      port: cluster.port,
      user: cluster.superuser,
      password: cluster.superPassword,
      database: 'fleet',
    });
    await table.connect();
    try {
      await waitFor(`record ${seq} in the table`, async () => {
        const { rows } = await table.query<{ seq: string | null }>(
          'SELECT max(seq)::text AS seq FROM airlock_audit',
        );
        return Number(rows[0]?.seq ?? 0) >= seq ? true : undefined;
      });
    } finally {
      await table.end();
    }
    // Exports from now on: the records were shipped before them.
    const since = collector.requests.length;
    const lag = await waitFor('a lag exported after shipping', () =>
      collector.metricPoints('airlock.audit.shipping.lag', since).at(-1),
    );
    expect(lag.value).toBe(0);
    expect(lag).toBeDefined();
    expect(collector.metricNames()).toContain('airlock.audit.shipping.delay');
    // The broker id of the records is the resource's service.instance.id.
    const broker = records.at(-1)!.broker;
    expect(typeof broker).toBe('string');
    const span = await waitFor('the span of the call', () => collector.spans().at(-1));
    expect(span.resource['service.instance.id']).toBe(broker);
  });
});
