// Git server speed against raw git on the same machine, in one run (prints figures; not a test).
//  1. git_push of a 50 MB change vs raw `git push` to the same loopback smart-HTTP server
//     (target: ratio ≤ 1.1).
//  2. git_status on a 10,000-file work tree vs raw `git status` (target: overhead ≤ 3 ms), with
//     the work-tree confinement's own cost on its own line (the runner confined − unconfined).
//  3. While 8 sessions run git_status in a loop (a pause between calls, see LOOP_PAUSE_MS), the
//     latency of another team's http_request (target: it does not move). The control is the same
//     8 loops of raw git from shell loops beside the broker: that is the CPU the git processes
//     take anyway; what the broker adds on top (e.g. a fork that stalls its event loop) is its own.
// git_status is measured several ways:
//  - raw git on the very git dir and work tree the tools use;
//  - the runner (hardened argv, empty environment) without and with the confinement;
//  - the tool handler called directly in this process (isolates the git server itself);
//  - through Airlock: an MCP SDK Client on the team's Unix socket → `airlock serve` as its own
//    process → pipeline (policy, durable audit record) → git. This is the figure the targets are for.
// With --baseline-cli <path to another build's dist/src/cli.js> a second broker of that build runs
// beside this one (its own installation and identical work tree) and every round times both, so
// old and new are compared in the same run.
//
// Run: npm run bench:git [-- --status-only] [-- --baseline-cli /work/main/dist/src/cli.js]
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs, promisify } from 'node:util';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { gitEnv, runGit } from '../servers/git/runner.js';
import { GIT_STATUS_ARGS as STATUS_ARGS, gitPush, gitStatus } from '../servers/git/tools.js';
import { gitContext, mustCall, ownedByAgent } from '../test/git/context.js';
import { createBareRepo, fixtureGitEnv, refOf, startSmartHttpServer } from '../test/git/smart-http-server.js';
import { connectSocketClient, makeInstallation, type Installation } from '../test/helpers/fixture.js';
import { fdatasyncMs, RawMcpSession } from './common.js';

const { values } = parseArgs({
  options: {
    'status-only': { type: 'boolean', default: false },
    'baseline-cli': { type: 'string' },
    rounds: { type: 'string', default: '60' },
    'loop-seconds': { type: 'string', default: '3' },
    'loop-pause-ms': { type: 'string', default: '250' },
  },
});
const run = promisify(execFile);
const SECRET = 'ghs_BenchSecret_a1b2c3d4';
const TEAM = 'bench';
const PROBE_TEAM = 'probe';
const STATUS_ONLY = values['status-only'];
const PUSH_WARMUP = 1;
const PUSH_ROUNDS = 7;
const PUSH_BYTES = 50 * 1024 * 1024;
const BRANCH = 'bench/push';
const STATUS_WARMUP = 5;
const STATUS_ROUNDS = Number(values.rounds);
const LOOP_SESSIONS = 8;
const LOOP_MS = Number(values['loop-seconds']) * 1000;
// Each looping session pauses this long between calls, so that 8 loops load the 2 cores by about
// half: flat out, the git processes alone take every core and any probe waits for the scheduler.
const LOOP_PAUSE_MS = Number(values['loop-pause-ms']);
// A 50 MB push is well past the SDK's 60 s default request timeout on a slow machine.
const CALL_TIMEOUT_MS = 5 * 60_000;
// The built CLI next to this file (fixture.ts's CLI assumes it runs from the source tree).
const CLI = path.resolve(import.meta.dirname, '../src/cli.js');

// The other team's upstream, in its own process as a real API would be.
const UPSTREAM_SOURCE = `
const http = require('node:http');
const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => { res.setHeader('content-type', 'application/json'); res.end('{"ok":true}'); });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
`;

type Timed = () => Promise<unknown>;

function sorted(xs: number[]): number[] {
  return [...xs].sort((a, b) => a - b);
}

function median(xs: number[]): number {
  const s = sorted(xs);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Nearest-rank percentile. */
function percentile(xs: number[], p: number): number {
  const s = sorted(xs);
  return s[Math.min(s.length - 1, Math.ceil(s.length * p) - 1)]!;
}

async function time(fn: Timed): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

/** Runs each path once, starting from a different one each round so cache warmth favours none. */
async function roundRobin(round: number, paths: Timed[], times: number[][]): Promise<void> {
  for (let k = 0; k < paths.length; k++) {
    const j = (round + k) % paths.length;
    times[j]!.push(await time(paths[j]!));
  }
}

/**
 * `warmup` untimed rounds, then `rounds` timed ones (see roundRobin); `round` wraps each round's
 * run (to set up and check around it). Returns each path's timings.
 */
async function measure(
  paths: Timed[],
  warmup: number,
  rounds: number,
  round: (go: () => Promise<void>) => Promise<void> = (go) => go(),
): Promise<number[][]> {
  const untimed = paths.map((): number[] => []);
  const times = paths.map((): number[] => []);
  for (let i = 0; i < warmup + rounds; i++) {
    await round(() => roundRobin(i, paths, i < warmup ? untimed : times));
  }
  return times;
}

/** Calls a tool through the broker; a tool error fails the bench. */
async function brokerCall(
  client: Client,
  name: string,
  args: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const r = (await client.callTool({ name, arguments: args }, undefined, {
    timeout: CALL_TIMEOUT_MS,
  })) as CallToolResult;
  if (r.isError) throw new Error(`${name} through the broker failed: ${JSON.stringify(r.content)}`);
  return r.structuredContent ?? {};
}

/** A tools/call on a raw session; a tool error fails the bench. */
async function rawCall(session: RawMcpSession, name: string, args: Record<string, unknown>): Promise<void> {
  const r = (await session.request('tools/call', { name, arguments: args })) as CallToolResult;
  if (r.isError) throw new Error(`${name} through the broker failed: ${JSON.stringify(r.content)}`);
}

/** On-CPU time of a process's main thread (its event loop) so far, in ms (Linux schedstat). */
function mainThreadCpuMs(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
}

async function startBroker(cli: string, configFile: string, socketPaths: string[]): Promise<ChildProcess> {
  // BENCH_BROKER_NODE_ARGS adds node flags (e.g. --cpu-prof), as in bench/harness.ts.
  const nodeArgs = process.env.BENCH_BROKER_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const broker = spawn(process.execPath, [...nodeArgs, cli, 'serve', '--config', configFile], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, AIRLOCK_LOG_LEVEL: 'warn' },
  });
  const opened = () => socketPaths.every((p) => existsSync(p));
  for (let i = 0; i < 400 && !opened(); i++) {
    if (broker.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  if (!opened()) {
    await stopBroker(broker);
    throw new Error(`broker ${cli} did not open ${socketPaths.join(', ')}`);
  }
  return broker;
}

async function stopBroker(broker: ChildProcess): Promise<void> {
  if (broker.exitCode !== null || broker.signalCode !== null) return;
  const exited = new Promise((r) => broker.once('exit', r));
  broker.kill('SIGTERM');
  await exited;
}

/** One `airlock serve` of one build, with its own installation, work trees and remotes. */
interface Setup {
  label: string;
  inst: Installation;
  root: string;
  broker: ChildProcess;
  client: Client;
  workTreeOf(ws: string): string;
  gitDirOf(ws: string): string;
  /** The remote repository name of a workspace on the shared smart-HTTP server. */
  remoteOf(ws: string): string;
}

async function main(): Promise<void> {
  // Undone in reverse order of setup, whatever fails in between.
  const teardown: Array<() => Promise<unknown>> = [];
  try {
    const reposRoot = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), 'al-git-repos-')));
    teardown.unshift(() => fs.rm(reposRoot, { recursive: true, force: true }));
    const server = await startSmartHttpServer({
      root: reposRoot,
      username: 'x-access-token',
      password: SECRET,
    });
    teardown.unshift(() => server.close());
    const upstream = spawn(process.execPath, ['-e', UPSTREAM_SOURCE], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    teardown.unshift(async () => upstream.kill());
    const port = await new Promise<number>((resolve) =>
      upstream.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))),
    );
    const origin = `http://127.0.0.1:${port}`;
    const basic = Buffer.from(`x-access-token:${SECRET}`).toString('base64');

    // One seed repository copied for every remote, so every remote's main is the same commit and
    // each push sends exactly the new commit. Re-seeding a remote (same URL, fresh contents) lets
    // every round push the same 50 MB commit to remotes that lack it.
    const seed = await createBareRepo(reposRoot, 'seed.git', { files: { 'README.md': 'bench\n' } });
    const seeded = async (name: string) => {
      const bare = path.join(reposRoot, name);
      await fs.rm(bare, { recursive: true, force: true });
      await fs.cp(seed, bare, { recursive: true });
      return bare;
    };

    const setUp = async (label: string, cli: string): Promise<Setup> => {
      // The installation's root is short (Unix socket paths are limited to ~107 bytes); work
      // trees live in it too, so one rm cleans everything.
      const inst = await makeInstallation({ secrets: { 'git-token': SECRET } });
      teardown.unshift(() => inst.cleanup());
      const root = await fs.realpath(inst.root);
      // Work trees are the agent's (as under /srv/agents/<team>): a root broker refuses to make
      // one in a folder of group root.
      await fs.mkdir(path.join(root, 'wt'));
      await ownedByAgent(path.join(root, 'wt'));
      const remoteOf = (ws: string) => `${label}-airlock-${ws}.git`;
      const workspaces = ['push', 'status']
        .map(
          (ws) =>
            `      ${ws}:\n        path: ${path.join(root, 'wt', ws)}\n        remote: ${server.repoUrl(remoteOf(ws))}\n        credential: git-token\n`,
        )
        .join('');
      await inst.writePolicy(
        `${TEAM}.yaml`,
        `team: ${TEAM}\nservers:\n  git:\n    workspaces:\n${workspaces}    tools:\n` +
          `      git_status: {}\n      git_add: {}\n      git_commit: {}\n      git_create_branch: {}\n` +
          `      git_push: { branches: ["**"] }\n`,
      );
      await inst.writePolicy(
        `${PROBE_TEAM}.yaml`,
        `team: ${PROBE_TEAM}\nservers:\n  http:\n    hosts:\n      - origin: ${origin}\n        methods: [GET]\n` +
          `        paths: ["/v1/**"]\n        allowPrivateAddress: true\n    tools:\n      http_request: {}\n`,
      );
      for (const ws of ['push', 'status']) await seeded(remoteOf(ws));
      const broker = await startBroker(cli, inst.configFile, [
        inst.socket(TEAM, 'git'),
        inst.socket(PROBE_TEAM, 'http'),
      ]);
      teardown.unshift(() => stopBroker(broker));
      const { client } = await connectSocketClient(inst.socket(TEAM, 'git'));
      teardown.unshift(() => client.close());
      return {
        label,
        inst,
        root,
        broker,
        client,
        workTreeOf: (ws) => path.join(root, 'wt', ws),
        gitDirOf: (ws) => path.join(inst.stateDir, 'git', TEAM, `${ws}.git`),
        remoteOf,
      };
    };
    const fresh = await setUp('new', CLI);
    const baseline = values['baseline-cli']
      ? await setUp('baseline', path.resolve(values['baseline-cli']))
      : undefined;
    const setups = baseline ? [fresh, baseline] : [fresh];

    /** The direct handler's context: same state folder, team and work tree as the new broker's. */
    const directContext = (ws: string, remote: string) =>
      gitContext({
        stateDir: fresh.inst.stateDir,
        team: TEAM,
        secrets: { 'git-token': SECRET },
        section: { workspaces: { [ws]: { path: fresh.workTreeOf(ws), remote, credential: 'git-token' } } },
      });

    // ---- 1. push of a 50 MB change -----------------------------------------------------------
    // The commit is made once (through the broker; the first call clones, untimed); every round
    // then pushes it to three freshly seeded remotes, one per path.
    let push: { raw: number[]; tool: number[]; airlock: number[] } | undefined;
    if (!STATUS_ONLY) {
      const ws = 'push';
      const { client } = fresh;
      await brokerCall(client, 'git_status', { workspace: ws });
      await fs.writeFile(path.join(fresh.workTreeOf(ws), 'blob.bin'), randomBytes(PUSH_BYTES));
      await brokerCall(client, 'git_add', { workspace: ws, paths: ['blob.bin'] });
      const sha = (await brokerCall(client, 'git_commit', { workspace: ws, message: '50 MB' })).sha as string;
      await brokerCall(client, 'git_create_branch', { workspace: ws, name: BRANCH });
      const pushCtx = directContext(ws, server.repoUrl(`tool-${ws}.git`));
      const rawPush = () =>
        run(
          'git',
          [
            '-c',
            `http.extraHeader=Authorization: Basic ${basic}`,
            '--git-dir',
            fresh.gitDirOf(ws),
            'push',
            '--quiet',
            server.repoUrl(`raw-${ws}.git`),
            `${sha}:refs/heads/${BRANCH}`,
          ],
          { env: fixtureGitEnv(), maxBuffer: 16 * 1024 * 1024 },
        );
      const toolPush = () =>
        mustCall(gitPush, pushCtx, { workspace: ws, branch: BRANCH }, { branches: ['**'] });
      const airlockPush = () => brokerCall(client, 'git_push', { workspace: ws, branch: BRANCH });
      const [rawPushes, toolPushes, airlockPushes] = await measure(
        [rawPush, toolPush, airlockPush],
        PUSH_WARMUP,
        PUSH_ROUNDS,
        async (go) => {
          const remotes = [
            await seeded(`raw-${ws}.git`),
            await seeded(`tool-${ws}.git`),
            await seeded(fresh.remoteOf(ws)),
          ];
          await go();
          for (const bare of remotes) {
            if (refOf(bare, `refs/heads/${BRANCH}`) !== sha) throw new Error(`push to ${bare} did not land`);
          }
        },
      );
      push = { raw: rawPushes!, tool: toolPushes!, airlock: airlockPushes! };
    }

    // ---- 2. status on 10,000 files ----------------------------------------------------------
    // The same tree in every installation: 100 folders × 100 files committed, one file changed.
    for (const s of setups) {
      await brokerCall(s.client, 'git_status', { workspace: 'status' }); // clones (not timed)
      const tree = s.workTreeOf('status');
      for (let d = 0; d < 100; d++) {
        const dir = path.join(tree, `dir-${d}`);
        await fs.mkdir(dir);
        await Promise.all(
          Array.from({ length: 100 }, (_, f) => fs.writeFile(path.join(dir, `file-${f}.txt`), `${d}/${f}\n`)),
        );
      }
      await brokerCall(s.client, 'git_add', { workspace: 'status', paths: ['.'] });
      await brokerCall(s.client, 'git_commit', { workspace: 'status', message: '10k files' });
      await fs.writeFile(path.join(tree, 'dir-0', 'file-0.txt'), 'changed\n');
    }
    const statusCtx = directContext('status', server.repoUrl(fresh.remoteOf('status')));
    const rawStatusArgs = (s: Setup) => [
      '--git-dir',
      s.gitDirOf('status'),
      '--work-tree',
      s.workTreeOf('status'),
      ...STATUS_ARGS,
    ];
    const rawStatusOf = (s: Setup) => () =>
      run('git', rawStatusArgs(s), {
        cwd: s.workTreeOf('status'),
        env: fixtureGitEnv({ GIT_OPTIONAL_LOCKS: '0' }),
      });
    const runnerHome = await fs.mkdtemp(path.join(os.tmpdir(), 'al-git-home-'));
    teardown.unshift(() => fs.rm(runnerHome, { recursive: true, force: true }));
    const runnerStatus = (confined: boolean) => async () => {
      const tree = fresh.workTreeOf('status');
      const r = await runGit({
        gitDir: fresh.gitDirOf('status'),
        workTree: tree,
        cwd: tree,
        args: STATUS_ARGS,
        env: gitEnv({ home: runnerHome, protocol: 'http', noOptionalLocks: true }),
        protocol: 'http',
        timeoutMs: 60_000,
        ...(confined ? { confineTo: tree } : {}),
      });
      if (r.code !== 0) throw new Error(`git status failed: ${r.stderr}`);
    };
    const toolStatus = () => mustCall(gitStatus, statusCtx, { workspace: 'status' });
    // A raw JSON-RPC session, as bench/http.ts: the figure is the broker's, not the CPU an SDK
    // client spends validating the answer on the same 2 cores.
    const statusSessions = new Map<Setup, RawMcpSession>();
    for (const s of setups) {
      const session = await RawMcpSession.open(s.inst.socket(TEAM, 'git'));
      teardown.unshift(async () => session.close());
      statusSessions.set(s, session);
    }
    const airlockStatusOf = (s: Setup) => async () => {
      const r = (await statusSessions.get(s)!.request('tools/call', {
        name: 'git_status',
        arguments: { workspace: 'status' },
      })) as CallToolResult;
      if (r.isError || !JSON.stringify(r.structuredContent).includes('dir-0/file-0.txt'))
        throw new Error(`git_status missed the change: ${JSON.stringify(r.content)}`);
    };
    const statusPaths: Array<[string, Timed]> = [
      ['raw git status', rawStatusOf(fresh)],
      ['runner, unconfined', runnerStatus(false)],
      ['runner, confined', runnerStatus(true)],
      ['git_status, handler direct', toolStatus],
      ['git_status, through Airlock', airlockStatusOf(fresh)],
      ...(baseline
        ? ([
            ['raw git status (baseline tree)', rawStatusOf(baseline)],
            ['git_status, baseline Airlock', airlockStatusOf(baseline)],
          ] as Array<[string, Timed]>)
        : []),
    ];
    // The brokers' main threads are busy only with their own git_status calls in these rounds:
    // their on-CPU time per call is what every other session on that broker waits behind.
    const mainCpuBefore = setups.map((s) => mainThreadCpuMs(s.broker.pid!));
    const statusTimes = await measure(
      statusPaths.map(([, fn]) => fn),
      STATUS_WARMUP,
      STATUS_ROUNDS,
    );
    const mainCpuPerCall = setups.map(
      (s, i) => (mainThreadCpuMs(s.broker.pid!) - mainCpuBefore[i]!) / (STATUS_WARMUP + STATUS_ROUNDS),
    );
    const statusOf = (name: string) => statusTimes[statusPaths.findIndex(([n]) => n === name)]!;

    // ---- 3. another team's latency while 8 sessions loop git_status --------------------------
    // Phases per broker, alternating brokers: the probe alone, beside 8 loops of raw git (the
    // control), beside 8 sessions looping git_status through that broker.
    type Phase = 'alone' | 'raw git loops' | 'git_status loops';
    const phases: Phase[] = ['alone', 'raw git loops', 'git_status loops'];
    const probeTimes = new Map<string, number[]>();
    const loopCounts = new Map<string, number>();
    const key = (s: Setup, phase: Phase) => `${s.label}/${phase}`;
    for (const s of setups) {
      for (const phase of phases) probeTimes.set(key(s, phase), []);
    }
    const probes = new Map<Setup, RawMcpSession>();
    const loopers = new Map<Setup, RawMcpSession[]>();
    for (const s of setups) {
      const probe = await RawMcpSession.open(s.inst.socket(PROBE_TEAM, 'http'));
      teardown.unshift(async () => probe.close());
      probes.set(s, probe);
      const sessions: RawMcpSession[] = [];
      for (let i = 0; i < LOOP_SESSIONS; i++) {
        const session = await RawMcpSession.open(s.inst.socket(TEAM, 'git'));
        teardown.unshift(async () => session.close());
        sessions.push(session);
      }
      loopers.set(s, sessions);
    }
    /** LOOP_SESSIONS shell loops of raw git status; each prints a line per status. */
    const rawLoops = (s: Setup, counted: () => void): ChildProcess[] =>
      Array.from({ length: LOOP_SESSIONS }, () => {
        const shell = spawn(
          '/bin/sh',
          [
            '-c',
            `while :; do "$@" >/dev/null || exit 1; echo; sleep ${LOOP_PAUSE_MS / 1000}; done`,
            'loop',
            'git',
            ...rawStatusArgs(s),
          ],
          {
            cwd: s.workTreeOf('status'),
            env: fixtureGitEnv({ GIT_OPTIONAL_LOCKS: '0' }),
            stdio: ['ignore', 'pipe', 'inherit'],
          },
        );
        shell.stdout!.on('data', (d: Buffer) => {
          for (const byte of d) if (byte === 10) counted();
        });
        return shell;
      });
    const stopLoop = (shell: ChildProcess) => {
      const exited = new Promise((r) => shell.once('exit', r));
      shell.kill('SIGKILL');
      return exited;
    };
    const probeCall = (s: Setup) =>
      rawCall(probes.get(s)!, 'http_request', { method: 'GET', url: `${origin}/v1/probe` });
    for (let repeat = 0; repeat < 2; repeat++) {
      for (const s of setups) {
        for (const phase of phases) {
          let stop = false;
          let loops = 0;
          const background =
            phase === 'git_status loops'
              ? Array.from({ length: LOOP_SESSIONS }, async (_, i) => {
                  while (!stop) {
                    await rawCall(loopers.get(s)![i]!, 'git_status', { workspace: 'status' });
                    loops++;
                    await new Promise((r) => setTimeout(r, LOOP_PAUSE_MS));
                  }
                })
              : [];
          // The control's loops are shell loops, not this process's: spawning git from here
          // would stall the probe's own client.
          const shells = phase === 'raw git loops' ? rawLoops(s, () => loops++) : [];
          await new Promise((r) => setTimeout(r, 200)); // let the loops get going
          const times = probeTimes.get(key(s, phase))!;
          const until = performance.now() + LOOP_MS;
          while (performance.now() < until) times.push(await time(() => probeCall(s)));
          stop = true;
          await Promise.all([...background, ...shells.map(stopLoop)]);
          loopCounts.set(key(s, phase), (loopCounts.get(key(s, phase)) ?? 0) + loops);
        }
      }
    }

    // The durable floor of one call: the broker fsyncs two audit records (request and result).
    const syncMs = await fdatasyncMs(path.dirname(fresh.inst.auditFile));

    // ---- report -------------------------------------------------------------------------------
    const ms0 = (x: number) => x.toFixed(0).padStart(7);
    const ms1 = (x: number) => x.toFixed(1).padStart(7);
    const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(1)}`;
    const verdict = (ok: boolean) => (ok ? 'OK' : 'MISSED');
    console.log(
      `git server speed — ${os.cpus().length} cores, node ${process.version}, ${(await run('git', ['--version'])).stdout.trim()}` +
        (baseline ? `; baseline ${values['baseline-cli']}` : ''),
    );
    if (push) {
      console.log(
        `\ngit_push, 50 MB change (${PUSH_ROUNDS} rounds after ${PUSH_WARMUP} warm-up, medians; target ratio ≤ 1.1 vs raw)`,
      );
      console.log('path'.padEnd(28), 'median ms'.padStart(10), 'ratio'.padStart(7), '  rounds ms');
      const rawPushMedian = median(push.raw);
      for (const [name, times] of [
        ['raw git push', push.raw],
        ['git_push, handler direct', push.tool],
        ['git_push, through Airlock', push.airlock],
      ] as const) {
        console.log(
          name.padEnd(28),
          ms0(median(times)).padStart(10),
          (median(times) / rawPushMedian).toFixed(3).padStart(7),
          ` [${times.map((t) => t.toFixed(0)).join(', ')}]`,
        );
      }
      const pushRatio = median(push.airlock) / rawPushMedian;
      console.log(
        `→ through Airlock: ratio ${pushRatio.toFixed(3)} (target ≤ 1.1) ${verdict(pushRatio <= 1.1)}`,
      );
    }

    console.log(
      `\ngit_status, 10,000-file work tree (${STATUS_ROUNDS} rounds after ${STATUS_WARMUP} warm-up; target overhead ≤ 3 ms vs raw)`,
    );
    console.log(
      'path'.padEnd(32),
      'median ms'.padStart(10),
      'p90 ms'.padStart(8),
      'overhead ms'.padStart(12),
    );
    const rawMedian = median(statusOf('raw git status'));
    const baseRawMedian = baseline ? median(statusOf('raw git status (baseline tree)')) : rawMedian;
    for (const [name] of statusPaths) {
      const times = statusOf(name);
      const against = name.includes('baseline') ? baseRawMedian : rawMedian;
      console.log(
        name.padEnd(32),
        ms1(median(times)).padStart(10),
        ms1(percentile(times, 0.9)).padStart(8),
        signed(median(times) - against).padStart(12),
      );
    }
    const overhead = median(statusOf('git_status, through Airlock')) - rawMedian;
    const confinement = median(statusOf('runner, confined')) - median(statusOf('runner, unconfined'));
    console.log(`→ confinement (runner confined − unconfined): ${signed(confinement)} ms at the median`);
    console.log(
      `→ through Airlock: overhead ${overhead.toFixed(1)} ms at the median (target ≤ 3 ms) ${verdict(overhead <= 3)}; ` +
        `broker alone (Airlock − direct handler) ${(median(statusOf('git_status, through Airlock')) - median(statusOf('git_status, handler direct'))).toFixed(1)} ms`,
    );
    console.log(
      `→ of which the durable audit's floor: 2 × fdatasync = ${(2 * syncMs).toFixed(2)} ms (one write + fdatasync of a record in the audit folder: ${syncMs.toFixed(2)} ms median)`,
    );
    console.log(
      `→ broker main thread on CPU per git_status: ${setups.map((s, i) => `${s.label} ${mainCpuPerCall[i]!.toFixed(2)} ms`).join(', ')}`,
    );
    if (baseline) {
      const baseOverhead = median(statusOf('git_status, baseline Airlock')) - baseRawMedian;
      console.log(
        `→ baseline: overhead ${baseOverhead.toFixed(1)} ms; new − baseline ${signed(overhead - baseOverhead)} ms`,
      );
    }

    console.log(
      `\nanother team's http_request while ${LOOP_SESSIONS} sessions loop git_status (${LOOP_PAUSE_MS} ms pause between calls, 2 × ${LOOP_MS / 1000} s per phase; target: does not move vs the raw git control)`,
    );
    console.log(
      'broker'.padEnd(10),
      'phase'.padEnd(18),
      'probe p50 ms'.padStart(13),
      'p99 ms'.padStart(8),
      'calls'.padStart(7),
      'loops/s'.padStart(8),
    );
    for (const s of setups) {
      for (const phase of phases) {
        const times = probeTimes.get(key(s, phase))!;
        const loops = loopCounts.get(key(s, phase)) ?? 0;
        console.log(
          s.label.padEnd(10),
          phase.padEnd(18),
          ms1(percentile(times, 0.5)).padStart(13),
          ms1(percentile(times, 0.99)).padStart(8),
          String(times.length).padStart(7),
          (phase === 'alone' ? '-' : (loops / ((2 * LOOP_MS) / 1000)).toFixed(0)).padStart(8),
        );
      }
      const control = probeTimes.get(key(s, 'raw git loops'))!;
      const loaded = probeTimes.get(key(s, 'git_status loops'))!;
      console.log(
        `→ ${s.label}: git_status loops move the probe by ${signed(percentile(loaded, 0.5) - percentile(control, 0.5))} ms at p50, ` +
          `${signed(percentile(loaded, 0.99) - percentile(control, 0.99))} ms at p99 (vs the raw git control)`,
      );
    }
  } finally {
    for (const step of teardown) await step();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(2);
});
