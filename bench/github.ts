// Per-call overhead of get_issue through socket + broker + durable audit against the same Octokit
// calls made directly (the same client with the same rate-limit and retry hook, the same two requests: the issue and its first page of
// comments), in one run against the local GitHub API stand-in (its own process). The disk's
// fdatasync latency is measured in the same run, because the two durable audit records of an
// allowed call are the floor of the overhead. Target (issue 8): overhead p50 ≤ 2 × fsync + 0.5 ms.
//
//   npm run build && node dist/bench/github.js [--sequential 500] [--calls 3200] [--sessions 16] [--audit-dir DIR]
import { spawn } from 'node:child_process';
import { closeSync, fdatasyncSync, openSync, writeSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createGithubOctokit } from '../servers/github/client.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { load, percentile, RawMcpSession, startServe, stats, stopServe, type Stats } from './harness.js';

const { values } = parseArgs({
  options: {
    sequential: { type: 'string', default: '500' },
    calls: { type: 'string', default: '3200' },
    sessions: { type: 'string', default: '16' },
    'audit-dir': { type: 'string' },
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

/** p50 of `rounds` small appends, each followed by fdatasync, in `dir` (as the audit log does). */
function fsyncLatency(dir: string, rounds = 300): number {
  const file = path.join(dir, 'fsync-probe');
  const fd = openSync(file, 'a');
  const times: number[] = [];
  const line = Buffer.from(JSON.stringify({ probe: 'x'.repeat(300) }) + '\n');
  try {
    for (let i = 0; i < rounds; i++) {
      const t = performance.now();
      writeSync(fd, line);
      fdatasyncSync(fd);
      times.push(performance.now() - t);
    }
  } finally {
    closeSync(fd);
  }
  return percentile(
    times.sort((a, b) => a - b),
    0.5,
  );
}

async function main(): Promise<void> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'al-bench-gh-'));
  const auditDir = values['audit-dir']
    ? await mkdtemp(path.join(values['audit-dir'], 'al-bench-gh-audit-'))
    : path.join(root, 'audit');
  await mkdir(auditDir, { recursive: true });
  const standIn = spawn(process.execPath, ['--input-type=module', '-e', STAND_IN_SOURCE], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const apiUrl = await new Promise<string>((resolve) =>
    standIn.stdout!.once('data', (d: Buffer) => resolve(d.toString().trim())),
  );
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
  const broker = await startServe(path.join(root, 'airlock.yaml'), socketPath);

  const clients: RawMcpSession[] = [];
  for (let i = 0; i < SESSIONS; i++) clients.push(await RawMcpSession.open(socketPath));
  const viaAirlock = (client: RawMcpSession) => async () => {
    const r = (await client.request('tools/call', {
      name: 'get_issue',
      arguments: { owner: 'acme', repo: 'payments-api', number: 1 },
    })) as CallToolResult;
    if (r.isError) throw new Error(JSON.stringify(r.content));
  };
  // The same client the github server uses (limits and retries included), making the same two requests.
  const octokit = await createGithubOctokit({ apiUrl, userAgent: 'bench-direct' });
  const headers = { authorization: `token ${TOKEN}` };
  const direct = async () => {
    const where = { owner: 'acme', repo: 'payments-api', issue_number: 1, headers };
    await octokit.rest.issues.get(where);
    await octokit.rest.issues.listComments({ ...where, per_page: 30, page: 1 });
  };

  await load([viaAirlock(clients[0]!)], 200);
  await load([direct], 200);
  const fsync = fsyncLatency(auditDir);
  // Direct and Airlock take turns in blocks, so load from the rest of the machine falls on both.
  const BLOCK = 50;
  const seqDirect = { latencies: [] as number[], wallMs: 0 };
  const seqAirlock = { latencies: [] as number[], wallMs: 0 };
  const conDirect = { latencies: [] as number[], wallMs: 0 };
  const conAirlock = { latencies: [] as number[], wallMs: 0 };
  const add = (into: typeof seqDirect, r: { latencies: number[]; wallMs: number }) => {
    into.latencies.push(...r.latencies);
    into.wallMs += r.wallMs;
  };
  for (let done = 0; done < SEQUENTIAL; done += BLOCK) {
    add(seqDirect, await load([direct], BLOCK));
    add(seqAirlock, await load([viaAirlock(clients[0]!)], BLOCK));
  }
  for (let done = 0; done < CALLS; done += BLOCK * SESSIONS) {
    add(
      conDirect,
      await load(
        Array.from({ length: SESSIONS }, () => direct),
        BLOCK * SESSIONS,
      ),
    );
    add(conAirlock, await load(clients.map(viaAirlock), BLOCK * SESSIONS));
  }
  const fsyncAfter = fsyncLatency(auditDir);

  const rows: Array<[string, Stats]> = [
    [`direct Octokit, 1 at a time (${SEQUENTIAL})`, stats(seqDirect.latencies, seqDirect.wallMs)],
    [`airlock, 1 session (${SEQUENTIAL})`, stats(seqAirlock.latencies, seqAirlock.wallMs)],
    [`direct Octokit, ${SESSIONS} concurrent (${CALLS})`, stats(conDirect.latencies, conDirect.wallMs)],
    [`airlock, ${SESSIONS} sessions (${CALLS})`, stats(conAirlock.latencies, conAirlock.wallMs)],
  ];
  console.log(
    `get_issue overhead — ${os.cpus().length} cores, node ${process.version}, audit log in ${auditDir}`,
  );
  console.log(`fdatasync p50: ${fsync.toFixed(3)} ms before the runs, ${fsyncAfter.toFixed(3)} ms after`);
  console.log('case'.padEnd(40), 'p50 ms'.padStart(9), 'p99 ms'.padStart(9), 'calls/s'.padStart(10));
  for (const [name, s] of rows) {
    console.log(
      name.padEnd(40),
      s.p50.toFixed(3).padStart(9),
      s.p99.toFixed(3).padStart(9),
      s.perSecond.toFixed(0).padStart(10),
    );
  }
  const [d1, a1, dN, aN] = rows.map((r) => r[1]) as [Stats, Stats, Stats, Stats];
  const fsyncP50 = Math.max(fsync, fsyncAfter);
  const target = 2 * fsyncP50 + 0.5;
  const verdict = (overhead: number) => (overhead <= target ? 'meets' : 'MISSES');
  const o1 = a1.p50 - d1.p50;
  const oN = aN.p50 - dN.p50;
  console.log(`target: overhead p50 ≤ 2 × fsync + 0.5 ms = ${target.toFixed(3)} ms`);
  console.log(
    `overhead, 1 session:    p50 +${o1.toFixed(3)} ms (${verdict(o1)} the target), p99 +${(a1.p99 - d1.p99).toFixed(3)} ms`,
  );
  console.log(
    `overhead, ${SESSIONS} sessions:  p50 +${oN.toFixed(3)} ms (${verdict(oN)} the target), p99 +${(aN.p99 - dN.p99).toFixed(3)} ms; ` +
      `${aN.perSecond.toFixed(0)} calls/s = ${((aN.perSecond / dN.perSecond) * 100).toFixed(0)}% of direct`,
  );
  for (const c of clients) c.close();
  await stopServe(broker);
  standIn.kill();
  await rm(root, { recursive: true, force: true });
  if (values['audit-dir']) await rm(auditDir, { recursive: true, force: true });
}

await main();
