// `airlock stdio` exports too: its span says network.transport pipe, and its one session is
// counted while open.
import { appendFile } from 'node:fs/promises';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { expect, it } from 'vitest';
import { waitFor } from '../approvals/helpers.js';
import { acmeHttpPolicy, CLI, makeInstallation, startEchoUpstream } from '../helpers/fixture.js';
import { startCollector } from './collector.js';
import { API_SECRET, clientSpan, COLLECTOR_TOKEN, telemetryYaml } from './helpers.js';

it('airlock stdio exports a pipe-transport span and counts its session', async () => {
  const collector = await startCollector();
  const upstream = await startEchoUpstream();
  const inst = await makeInstallation({
    secrets: { 'api-token': API_SECRET, 'otlp-token': COLLECTOR_TOKEN },
    policies: { 'acme.yaml': acmeHttpPolicy(upstream.origin) },
  });
  try {
    await appendFile(inst.configFile, telemetryYaml(collector.endpoint, 'http/json'));
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [CLI, 'stdio', 'http', '--team', 'acme', '--config', inst.configFile],
      env: { ...(process.env as Record<string, string>), AIRLOCK_LOG_LEVEL: 'warn' },
      stderr: 'ignore',
    });
    const client = new Client({ name: 'stdio-otel', version: '0' });
    await client.connect(transport);
    const parent = clientSpan();
    const r = (await client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${upstream.origin}/v1/stdio` },
      _meta: { traceparent: parent.traceparent },
    })) as CallToolResult;
    expect(r.isError).toBeFalsy();
    const open = await waitFor('the open session counted', () =>
      collector.metricPoints('airlock.sessions').find((p) => p.value === 1),
    );
    expect(open.attributes).toMatchObject({ 'airlock.team': 'acme', 'network.transport': 'pipe' });
    await client.close();
    const span = await waitFor('the stdio span', () =>
      collector.spans().find((s) => s.traceId === parent.traceId),
    );
    expect(span.parentSpanId).toBe(parent.spanId);
    expect(span.attributes).toMatchObject({
      'mcp.method.name': 'tools/call',
      'network.transport': 'pipe',
      'airlock.outcome': 'ok',
    });
    expect(span.attributes['mcp.session.id']).toMatch(/^[0-9a-f-]{36}$/);
  } finally {
    await upstream.close();
    await collector.close();
    await inst.cleanup();
  }
});
