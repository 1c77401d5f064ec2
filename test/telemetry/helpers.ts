// A real `airlock serve` process whose airlock.yaml exports to a collector stand-in, and an MCP
// client on team acme's http socket (the loopback echo upstream of test/helpers/fixture.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import {
  acmeHttpPolicy,
  CLI,
  connectSocketClient,
  makeInstallation,
  startEchoUpstream,
  type EchoUpstream,
  type Installation,
} from '../helpers/fixture.js';
import { sleep } from '../approvals/helpers.js';

export const TRACER = path.join(import.meta.dirname, '../cli/trace-imports.mjs');
/** Injected into every upstream request by the broker (the agent never sees it). */
export const API_SECRET = 'sk-live-TELEMETRY-CANARY-7f3a9c2e41b8';
/** Sent to the collector as a header; must appear in no payload. */
export const COLLECTOR_TOKEN = 'Bearer otlp-CANARY-d41d8cd98f00b204';

export interface ServeSetup {
  inst: Installation;
  upstream: EchoUpstream;
  child: ChildProcess;
  log(): string;
  client: Client;
  stop(): Promise<void>;
}

/**
 * A fresh installation (acme on the http server, `api-token` = API_SECRET, `otlp-token` =
 * COLLECTOR_TOKEN) with `telemetryYaml` appended to airlock.yaml, served by `airlock serve`.
 */
export async function startTelemetryServe(opts: {
  telemetryYaml?: string;
  env?: Record<string, string>;
  nodeArgs?: string[];
}): Promise<ServeSetup> {
  const upstream = await startEchoUpstream();
  const inst = await makeInstallation({
    secrets: { 'api-token': API_SECRET, 'otlp-token': COLLECTOR_TOKEN },
    policies: { 'acme.yaml': acmeHttpPolicy(upstream.origin) },
  });
  if (opts.telemetryYaml) await appendFile(inst.configFile, opts.telemetryYaml);
  const child = spawn(
    process.execPath,
    [...(opts.nodeArgs ?? []), CLI, 'serve', '--config', inst.configFile],
    {
      env: { ...process.env, AIRLOCK_LOG_LEVEL: 'warn', ...opts.env },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const socketPath = inst.socket('acme', 'http');
  const deadline = Date.now() + 20_000;
  while (
    !(await stat(socketPath).then(
      () => true,
      () => false,
    ))
  ) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      await upstream.close();
      await inst.cleanup();
      throw new Error(`airlock serve did not open its socket:\n${log}`);
    }
    await sleep(50);
  }
  const { client } = await connectSocketClient(socketPath);
  return {
    inst,
    upstream,
    child,
    log: () => log,
    client,
    async stop() {
      await client.close().catch(() => undefined);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      await upstream.close();
      await inst.cleanup();
    },
  };
}

export function telemetryYaml(endpoint: string, protocol: 'http/json' | 'http/protobuf', extra = ''): string {
  return [
    'telemetry:',
    '  otlp:',
    `    endpoint: ${endpoint}`,
    `    protocol: ${protocol}`,
    '    headers: { authorization: otlp-token }',
    '  serviceName: airlock-test',
    '  exportIntervalMs: 200',
    extra,
    '',
  ].join('\n');
}

/** A W3C traceparent of a sampled client span, with its ids. */
export function clientSpan(): { traceparent: string; traceId: string; spanId: string } {
  const traceId = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('hex');
  const spanId = Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString('hex');
  return { traceparent: `00-${traceId}-${spanId}-01`, traceId, spanId };
}
