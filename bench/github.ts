// Per-call overhead of get_issue through socket + broker + durable audit against the same Octokit
// calls made directly, in one run against the local GitHub API stand-in (its own process). Direct
// is @octokit/rest with its own request layer and fetch, plus the server's rate-limit and retry
// hook, making the handler's two requests (the issue and its first page of comments) at once, as
// the handler does. A second direct row makes the same calls with the github server's own client
// (servers/github/request.ts and fetch.ts), so what is left over it is the broker's own path
// (socket, pipeline, audit, the handler). The disk's fdatasync latency is measured in the same
// run, because the two durable audit records of an allowed call are the floor of the overhead.
// Target (issue 8): overhead p50 over direct Octokit ≤ 2 × fsync + 0.5 ms.
// --baseline-cli runs a second broker from another build (e.g. main's dist/src/cli.js) in the same
// rounds, so a change is judged against the old build under the same load (compare the two
// brokers' own rows: an old build may make its requests one after the other).
//
//   npm run build && node dist/bench/github.js [--sequential 500] [--calls 3200] [--sessions 16]
//     [--audit-dir DIR] [--baseline-cli PATH]
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Octokit } from '@octokit/rest';
import { createGithubOctokit, GITHUB_LIMITS } from '../servers/github/client.js';
import { installGithubLimits } from '../servers/github/limits.js';
import { createGithubFetch } from '../servers/github/fetch.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { ChildProcess } from 'node:child_process';
import {
  fdatasyncMs,
  load,
  processCpuMs,
  RawMcpSession,
  startServe,
  stats,
  stopServe,
  type Stats,
} from './harness.js';

const { values } = parseArgs({
  options: {
    sequential: { type: 'string', default: '500' },
    calls: { type: 'string', default: '3200' },
    sessions: { type: 'string', default: '16' },
    'audit-dir': { type: 'string' },
    'baseline-cli': { type: 'string' },
  },
});
const SEQUENTIAL = Number(values.sequential);
const CALLS = Number(values.calls);
const SESSIONS = Number(values.sessions);
const TOKEN = 'ghp_BenchToken_0123456789abcdefABCDEF';

const STAND_IN_SOURCE = `
const { startGithubApiStandIn } = await import(${JSON.stringify(path.resolve(import.meta.dirname, '../src/demo/github-api/server.js'))});
const { sampleRepo } = await import(${JSON.stringify(path.resolve(import.meta.dirname, '../src/demo/github-api/data.js'))});
const api = await startGithubApiStandIn({ tokens: [${JSON.stringify(TOKEN)}], repos: [sampleRepo('acme', 'payments-api')] });
// Keep memory flat over thousands of calls: the bench does not read the request log.
setInterval(() => api.calls.splice(0), 1000);
process.stdout.write(api.apiUrl + '\\n');
`;

/** One airlock serve (this build or the baseline's) with its own config, sockets and audit file, on the shared stand-in. */
async function startBroker(
  root: string,
  auditDir: string,
  apiUrl: string,
  cli?: string,
): Promise<{ broker: ChildProcess; clients: RawMcpSession[] }> {
  await mkdir(path.join(root, 'policies'), { recursive: true });
  await writeFile(path.join(root, 'token'), `${TOKEN}\n`, { mode: 0o600 });
  await writeFile(
    path.join(root, 'airlock.yaml'),
    `socketDir: ${root}/run\nstateDir: ${root}/state\npolicies: ./policies\naudit:\n  file: ${auditDir}/audit.jsonl\nsecrets:\n  gh-token: { file: ./token }\n`,
  );
  await writeFile(
    path.join(root, 'policies/bench.yaml'),
    `team: bench\nservers:\n  github:\n    credential: gh-token\n    apiUrl: ${apiUrl}\n    repos: ["acme/*"]\n    tools:\n      get_issue: {}\n`,
  );
  const socketPath = path.join(root, 'run/bench/github.sock');
  const broker = await startServe(path.join(root, 'airlock.yaml'), socketPath, cli);
  const clients: RawMcpSession[] = [];
  for (let i = 0; i < SESSIONS; i++) clients.push(await RawMcpSession.open(socketPath));
  return { broker, clients };
}

const viaAirlock = (client: RawMcpSession) => async () => {
  const r = (await client.request('tools/call', {
    name: 'get_issue',
    arguments: { owner: 'acme', repo: 'payments-api', number: 1 },
  })) as CallToolResult;
  if (r.isError) throw new Error(JSON.stringify(r.content));
};

interface Case {
  name: string;
  /** The calls of one session, or of the i-th of SESSIONS concurrent ones. */
  call(i: number): () => Promise<void>;
  /** CPU time so far (ms) of whoever does the work: the broker, or this process for direct calls. */
  cpuMs(): number;
  seq: Run;
  con: Run;
}

interface Run {
  latencies: number[];
  wallMs: number;
  cpuMs: number;
}

/** This process's CPU time so far, in ms. */
const ownCpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function main(): Promise<void> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'al-bench-gh-'));
  const auditParent = values['audit-dir']
    ? await mkdtemp(path.join(values['audit-dir'], 'al-bench-gh-audit-'))
    : root;
  const auditDir = path.join(auditParent, 'audit');
  await mkdir(auditDir, { recursive: true });
  const standIn = spawn(process.execPath, ['--input-type=module', '-e', STAND_IN_SOURCE], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const apiUrl = await new Promise<string>((resolve) =>
    standIn.stdout!.once('data', (d: Buffer) => resolve(d.toString().trim())),
  );
  const current = await startBroker(path.join(root, 'current'), auditDir, apiUrl);
  const baselineCli = values['baseline-cli'] ? path.resolve(values['baseline-cli']) : undefined;
  const baselineAudit = path.join(auditParent, 'audit-baseline');
  if (baselineCli) await mkdir(baselineAudit, { recursive: true });
  const baseline = baselineCli
    ? await startBroker(path.join(root, 'baseline'), baselineAudit, apiUrl, baselineCli)
    : undefined;

  // Direct: @octokit/rest as an agent would use it (its own request layer and fetch), with the
  // server's rate-limit and retry hook; and the github server's own client (request.ts, fetch.ts).
  // Both make the same two requests.
  const headers = { authorization: `token ${TOKEN}` };
  const directWith = (client: Octokit) => async () => {
    const where = { owner: 'acme', repo: 'payments-api', issue_number: 1, headers };
    // At once, as the get_issue handler asks for them.
    await Promise.all([
      client.rest.issues.get(where),
      client.rest.issues.listComments({ ...where, per_page: 30, page: 1 }),
    ]);
  };
  const quiet = {
    debug: () => undefined,
    info: () => undefined,
    warn: () => undefined,
    error: () => undefined,
  };
  const octokit = new Octokit({ baseUrl: apiUrl, userAgent: 'bench-direct', log: quiet });
  installGithubLimits(octokit, GITHUB_LIMITS);
  const serverFetch = createGithubFetch(apiUrl);
  const serverClient = await createGithubOctokit({
    apiUrl,
    userAgent: 'bench-direct',
    fetch: serverFetch.fetch,
  });
  const empty = (): Run => ({ latencies: [], wallMs: 0, cpuMs: 0 });
  const cases: Case[] = [
    { name: 'direct Octokit', call: () => directWith(octokit), cpuMs: ownCpuMs, seq: empty(), con: empty() },
    {
      name: "direct, server's client",
      call: () => directWith(serverClient),
      cpuMs: ownCpuMs,
      seq: empty(),
      con: empty(),
    },
    ...(baseline
      ? [
          {
            name: 'airlock, baseline',
            call: (i: number) => viaAirlock(baseline.clients[i]!),
            cpuMs: () => processCpuMs(baseline.broker.pid!),
            seq: empty(),
            con: empty(),
          },
        ]
      : []),
    {
      name: 'airlock',
      call: (i: number) => viaAirlock(current.clients[i]!),
      cpuMs: () => processCpuMs(current.broker.pid!),
      seq: empty(),
      con: empty(),
    },
  ];

  for (const c of cases) await load([c.call(0)], 200);
  const fsync = await fdatasyncMs(auditDir);
  // The cases take turns in blocks, so load from the rest of the machine falls on all of them.
  const BLOCK = 50;
  const add = async (c: Case, into: Run, run: () => Promise<{ latencies: number[]; wallMs: number }>) => {
    const cpu = c.cpuMs();
    const r = await run();
    into.cpuMs += c.cpuMs() - cpu;
    into.latencies.push(...r.latencies);
    into.wallMs += r.wallMs;
  };
  for (let done = 0; done < SEQUENTIAL; done += BLOCK) {
    for (const c of cases) await add(c, c.seq, () => load([c.call(0)], BLOCK));
  }
  for (let done = 0; done < CALLS; done += BLOCK * SESSIONS) {
    for (const c of cases) {
      const calls = Array.from({ length: SESSIONS }, (_, k) => c.call(k));
      await add(c, c.con, () => load(calls, BLOCK * SESSIONS));
    }
  }
  const fsyncAfter = await fdatasyncMs(auditDir);

  console.log(
    `get_issue overhead — ${os.cpus().length} cores, node ${process.version}, audit log in ${auditDir}` +
      (baselineCli ? `, baseline ${baselineCli}` : ''),
  );
  console.log(`fdatasync p50: ${fsync.toFixed(3)} ms before the runs, ${fsyncAfter.toFixed(3)} ms after`);
  console.log(
    'case'.padEnd(44),
    'p50 ms'.padStart(9),
    'p99 ms'.padStart(9),
    'calls/s'.padStart(10),
    'CPU ms/call'.padStart(12),
  );
  const seqStats = cases.map((c) => stats(c.seq.latencies, c.seq.wallMs));
  const conStats = cases.map((c) => stats(c.con.latencies, c.con.wallMs));
  // CPU: the broker's for airlock rows; this process's (the client library) for direct rows.
  const row = (name: string, s: Stats, r: Run) =>
    console.log(
      name.padEnd(44),
      s.p50.toFixed(3).padStart(9),
      s.p99.toFixed(3).padStart(9),
      s.perSecond.toFixed(0).padStart(10),
      (r.cpuMs / r.latencies.length).toFixed(3).padStart(12),
    );
  cases.forEach((c, i) => row(`${c.name}, 1 session (${SEQUENTIAL})`, seqStats[i]!, c.seq));
  cases.forEach((c, i) => row(`${c.name}, ${SESSIONS} sessions (${CALLS})`, conStats[i]!, c.con));
  const fsyncP50 = Math.max(fsync, fsyncAfter);
  const target = 2 * fsyncP50 + 0.5;
  const verdict = (overhead: number) => (overhead <= target ? 'meets' : 'MISSES');
  console.log(`target: overhead p50 over direct Octokit ≤ 2 × fsync + 0.5 ms = ${target.toFixed(3)} ms`);
  const [d1, f1] = seqStats as [Stats, Stats];
  const [dN, fN] = conStats as [Stats, Stats];
  cases.slice(2).forEach((c, k) => {
    const a1 = seqStats[k + 2]!;
    const aN = conStats[k + 2]!;
    const o1 = a1.p50 - d1.p50;
    const oN = aN.p50 - dN.p50;
    console.log(
      `${c.name}, 1 session:    p50 +${o1.toFixed(3)} ms (${verdict(o1)} the target), p99 +${(a1.p99 - d1.p99).toFixed(3)} ms; ` +
        `over the server's client p50 +${(a1.p50 - f1.p50).toFixed(3)} ms`,
    );
    console.log(
      `${c.name}, ${SESSIONS} sessions:  p50 +${oN.toFixed(3)} ms (${verdict(oN)} the target), p99 +${(aN.p99 - dN.p99).toFixed(3)} ms; ` +
        `${aN.perSecond.toFixed(0)} calls/s = ${((aN.perSecond / dN.perSecond) * 100).toFixed(0)}% of direct; ` +
        `over the server's client p50 +${(aN.p50 - fN.p50).toFixed(3)} ms`,
    );
  });
  for (const b of [current, baseline]) {
    if (!b) continue;
    for (const c of b.clients) c.close();
    await stopServe(b.broker);
  }
  serverFetch.close();
  standIn.kill();
  await rm(root, { recursive: true, force: true });
  if (values['audit-dir']) await rm(auditParent, { recursive: true, force: true });
}

await main();
