// Telemetry off (no `telemetry:` in airlock.yaml) costs nothing: `airlock serve` loads no
// @opentelemetry module at all (traced as test/cli/lazy.test.ts does), and nothing is sent even
// when the standard OTEL_* variables point at a collector.
import { readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/fixture.js';
import { startCollector, type Collector } from './collector.js';
import { startTelemetryServe, telemetryYaml, TRACER } from './helpers.js';

const CHUNKS = path.join(REPO_ROOT, 'dist/src/chunks/modules.json');
let bundled: Record<string, string[]>;
let collector: Collector;

beforeAll(async () => {
  bundled = JSON.parse(await readFile(CHUNKS, 'utf8')) as Record<string, string[]>;
  collector = await startCollector();
});
afterAll(() => collector?.close());

/** Runs `airlock serve` (traced), makes one call, stops it; the packages it loaded. */
async function packagesLoaded(telemetry: string | undefined): Promise<string[]> {
  const trace = path.join(os.tmpdir(), `airlock-otel-trace-${process.pid}-${Date.now()}.txt`);
  const serve = await startTelemetryServe({
    ...(telemetry ? { telemetryYaml: telemetry } : {}),
    nodeArgs: ['--import', TRACER],
    env: {
      AIRLOCK_TRACE_IMPORTS: trace,
      // Whatever these would make an SDK do, nothing may reach the collector while off.
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint,
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_METRIC_EXPORT_INTERVAL: '100',
      OTEL_BSP_SCHEDULE_DELAY: '100',
    },
  });
  try {
    const result = (await serve.client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${serve.upstream.origin}/v1/x` },
      _meta: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
    })) as CallToolResult;
    expect(result.isError).toBeFalsy();
  } finally {
    await serve.stop(); // a shutdown flushes whatever an exporter holds
  }
  const packages = new Set<string>();
  for (const url of (await readFile(trace, 'utf8')).trim().split('\n')) {
    for (const m of bundled[/\/dist\/src\/(.+)$/.exec(url)?.[1] ?? ''] ?? [])
      if (m.startsWith('pkg:')) packages.add(m.slice(4));
    const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1];
    if (pkg) packages.add(pkg);
  }
  await rm(trace, { force: true });
  return [...packages].sort();
}

describe('telemetry off', () => {
  it('airlock serve loads no @opentelemetry module and sends nothing', async () => {
    const packages = await packagesLoaded(undefined);
    expect(packages).toContain('@modelcontextprotocol/sdk'); // the trace sees packages
    expect(packages.filter((p) => p.startsWith('@opentelemetry/'))).toEqual([]);
    expect(collector.requests).toEqual([]);
  });

  it('with telemetry on, the same trace sees the SDK loaded (the check above can fail)', async () => {
    const packages = await packagesLoaded(telemetryYaml(collector.endpoint, 'http/json'));
    expect(packages).toEqual(
      expect.arrayContaining([
        '@opentelemetry/api',
        '@opentelemetry/sdk-trace-base',
        '@opentelemetry/sdk-metrics',
      ]),
    );
    expect(collector.requests.length).toBeGreaterThan(0);
  });
});
