// sampleRatio decides for traces that start at the broker, the client's sampled flag for its own;
// metrics count every call either way. A header secret that does not resolve leaves telemetry off.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { describe, expect, it } from 'vitest';
import { sleep, waitFor } from '../approvals/helpers.js';
import { startCollector } from './collector.js';
import { clientSpan, startTelemetryServe, telemetryYaml } from './helpers.js';

describe('sampling', () => {
  it('sampleRatio 0 keeps no trace of its own, follows a sampled client span, and counts every call', async () => {
    const collector = await startCollector();
    const serve = await startTelemetryServe({
      telemetryYaml: telemetryYaml(collector.endpoint, 'http/json', '  sampleRatio: 0'),
    });
    try {
      const call = async (meta?: Record<string, string>) => {
        const r = (await serve.client.callTool({
          name: 'http_request',
          arguments: { method: 'GET', url: `${serve.upstream.origin}/v1/s` },
          ...(meta ? { _meta: meta } : {}),
        })) as CallToolResult;
        expect(r.isError).toBeFalsy();
      };
      const sampled = clientSpan();
      const unsampled = clientSpan();
      await call();
      await call({ traceparent: unsampled.traceparent.replace(/-01$/, '-00') });
      await call({ traceparent: sampled.traceparent });
      await waitFor('metrics counting the three calls', () =>
        collector.metricPoints('airlock.calls').some((p) => p.value === 3) ? true : undefined,
      );
      await waitFor('the sampled span', () => collector.spans().find((s) => s.traceId === sampled.traceId));
      await sleep(500); // more span batches, had there been more spans
      const spans = collector.spans();
      expect(spans.map((s) => s.traceId)).toEqual([sampled.traceId]);
      expect(spans[0]!.parentSpanId).toBe(sampled.spanId);
    } finally {
      await serve.stop();
      await collector.close();
    }
  });
});

describe('a header secret that does not resolve', () => {
  it('leaves telemetry off, says so, and calls still work', async () => {
    const collector = await startCollector();
    const serve = await startTelemetryServe({
      telemetryYaml: telemetryYaml(collector.endpoint, 'http/json').replace(
        'headers: { authorization: otlp-token }',
        'headers: { authorization: unset-token }',
      ),
      beforeServe: async (inst) => {
        const { readFile, writeFile } = await import('node:fs/promises');
        // A secret whose environment variable the broker does not have.
        const text = await readFile(inst.configFile, 'utf8');
        await writeFile(
          inst.configFile,
          text.replace(/^secrets:\n/m, 'secrets:\n  unset-token: { env: AIRLOCK_TEST_UNSET_OTLP }\n'),
        );
      },
    });
    try {
      const r = (await serve.client.callTool({
        name: 'http_request',
        arguments: { method: 'GET', url: `${serve.upstream.origin}/v1/s` },
      })) as CallToolResult;
      expect(r.isError).toBeFalsy();
    } finally {
      await serve.stop();
      await collector.close();
    }
    expect(serve.log()).toMatch(
      /telemetry is off: the secret of a telemetry.otlp.headers entry does not resolve/,
    );
    expect(collector.requests).toEqual([]);
  });
});
