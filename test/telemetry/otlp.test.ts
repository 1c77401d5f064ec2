// OpenTelemetry from a real `airlock serve`: spans and metrics reach a collector stand-in over
// OTLP/HTTP (JSON and protobuf), follow the MCP semantic conventions, take their parent from the
// request's `_meta.traceparent`, and never carry an argument value, a result or a secret.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../approvals/helpers.js';
import { startCollector, type CollectedSpan, type Collector } from './collector.js';
import {
  API_SECRET,
  clientSpan,
  COLLECTOR_TOKEN,
  startTelemetryServe,
  telemetryYaml,
  type ServeSetup,
} from './helpers.js';

/** Argument values no export may contain. */
const DISTINCT_PATH = 'zebra-quartz-8841';
const DISTINCT_HEADER = 'marmalade-umbrella-5512';
const DISTINCT_BODY = 'periwinkle-ostrich-0937';

function spanFor(collector: Collector, traceId: string): CollectedSpan | undefined {
  return collector.spans().find((s) => s.traceId === traceId);
}

describe('OTLP/HTTP JSON from airlock serve', () => {
  let collector: Collector;
  let serve: ServeSetup;
  const allowed = clientSpan();
  const slowPath = clientSpan();
  const denied = clientSpan();

  beforeAll(async () => {
    collector = await startCollector();
    serve = await startTelemetryServe({ telemetryYaml: telemetryYaml(collector.endpoint, 'http/json') });
    const origin = serve.upstream.origin;
    // An allowed call carrying the secret and distinctive values in every argument.
    const ok = (await serve.client.callTool({
      name: 'http_request',
      arguments: {
        method: 'POST',
        url: `${origin}/v1/${DISTINCT_PATH}?token=${API_SECRET}`,
        headers: { 'X-Note': DISTINCT_HEADER },
        body: `${DISTINCT_BODY} ${API_SECRET}`,
      },
      _meta: { traceparent: allowed.traceparent, tracestate: 'client=1' },
    })) as CallToolResult;
    expect(ok.isError).toBeFalsy();
    expect(serve.upstream.requests.at(-1)!.headers.authorization).toBe(`Bearer ${API_SECRET}`);
    // Another _meta key makes the session take the SDK's path instead of the fast path.
    const viaSdk = (await serve.client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${origin}/v1/${DISTINCT_PATH}` },
      _meta: { traceparent: slowPath.traceparent, 'example.com/other': 'x' },
    })) as CallToolResult;
    expect(viaSdk.isError).toBeFalsy();
    // Denied by policy: the path is outside /v1/**.
    const no = (await serve.client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${origin}/admin/${DISTINCT_PATH}` },
      _meta: { traceparent: denied.traceparent },
    })) as CallToolResult;
    expect(no.isError).toBe(true);
    // A call without trace context starts a trace of its own.
    await serve.client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${origin}/v1/plain` },
    });
    await waitFor('the spans of all four calls', () =>
      collector.spans().filter((s) => s.name === 'tools/call http_request').length >= 4 ? true : undefined,
    );
    // An export can land between two calls: wait for one that holds all four (3 allowed, 1 denied).
    await waitFor('metrics with all four calls', () => {
      const calls = collector.metricPoints('airlock.calls');
      const total = (decision: string) =>
        calls.filter((p) => p.attributes['airlock.decision'] === decision).at(-1)?.value ?? 0;
      const names = collector.metricNames();
      return total('allow') === 3 &&
        total('deny') === 1 &&
        names.has('airlock.sessions') &&
        names.has('airlock.audit.fsync.duration')
        ? true
        : undefined;
    });
  });

  afterAll(async () => {
    await serve?.stop();
    await collector?.close();
  });

  it('exports one SERVER span per tools/call with the MCP semantic-convention attributes', () => {
    const span = spanFor(collector, allowed.traceId)!;
    expect(span).toBeDefined();
    expect(span.name).toBe('tools/call http_request');
    expect(span.kind).toBe(2); // SERVER
    expect(span.attributes).toMatchObject({
      'mcp.method.name': 'tools/call',
      'gen_ai.tool.name': 'http_request',
      'gen_ai.operation.name': 'execute_tool',
      'network.transport': 'unix',
      'airlock.team': 'acme',
      'airlock.server': 'http',
      'airlock.decision': 'allow',
      'airlock.outcome': 'ok',
    });
    expect(span.attributes['mcp.session.id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(span.attributes['jsonrpc.request.id']).toMatch(/^\d+$/);
    expect(span.attributes['error.type']).toBeUndefined();
    expect(span.statusCode).toBe(0);
    expect(span.resource).toMatchObject({
      'service.name': 'airlock-test',
      'service.version': expect.any(String),
      'service.instance.id': expect.any(String),
      'host.name': expect.any(String),
    });
    // One span per call: every call's span is its own.
    const ids = collector.spans().map((s) => s.spanId);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("takes the client's span from params._meta.traceparent as the parent, on both call paths", () => {
    for (const client of [allowed, slowPath, denied]) {
      const span = spanFor(collector, client.traceId);
      expect(span, client.traceparent).toBeDefined();
      expect(span!.parentSpanId).toBe(client.spanId);
    }
    const own = collector
      .spans()
      .filter((s) => ![allowed, slowPath, denied].some((c) => c.traceId === s.traceId));
    expect(own.length).toBeGreaterThan(0);
    for (const s of own) expect(s.parentSpanId).toBe('');
  });

  it('marks a denied call with its decision, outcome and error.type', () => {
    const span = spanFor(collector, denied.traceId)!;
    expect(span.attributes).toMatchObject({
      'airlock.decision': 'deny',
      'airlock.outcome': 'denied',
      'error.type': 'tool_error',
    });
    expect(span.statusCode).toBe(2);
  });

  it('exports the call, denial, latency, fsync and session metrics', () => {
    const names = collector.metricNames();
    for (const name of [
      'airlock.calls',
      'airlock.denials',
      'mcp.server.operation.duration',
      'airlock.audit.fsync.duration',
      'airlock.sessions',
    ])
      expect(names, name).toContain(name);
    const calls = collector.metricPoints('airlock.calls');
    const last = (decision: string) =>
      calls.filter((p) => p.attributes['airlock.decision'] === decision).at(-1)?.value ?? 0;
    // Cumulative counters: the latest export holds the totals.
    expect(last('allow')).toBe(3);
    expect(last('deny')).toBe(1);
    expect(calls.at(-1)!.attributes).toMatchObject({
      'airlock.team': 'acme',
      'airlock.server': 'http',
      'gen_ai.tool.name': 'http_request',
    });
    expect(collector.metricPoints('airlock.denials').at(-1)?.value).toBe(1);
    expect(collector.metricPoints('airlock.sessions').at(-1)?.value).toBe(1);
    expect(collector.metricPoints('airlock.audit.fsync.duration').at(-1)?.value).toBeGreaterThan(0);
  });

  it('sends the configured header, and no payload holds an argument value, a result or a secret', () => {
    expect(collector.requests.length).toBeGreaterThan(0);
    for (const r of collector.requests) {
      expect(r.contentType).toBe('application/json');
      expect(r.headers.authorization).toBe(COLLECTOR_TOKEN);
      const body = r.body.toString('utf8');
      for (const forbidden of [
        API_SECRET,
        COLLECTOR_TOKEN,
        'otlp-CANARY',
        DISTINCT_PATH,
        DISTINCT_HEADER,
        DISTINCT_BODY,
        serve.upstream.origin, // the URL argument
        'X-Note',
        'x-note', // the echoed result
      ])
        expect(body, `${r.path} holds ${forbidden}`).not.toContain(forbidden);
    }
  });
});

describe('OTLP/HTTP protobuf (the default protocol)', () => {
  it('arrives as application/x-protobuf with the span, its parent and the metrics', async () => {
    const collector = await startCollector();
    const serve = await startTelemetryServe({
      telemetryYaml: [
        'telemetry:',
        '  otlp:',
        `    endpoint: ${collector.endpoint}/`,
        '    headers: { authorization: otlp-token }',
        '  exportIntervalMs: 200',
        '',
      ].join('\n'),
    });
    try {
      const parent = clientSpan();
      await serve.client.callTool({
        name: 'http_request',
        arguments: { method: 'GET', url: `${serve.upstream.origin}/v1/${DISTINCT_PATH}?k=${API_SECRET}` },
        _meta: { traceparent: parent.traceparent },
      });
      const span = await waitFor('the protobuf span', () => spanFor(collector, parent.traceId));
      expect(span.name).toBe('tools/call http_request');
      expect(span.kind).toBe(2);
      expect(span.parentSpanId).toBe(parent.spanId);
      expect(span.attributes).toMatchObject({
        'mcp.method.name': 'tools/call',
        'gen_ai.tool.name': 'http_request',
        'airlock.decision': 'allow',
        'airlock.outcome': 'ok',
      });
      expect(span.resource['service.name']).toBe('airlock');
      await waitFor('protobuf metrics', () =>
        collector.metricNames().has('airlock.calls') ? true : undefined,
      );
      expect(collector.metricNames()).toContain('mcp.server.operation.duration');
      for (const r of collector.requests) {
        expect(r.contentType).toBe('application/x-protobuf');
        for (const forbidden of [API_SECRET, COLLECTOR_TOKEN, DISTINCT_PATH, serve.upstream.origin])
          expect(r.body.includes(Buffer.from(forbidden)), `${r.path} holds ${forbidden}`).toBe(false);
      }
    } finally {
      await serve.stop();
      await collector.close();
    }
  });
});
