// What the broker's memory is: `airlock serve` with http and git enabled for two teams, idle; with
// 1,000 sessions open (the cost of one session); and after 10,000 sessions opened and closed (a
// leak shows as growth there). Printed against an idle `node` process measured in the same run,
// and with --compare against another build (e.g. main's) run in the same script, as ratios.
//
// Idle and after-churn figures are read twice: at once, and after up to --reducer-wait seconds
// idle, once V8's memory reducer has shrunk the heap (what a broker between bursts holds).
//
//   npm run build && node dist/bench/memory.js [--sessions 10000] [--open 1000] [--reducer-wait 40] [--compare OTHER/dist/src/cli.js]
import { spawn } from 'node:child_process';
import { chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { brokerMemory, processCpuMs, RawMcpSession, startServe, stopServe } from './harness.js';

const { values } = parseArgs({
  options: {
    sessions: { type: 'string', default: '10000' },
    open: { type: 'string', default: '1000' },
    compare: { type: 'string' },
    'reducer-wait': { type: 'string', default: '40' },
  },
});
const CHURN = Number(values.sessions);
const OPEN = Number(values.open);
/** Sessions opened at once while churning (each: handshake, tools/list, close). */
const WAVE = 100;
const THIS_CLI = path.resolve(import.meta.dirname, '../src/cli.js');

/** How long an idle broker is watched for V8's memory reducer (see reducedRss). */
const REDUCER_WAIT_MS = Number(values['reducer-wait']) * 1000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The lowest RSS read every `everyMs` over `ms`: what the process settles at. */
async function lowestRss(pid: number, ms: number, everyMs: number): Promise<number> {
  let low = Infinity;
  for (const end = Date.now() + ms; Date.now() < end;) {
    await sleep(everyMs);
    low = Math.min(low, brokerMemory(pid).rss);
  }
  return low;
}

/** RSS settles a moment after a burst (GC, freed pages). */
const settledRss = (pid: number) => lowestRss(pid, 1500, 250);

/**
 * RSS once the broker has sat idle long enough for V8's memory reducer (it shrinks the heap a few
 * seconds after allocation stops: ~8 s after start-up, up to ~30 s after a burst of sessions).
 * A broker spends most of its life like this.
 */
const reducedRss = (pid: number) => lowestRss(pid, REDUCER_WAIT_MS, 500);

async function openSession(socketPath: string): Promise<RawMcpSession> {
  const session = await RawMcpSession.open(socketPath);
  await session.request('tools/list', {});
  return session;
}

interface Figures {
  idle: number;
  /** Idle, after V8's memory reducer has run. */
  idleReduced: number;
  openSessions: number;
  perSessionKiB: number;
  afterChurn: number;
  /** After the churn, once V8's memory reducer has run. */
  afterChurnReduced: number;
  peak: number;
  /** Broker CPU per session while churning (handshake, tools/list, close). */
  cpuPerSessionMs: number;
}

async function measure(cli: string): Promise<Figures> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'al-bench-mem-'));
  try {
    await mkdir(path.join(root, 'policies'));
    await mkdir(path.join(root, 'audit'));
    // Never reached: no git call is made, the server is only enabled.
    const remote = 'https://git.example.invalid/app.git';
    await writeFile(
      path.join(root, 'airlock.yaml'),
      `socketDir: ${root}/run\nstateDir: ${root}/state\npolicies: ./policies\naudit:\n  file: ${root}/audit/audit.jsonl\nsessions: { maxPerTeam: 4096, maxTotal: 8192 }\n`,
    );
    for (const team of ['alpha', 'beta']) {
      // The agent's work tree: group-writable and setgid, owned as the README asks.
      const tree = path.join(root, 'trees', team);
      await mkdir(tree, { recursive: true, mode: 0o2775 });
      if (process.getuid?.() === 0) await chown(tree, 1000, 1000);
      await writeFile(
        path.join(root, `policies/${team}.yaml`),
        `team: ${team}\nservers:\n  http:\n    hosts:\n      - origin: https://api.example.com\n        methods: [GET]\n    tools:\n      http_request: {}\n  git:\n    workspaces:\n      app:\n        path: ${tree}\n        remote: ${remote}\n        branch: main\n    tools:\n      git_status: {}\n      git_diff: {}\n      git_log: {}\n`,
      );
    }
    const socketPath = path.join(root, 'run/alpha/http.sock');
    const broker = await startServe(path.join(root, 'airlock.yaml'), socketPath, cli);
    try {
      const pid = broker.pid!;
      // One session first, so code paths a session needs are loaded before "idle" is read.
      (await openSession(socketPath)).close();
      const idle = await settledRss(pid);
      const idleReduced = await reducedRss(pid);

      const open: RawMcpSession[] = [];
      for (let i = 0; i < OPEN; i += WAVE)
        open.push(
          ...(await Promise.all(
            Array.from({ length: Math.min(WAVE, OPEN - i) }, () => openSession(socketPath)),
          )),
        );
      const openSessions = await settledRss(pid);
      for (const s of open) s.close();

      const cpuBefore = processCpuMs(pid);
      for (let i = 0; i < CHURN; i += WAVE) {
        const wave = await Promise.all(
          Array.from({ length: Math.min(WAVE, CHURN - i) }, () => openSession(socketPath)),
        );
        for (const s of wave) s.close();
      }
      const cpuPerSessionMs = (processCpuMs(pid) - cpuBefore) / CHURN;
      // A closed session's socket is destroyed 2 s after its half-close if the peer lingers
      // (NdjsonTransport.close), and holds the session until then: read after those timers.
      await sleep(2500);
      const afterChurn = await settledRss(pid);
      const afterChurnReduced = await reducedRss(pid);
      return {
        idle,
        idleReduced,
        openSessions,
        // Against the reduced idle: the sessions open right after it was read.
        perSessionKiB: ((openSessions - idleReduced) * 1024) / OPEN,
        afterChurn,
        afterChurnReduced,
        peak: brokerMemory(pid).peak,
        cpuPerSessionMs,
      };
    } finally {
      await stopServe(broker);
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** An idle Node process with nothing loaded: the floor every figure sits on. */
async function nodeIdleRss(): Promise<number> {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1e9)'], { stdio: 'ignore' });
  try {
    await sleep(300);
    return await settledRss(child.pid!);
  } finally {
    child.kill();
  }
}

async function main(): Promise<void> {
  const floor = await nodeIdleRss();
  const builds: Array<[string, string]> = [['this build', THIS_CLI]];
  if (values.compare) builds.push(['other build', path.resolve(values.compare)]);
  const results: Array<[string, Figures]> = [];
  for (const [name, cli] of builds) results.push([name, await measure(cli)]);

  console.log(
    `broker memory (http + git for 2 teams; ${OPEN} sessions open at once; ${CHURN} opened and closed, ${WAVE} at a time; node ${process.version}, load ${os.loadavg()[0]!.toFixed(2)})`,
  );
  console.log(`idle node process (baseline): ${floor} MiB RSS`);
  const rows: Array<[string, (f: Figures) => string]> = [
    ['idle RSS, start-up', (f) => `${f.idle} MiB (+${f.idle - floor} over node)`],
    [
      `idle RSS, V8 reduced (${REDUCER_WAIT_MS / 1000} s)`,
      (f) => `${f.idleReduced} MiB (+${f.idleReduced - floor} over node)`,
    ],
    [`RSS, ${OPEN} sessions open`, (f) => `${f.openSessions} MiB`],
    ['per open session', (f) => `${f.perSessionKiB.toFixed(0)} KiB`],
    [
      `RSS after ${CHURN} sessions`,
      (f) =>
        `${f.afterChurn} MiB (${f.afterChurn - f.idle >= 0 ? '+' : ''}${f.afterChurn - f.idle} over idle)`,
    ],
    [
      `same, V8 reduced (${REDUCER_WAIT_MS / 1000} s)`,
      (f) =>
        `${f.afterChurnReduced} MiB (${f.afterChurnReduced - f.idleReduced >= 0 ? '+' : ''}${f.afterChurnReduced - f.idleReduced} over reduced idle)`,
    ],
    ['peak RSS', (f) => `${f.peak} MiB`],
    ['broker CPU per session', (f) => `${f.cpuPerSessionMs.toFixed(2)} ms`],
  ];
  const width = Math.max(...rows.map(([label]) => label.length));
  console.log(`${''.padEnd(width)}  ${results.map(([name]) => name.padEnd(28)).join('')}`);
  for (const [label, show] of rows)
    console.log(`${label.padEnd(width)}  ${results.map(([, f]) => show(f).padEnd(28)).join('')}`);
  if (results.length === 2) {
    const [mine, other] = [results[0]![1], results[1]![1]];
    console.log(
      `ratios this / other: idle ×${(mine.idle / other.idle).toFixed(2)}, reduced idle ×${(mine.idleReduced / other.idleReduced).toFixed(2)}, per session ×${(mine.perSessionKiB / other.perSessionKiB).toFixed(2)}, after churn ×${(mine.afterChurn / other.afterChurn).toFixed(2)} (reduced ×${(mine.afterChurnReduced / other.afterChurnReduced).toFixed(2)}), peak ×${(mine.peak / other.peak).toFixed(2)}, CPU per session ×${(mine.cpuPerSessionMs / other.cpuPerSessionMs).toFixed(2)}`,
    );
  }
  console.log(
    'targets: idle ≤ 60 MiB; ≤ 120 MiB under the 64-session load (bench:http prints it); flat after 10,000 sessions',
  );
}

await main();
