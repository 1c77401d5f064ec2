// Per-call overhead of http_request through socket + broker + durable audit, against a direct
// request to the same loopback upstream, in one run. The broker runs as its own process (as in
// production); clients are MCP SDK Clients on the Unix socket.
//
//   npm run build && node dist/bench/http.js [--calls 3000] [--sessions 64] [--audit-dir DIR]
//     [--baseline-cli OTHER/dist/src/cli.js [--rounds 5]]
// --baseline-cli also runs another build's broker (e.g. main's) against the same upstream and audit
// disk, in alternating rounds with this one, and prints both and their ratios: the way to judge a
// change on a machine whose speed drifts.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import {
  fdatasyncMs,
  brokerMemory,
  load,
  median,
  processCpuMs,
  RawMcpSession,
  startServe,
  stats,
  stopServe,
  type Stats,
} from './harness.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '4000' },
    sessions: { type: 'string', default: '64' },
    sequential: { type: 'string', default: '1000' },
    // Where the audit log lives. Its fdatasync is the floor of the per-call overhead (two durable
    // records per call), so the bench can also show the broker without that floor (/dev/shm).
    'audit-dir': { type: 'string' },
    'baseline-cli': { type: 'string' },
    // The broker's build (default: this one), e.g. for bench:profile of another build.
    cli: { type: 'string' },
    rounds: { type: 'string', default: '5' },
  },
});
const CALLS = Number(values.calls);
const SESSIONS = Number(values.sessions);
const SEQUENTIAL = Number(values.sequential);

// Counts the TCP connections it accepts (asked with a line on stdin): a pool that closes and
// reopens connections under load shows as connections far above the concurrency.
const UPSTREAM_SOURCE = `
const http = require('node:http');
let connections = 0;
const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => { res.setHeader('content-type', 'application/json'); res.end('{"ok":true,"items":[1,2,3]}'); });
});
server.on('connection', () => connections++);
process.stdin.on('data', () => process.stdout.write(connections + '\\n'));
server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
`;

async function main(): Promise<void> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'al-bench-'));
  const auditDir = values['audit-dir']
    ? await mkdtemp(path.join(values['audit-dir'], 'al-bench-audit-'))
    : `${root}/audit`;
  // The upstream runs in its own process, as a real API would: neither path gets to share an
  // event loop with it.
  const upstream = spawn(process.execPath, ['-e', UPSTREAM_SOURCE], { stdio: ['pipe', 'pipe', 'inherit'] });
  const upstreamLine = () =>
    new Promise<number>((resolve) =>
      upstream.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))),
    );
  const port = await upstreamLine();
  const upstreamConnections = () => {
    const answer = upstreamLine();
    upstream.stdin!.write('\n');
    return answer;
  };
  const origin = `http://127.0.0.1:${port}`;

  /** An installation under `dir` (audit file `audit`) and its broker, running `cli`. */
  const startBroker = async (dir: string, audit: string, cli?: string) => {
    await mkdir(path.join(dir, 'policies'), { recursive: true });
    await writeFile(path.join(dir, 'token'), 'bench-secret-token-value-123456\n', { mode: 0o600 });
    await writeFile(
      path.join(dir, 'airlock.yaml'),
      `socketDir: ${dir}/run\nstateDir: ${dir}/state\npolicies: ./policies\naudit:\n  file: ${audit}\nsecrets:\n  token: { file: ./token }\n`,
    );
    await writeFile(
      path.join(dir, 'policies/bench.yaml'),
      `team: bench\nservers:\n  http:\n    hosts:\n      - origin: ${origin}\n        methods: [GET]\n        paths: ["/v1/**"]\n        inject: { header: Authorization, value: "Bearer \${secret:token}" }\n        allowPrivateAddress: true\n    tools:\n      http_request: {}\n`,
    );
    const socket = path.join(dir, 'run/bench/http.sock');
    return { broker: await startServe(path.join(dir, 'airlock.yaml'), socket, cli), socket };
  };
  const { broker, socket: socketPath } = await startBroker(root, `${auditDir}/audit.jsonl`, values.cli);

  // A minimal JSON-RPC client (handshake, then tools/call by id): the bench measures the broker,
  // not the CPU an MCP SDK client spends validating responses in the same 2-core machine.
  const rssIdle = brokerMemory(broker.pid!);
  const clients: RawMcpSession[] = [];
  for (let i = 0; i < SESSIONS; i++) clients.push(await RawMcpSession.open(socketPath));
  const rssSessions = brokerMemory(broker.pid!);
  const viaAirlock = (client: RawMcpSession) => async () => {
    const r = (await client.request('tools/call', {
      name: 'http_request',
      arguments: { method: 'GET', url: `${origin}/v1/items` },
    })) as CallToolResult;
    if (r.isError) throw new Error(JSON.stringify(r.content));
  };
  // The baseline makes the same request the broker makes, over a keep-alive pool as the broker does.
  const directAgent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const direct = () =>
    new Promise<void>((resolve, reject) => {
      const req = http.request(
        `${origin}/v1/items`,
        { agent: directAgent, headers: { authorization: 'Bearer x' } },
        (res) => {
          res.resume();
          res.on('end', resolve);
        },
      );
      req.on('error', reject);
      req.end();
    });

  // Warm up both paths (JIT, connection setup).
  await load([viaAirlock(clients[0]!)], 200);
  await load([direct], 200);

  const seqDirect = await load([direct], SEQUENTIAL);
  const cpuBeforeSeq = processCpuMs(broker.pid!);
  const seqAirlock = await load([viaAirlock(clients[0]!)], SEQUENTIAL);
  const cpuPerSeqCall = (processCpuMs(broker.pid!) - cpuBeforeSeq) / SEQUENTIAL;
  const conDirect = await load(
    Array.from({ length: SESSIONS }, () => direct),
    CALLS,
  );
  const cpuBefore = processCpuMs(broker.pid!);
  const connectionsBefore = await upstreamConnections();
  const conAirlock = await load(clients.map(viaAirlock), CALLS);
  const cpuPerCall = (processCpuMs(broker.pid!) - cpuBefore) / CALLS;
  const brokerConnections = (await upstreamConnections()) - connectionsBefore;
  await mkdir(auditDir, { recursive: true });
  const syncMs = await fdatasyncMs(auditDir);

  const rows: Array<[string, Stats]> = [
    [`direct, 1 at a time (${SEQUENTIAL})`, stats(seqDirect.latencies, seqDirect.wallMs)],
    [`airlock, 1 session (${SEQUENTIAL})`, stats(seqAirlock.latencies, seqAirlock.wallMs)],
    [`direct, ${SESSIONS} concurrent (${CALLS})`, stats(conDirect.latencies, conDirect.wallMs)],
    [`airlock, ${SESSIONS} sessions (${CALLS})`, stats(conAirlock.latencies, conAirlock.wallMs)],
  ];
  console.log(
    `http_request overhead — ${os.cpus().length} cores, node ${process.version}, audit log in ${auditDir}`,
  );
  console.log('case'.padEnd(36), 'p50 ms'.padStart(9), 'p99 ms'.padStart(9), 'calls/s'.padStart(10));
  for (const [name, s] of rows) {
    console.log(
      name.padEnd(36),
      s.p50.toFixed(3).padStart(9),
      s.p99.toFixed(3).padStart(9),
      s.perSecond.toFixed(0).padStart(10),
    );
  }
  const [d1, a1, dN, aN] = rows.map((r) => r[1]) as [Stats, Stats, Stats, Stats];
  console.log(
    `overhead, 1 session:   p50 +${(a1.p50 - d1.p50).toFixed(3)} ms, p99 +${(a1.p99 - d1.p99).toFixed(3)} ms  (target p50 ≤ 0.3, p99 ≤ 2); ` +
      `broker CPU ${cpuPerSeqCall.toFixed(3)} ms a call`,
  );
  console.log(
    `fdatasync in ${auditDir}: p50 ${syncMs.toFixed(3)} ms; durable target for the 1-session p50 overhead: ` +
      `≤ 2 × fdatasync + 0.3 = ${(2 * syncMs + 0.3).toFixed(3)} ms`,
  );
  console.log(
    `overhead, ${SESSIONS} sessions: p50 +${(aN.p50 - dN.p50).toFixed(3)} ms, p99 +${(aN.p99 - dN.p99).toFixed(3)} ms; ` +
      `throughput ${aN.perSecond.toFixed(0)} calls/s = ${((aN.perSecond / dN.perSecond) * 100).toFixed(0)}% of direct (target ≥ 6000); ` +
      `broker CPU ${cpuPerCall.toFixed(3)} ms a call; ${brokerConnections} upstream connections opened for ${CALLS} calls`,
  );

  if (values['baseline-cli']) {
    await compareWithBaseline(values['baseline-cli'], clients, broker.pid!, viaAirlock, async () => {
      const dir = path.join(root, 'baseline');
      const other = await startBroker(dir, `${auditDir}/baseline-audit.jsonl`, values['baseline-cli']);
      const sessions: RawMcpSession[] = [];
      for (let i = 0; i < SESSIONS; i++) sessions.push(await RawMcpSession.open(other.socket));
      return { broker: other.broker, sessions };
    });
  }

  const rssEnd = brokerMemory(broker.pid!);
  console.log(
    `broker memory: ${rssIdle.rss} MiB idle, ${rssSessions.rss} MiB with ${SESSIONS} open sessions ` +
      `(${(((rssSessions.rss - rssIdle.rss) * 1024) / SESSIONS).toFixed(0)} KiB a session), ` +
      `${rssEnd.rss} MiB after the runs, peak ${rssEnd.peak} MiB`,
  );
  for (const c of clients) c.close();
  await stopServe(broker);
  upstream.kill();
  await rm(root, { recursive: true, force: true });
  await rm(auditDir, { recursive: true, force: true });
}

/**
 * This build's broker and another build's, in alternating rounds: one session's sequential p50,
 * then all sessions' calls/s and broker CPU a call. Prints the medians of the rounds and ratios.
 */
async function compareWithBaseline(
  cli: string,
  clients: RawMcpSession[],
  pid: number,
  viaAirlock: (client: RawMcpSession) => () => Promise<void>,
  start: () => Promise<{ broker: ChildProcess; sessions: RawMcpSession[] }>,
): Promise<void> {
  const other = await start();
  const sides = [
    { name: 'this build', sessions: clients, pid },
    { name: 'baseline', sessions: other.sessions, pid: other.broker.pid! },
  ];
  const rounds = Number(values.rounds);
  const figures = sides.map(() => ({ p50: [] as number[], perSecond: [] as number[], cpu: [] as number[] }));
  await load([viaAirlock(other.sessions[0]!)], 200); // warm up the baseline as the main run warmed this one
  for (let r = 0; r < rounds; r++) {
    for (const [i, side] of sides.entries()) {
      const seq = await load([viaAirlock(side.sessions[0]!)], Math.max(100, Math.floor(SEQUENTIAL / 2)));
      figures[i]!.p50.push(stats(seq.latencies, seq.wallMs).p50);
      const cpuBefore = processCpuMs(side.pid);
      const con = await load(side.sessions.map(viaAirlock), Math.floor(CALLS / 2));
      figures[i]!.cpu.push((processCpuMs(side.pid) - cpuBefore) / Math.floor(CALLS / 2));
      figures[i]!.perSecond.push(stats(con.latencies, con.wallMs).perSecond);
    }
  }
  console.log(`\nthis build vs ${cli}, ${rounds} alternating rounds (medians of the rounds)`);
  const [mine, base] = figures.map((f) => ({
    p50: median(f.p50),
    perSecond: median(f.perSecond),
    cpu: median(f.cpu),
  })) as [{ p50: number; perSecond: number; cpu: number }, { p50: number; perSecond: number; cpu: number }];
  for (const [name, f] of [
    ['this build', mine],
    ['baseline', base],
  ] as const) {
    console.log(
      `  ${name.padEnd(11)} 1 session p50 ${f.p50.toFixed(3)} ms; ${SESSIONS} sessions ${f.perSecond.toFixed(0)} calls/s, broker CPU ${f.cpu.toFixed(3)} ms a call`,
    );
  }
  console.log(
    `  ratio       1 session p50 ×${(mine.p50 / base.p50).toFixed(2)}; calls/s ×${(mine.perSecond / base.perSecond).toFixed(2)}; CPU a call ×${(mine.cpu / base.cpu).toFixed(2)}`,
  );
  for (const c of other.sessions) c.close();
  await stopServe(other.broker);
}

await main();
