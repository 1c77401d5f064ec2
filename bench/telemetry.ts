// What OpenTelemetry costs a tools/call: the same http_request through two `airlock serve`
// processes side by side, one without `telemetry:` (off) and one exporting every span and metric
// over OTLP/HTTP protobuf to a loopback collector (on), against a direct request to the same
// upstream (baseline), in one run. Rounds alternate between the brokers so that drift in the
// machine's load falls on both alike; CPU per call is read from each broker's /proc entry.
//
//   npm run build && node dist/bench/telemetry.js [--calls 2000] [--sessions 16] [--rounds 3]
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { load, percentile, processCpuMs, RawMcpSession, startServe, stopServe } from './harness.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '2000' },
    sessions: { type: 'string', default: '16' },
    sequential: { type: 'string', default: '500' },
    rounds: { type: 'string', default: '3' },
    'audit-dir': { type: 'string' },
  },
});
const CALLS = Number(values.calls);
const SESSIONS = Number(values.sessions);
const SEQUENTIAL = Number(values.sequential);
const ROUNDS = Number(values.rounds);

const UPSTREAM_SOURCE = `
const http = require('node:http');
const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => { res.setHeader('content-type', 'application/json'); res.end('{"ok":true,"items":[1,2,3]}'); });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
`;
// A collector that takes every export (and counts its bytes, asked with a line on stdin).
const COLLECTOR_SOURCE = `
const http = require('node:http');
let bytes = 0, requests = 0;
const server = http.createServer((req, res) => {
  req.on('data', (c) => (bytes += c.length));
  req.on('end', () => { requests++; res.writeHead(200, { 'content-type': 'application/x-protobuf' }); res.end(); });
});
process.stdin.on('data', () => process.stdout.write(requests + ' ' + bytes + '\\n'));
server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
`;

function child(source: string) {
  const proc = spawn(process.execPath, ['-e', source], { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = () =>
    new Promise<string>((resolve) => proc.stdout!.once('data', (d: Buffer) => resolve(d.toString().trim())));
  return { proc, line };
}

interface Broker {
  name: string;
  pid: number;
  clients: RawMcpSession[];
  stop(): Promise<void>;
}

async function main(): Promise<void> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'al-bench-otel-'));
  const auditRoot = values['audit-dir'] ? await mkdtemp(path.join(values['audit-dir'], 'al-otel-')) : root;
  const upstream = child(UPSTREAM_SOURCE);
  const origin = `http://127.0.0.1:${await upstream.line()}`;
  const collector = child(COLLECTOR_SOURCE);
  const collectorEndpoint = `http://127.0.0.1:${await collector.line()}`;
  const collectorStats = async () => {
    const answer = collector.line();
    collector.proc.stdin!.write('\n');
    const [requests, bytes] = (await answer).split(' ').map(Number) as [number, number];
    return { requests, bytes };
  };

  const startBroker = async (name: string, telemetry: string): Promise<Broker> => {
    const dir = path.join(root, name);
    await mkdir(path.join(dir, 'policies'), { recursive: true });
    await writeFile(path.join(dir, 'token'), 'bench-secret-token-value-123456\n', { mode: 0o600 });
    await writeFile(
      path.join(dir, 'airlock.yaml'),
      `socketDir: ${dir}/run\nstateDir: ${dir}/state\npolicies: ./policies\naudit:\n  file: ${auditRoot}/${name}-audit.jsonl\n` +
        `secrets:\n  token: { file: ./token }\n${telemetry}`,
    );
    await writeFile(
      path.join(dir, 'policies/bench.yaml'),
      `team: bench\nservers:\n  http:\n    hosts:\n      - origin: ${origin}\n        methods: [GET]\n        paths: ["/v1/**"]\n        inject: { header: Authorization, value: "Bearer \${secret:token}" }\n        allowPrivateAddress: true\n    tools:\n      http_request: {}\n`,
    );
    const socketPath = path.join(dir, 'run/bench/http.sock');
    const proc = await startServe(path.join(dir, 'airlock.yaml'), socketPath);
    const clients: RawMcpSession[] = [];
    for (let i = 0; i < SESSIONS; i++) clients.push(await RawMcpSession.open(socketPath));
    return {
      name,
      pid: proc.pid!,
      clients,
      async stop() {
        for (const c of clients) c.close();
        await stopServe(proc);
      },
    };
  };
  const off = await startBroker('off', '');
  const on = await startBroker(
    'on',
    `telemetry:\n  otlp: { endpoint: "${collectorEndpoint}", protocol: http/protobuf }\n  exportIntervalMs: 1000\n`,
  );

  // A client span in every request, as an instrumented agent would send.
  const meta = { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' };
  const viaAirlock = (client: RawMcpSession) => async () => {
    const r = (await client.request('tools/call', {
      name: 'http_request',
      arguments: { method: 'GET', url: `${origin}/v1/items` },
      _meta: meta,
    })) as CallToolResult;
    if (r.isError) throw new Error(JSON.stringify(r.content));
  };
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const direct = () =>
    new Promise<void>((resolve, reject) => {
      const req = http.request(
        `${origin}/v1/items`,
        { agent, headers: { authorization: 'Bearer x' } },
        (res) => {
          res.resume();
          res.on('end', resolve);
        },
      );
      req.on('error', reject);
      req.end();
    });

  for (const b of [off, on]) await load([viaAirlock(b.clients[0]!)], 300); // JIT, connections
  await load([direct], 300);

  const sequential = new Map<string, number[]>([
    ['baseline', []],
    ['off', []],
    ['on', []],
  ]);
  const concurrent = new Map<string, { latencies: number[]; cpuMs: number; wallMs: number }>([
    ['baseline', { latencies: [], cpuMs: 0, wallMs: 0 }],
    ['off', { latencies: [], cpuMs: 0, wallMs: 0 }],
    ['on', { latencies: [], cpuMs: 0, wallMs: 0 }],
  ]);
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate which broker goes first.
    const order = round % 2 === 0 ? [off, on] : [on, off];
    sequential.get('baseline')!.push(...(await load([direct], SEQUENTIAL)).latencies);
    for (const b of order)
      sequential.get(b.name)!.push(...(await load([viaAirlock(b.clients[0]!)], SEQUENTIAL)).latencies);
    const base = await load(
      Array.from({ length: SESSIONS }, () => direct),
      CALLS,
    );
    concurrent.get('baseline')!.latencies.push(...base.latencies);
    concurrent.get('baseline')!.wallMs += base.wallMs;
    for (const b of order) {
      const cpu = processCpuMs(b.pid);
      const run = await load(b.clients.map(viaAirlock), CALLS);
      const entry = concurrent.get(b.name)!;
      entry.cpuMs += processCpuMs(b.pid) - cpu;
      entry.latencies.push(...run.latencies);
      entry.wallMs += run.wallMs;
    }
  }
  // Let the last metric export and span batches go out before reading the collector.
  await new Promise((r) => setTimeout(r, 6000));
  const exported = await collectorStats();

  const p50 = (xs: number[]) =>
    percentile(
      [...xs].sort((a, b) => a - b),
      0.5,
    );
  const p99 = (xs: number[]) =>
    percentile(
      [...xs].sort((a, b) => a - b),
      0.99,
    );
  const total = CALLS * ROUNDS;
  console.log(
    `telemetry cost — ${os.cpus().length} cores, node ${process.version}, ${ROUNDS} alternating rounds, ` +
      `${SEQUENTIAL} sequential + ${CALLS} calls on ${SESSIONS} sessions per round, audit in ${auditRoot}`,
  );
  console.log(
    'case'.padEnd(30),
    '1-session p50'.padStart(14),
    `${SESSIONS}-session p50`.padStart(15),
    'p99'.padStart(8),
    'calls/s'.padStart(9),
    'CPU ms/call'.padStart(12),
  );
  for (const [name, label] of [
    ['baseline', 'direct request (baseline)'],
    ['off', 'airlock, telemetry off'],
    ['on', 'airlock, telemetry on (OTLP)'],
  ] as const) {
    const c = concurrent.get(name)!;
    console.log(
      label.padEnd(30),
      p50(sequential.get(name)!).toFixed(3).padStart(14),
      p50(c.latencies).toFixed(3).padStart(15),
      p99(c.latencies).toFixed(3).padStart(8),
      ((c.latencies.length / c.wallMs) * 1000).toFixed(0).padStart(9),
      (name === 'baseline' ? '-' : (c.cpuMs / total).toFixed(3)).padStart(12),
    );
  }
  const cOff = concurrent.get('off')!;
  const cOn = concurrent.get('on')!;
  console.log(
    `telemetry on − off: CPU ${((cOn.cpuMs - cOff.cpuMs) / total).toFixed(3)} ms a call ` +
      `(${(((cOn.cpuMs - cOff.cpuMs) / cOff.cpuMs) * 100).toFixed(1)}%), 1-session p50 ` +
      `${(p50(sequential.get('on')!) - p50(sequential.get('off')!)).toFixed(3)} ms; ` +
      `collector got ${exported.requests} exports, ${(exported.bytes / 1024).toFixed(0)} KiB ` +
      `(${(exported.bytes / (total + SEQUENTIAL * ROUNDS + 300)).toFixed(0)} bytes a call)`,
  );
  await off.stop();
  await on.stop();
  upstream.proc.kill();
  collector.proc.kill();
  await rm(root, { recursive: true, force: true });
  if (auditRoot !== root) await rm(auditRoot, { recursive: true, force: true });
}

await main();
