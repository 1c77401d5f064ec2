// Git server speed against raw git on the same machine, in one run (prints figures; not a test).
//  1. git_push of a 50 MB change vs raw `git push` to the same loopback smart-HTTP server
//     (target: ratio ≤ 1.1).
//  2. git_status on a 10,000-file work tree vs raw `git status` (target: overhead ≤ 5 ms).
// Each case is measured three ways:
//  - raw git on the very git dir and work tree the tools use;
//  - the tool handler called directly in this process (isolates the git server itself);
//  - through Airlock: an MCP SDK Client on the team's Unix socket → `airlock serve` as its own
//    process → pipeline (policy, durable audit record) → git. This is the figure the targets are for.
// The direct handler and the broker share one git dir and work tree per workspace (same state
// folder and team), so all three paths push the same commit and read the same index.
//
// Run: npx tsc -p . && node dist/bench/git.js [--status-only]   (--status-only skips the push case)
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { gitAdd, gitCommit, gitPush, gitStatus } from '../servers/git/tools.js';
import { gitContext, mustCall } from '../test/git/context.js';
import { createBareRepo, fixtureGitEnv, refOf, startSmartHttpServer } from '../test/git/smart-http-server.js';
import { connectSocketClient, makeInstallation } from '../test/helpers/fixture.js';

const run = promisify(execFile);
const SECRET = 'ghs_BenchSecret_a1b2c3d4';
const TEAM = 'bench';
const STATUS_ONLY = process.argv.includes('--status-only');
const PUSH_WARMUP = 1;
const PUSH_ROUNDS = 7;
const PUSH_BYTES = 50 * 1024 * 1024;
const BRANCH = 'bench/push';
const STATUS_WARMUP = 5;
const STATUS_ROUNDS = 60;
// A 50 MB push is well past the SDK's 60 s default request timeout on a slow machine.
const CALL_TIMEOUT_MS = 5 * 60_000;
// The built CLI next to this file (fixture.ts's CLI assumes it runs from the source tree).
const CLI = path.resolve(import.meta.dirname, '../src/cli.js');

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

async function startBroker(configFile: string, socketPath: string): Promise<ChildProcess> {
  const broker = spawn(process.execPath, [CLI, 'serve', '--config', configFile], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, AIRLOCK_LOG_LEVEL: 'warn' },
  });
  for (let i = 0; i < 400 && !existsSync(socketPath); i++) {
    if (broker.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  if (!existsSync(socketPath)) {
    await stopBroker(broker);
    throw new Error(`broker did not open ${socketPath}`);
  }
  return broker;
}

async function stopBroker(broker: ChildProcess): Promise<void> {
  if (broker.exitCode !== null || broker.signalCode !== null) return;
  const exited = new Promise((r) => broker.once('exit', r));
  broker.kill('SIGTERM');
  await exited;
}

async function main(): Promise<void> {
  // The installation's root is short (Unix socket paths are limited to ~107 bytes); work trees
  // and bare repositories live in it too, so one rm cleans everything.
  const inst = await makeInstallation({ secrets: { 'git-token': SECRET } });
  // Undone in reverse order of setup, whatever fails in between.
  const teardown: Array<() => Promise<unknown>> = [() => inst.cleanup()];
  try {
    const root = await fs.realpath(inst.root);
    const repos = path.join(root, 'repos');
    await fs.mkdir(repos);
    const server = await startSmartHttpServer({ root: repos, username: 'x-access-token', password: SECRET });
    teardown.unshift(() => server.close());
    const basic = Buffer.from(`x-access-token:${SECRET}`).toString('base64');
    const workTreeOf = (ws: string) => path.join(root, 'wt', ws);
    const gitDirOf = (ws: string) => path.join(inst.stateDir, 'git', TEAM, `${ws}.git`);

    // One seed repository copied for every remote, so every remote's main is the same commit and
    // each push sends exactly the new commit. Re-seeding a remote (same URL, fresh contents) lets
    // every round push the same 50 MB commit to remotes that lack it.
    const seed = await createBareRepo(repos, 'seed.git', { files: { 'README.md': 'bench\n' } });
    const seeded = async (name: string) => {
      const bare = path.join(repos, name);
      await fs.rm(bare, { recursive: true, force: true });
      await fs.cp(seed, bare, { recursive: true });
      return bare;
    };

    const policyWorkspaces = ['push', 'status']
      .map(
        (ws) =>
          `      ${ws}:\n        path: ${workTreeOf(ws)}\n        remote: ${server.repoUrl(`airlock-${ws}.git`)}\n        credential: git-token\n`,
      )
      .join('');
    await inst.writePolicy(
      `${TEAM}.yaml`,
      `team: ${TEAM}\nservers:\n  git:\n    workspaces:\n${policyWorkspaces}    tools:\n` +
        `      git_status: {}\n      git_add: {}\n      git_commit: {}\n      git_create_branch: {}\n` +
        `      git_push: { branches: ["**"] }\n`,
    );
    for (const ws of ['push', 'status']) await seeded(`airlock-${ws}.git`);

    const broker = await startBroker(inst.configFile, inst.socket(TEAM, 'git'));
    teardown.unshift(() => stopBroker(broker));
    const { client } = await connectSocketClient(inst.socket(TEAM, 'git'));
    teardown.unshift(() => client.close());
    /** The direct handler's context: same state folder, team and work tree as the broker's. */
    const directContext = (ws: string, remote: string) =>
      gitContext({
        stateDir: inst.stateDir,
        team: TEAM,
        secrets: { 'git-token': SECRET },
        section: { workspaces: { [ws]: { path: workTreeOf(ws), remote, credential: 'git-token' } } },
      });

    // ---- 1. push of a 50 MB change -----------------------------------------------------------
    // The commit is made once (through the broker; the first call clones, untimed); every round
    // then pushes it to three freshly seeded remotes, one per path.
    const ws = 'push';
    let push: { raw: number[]; tool: number[]; airlock: number[] } | undefined;
    if (!STATUS_ONLY) {
      await brokerCall(client, 'git_status', { workspace: ws });
      await fs.writeFile(path.join(workTreeOf(ws), 'blob.bin'), randomBytes(PUSH_BYTES));
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
            gitDirOf(ws),
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
            await seeded(`airlock-${ws}.git`),
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
    const statusWorkTree = workTreeOf('status');
    const statusCtx = directContext('status', server.repoUrl('airlock-status.git'));
    await brokerCall(client, 'git_status', { workspace: 'status' }); // clones (not timed)
    for (let d = 0; d < 100; d++) {
      const dir = path.join(statusWorkTree, `dir-${d}`);
      await fs.mkdir(dir);
      await Promise.all(
        Array.from({ length: 100 }, (_, f) => fs.writeFile(path.join(dir, `file-${f}.txt`), `${d}/${f}\n`)),
      );
    }
    await mustCall(gitAdd, statusCtx, { workspace: 'status', paths: ['.'] });
    await mustCall(gitCommit, statusCtx, { workspace: 'status', message: '10k files' });
    await fs.writeFile(path.join(statusWorkTree, 'dir-0', 'file-0.txt'), 'changed\n');
    const rawStatus = () =>
      run(
        'git',
        [
          '--git-dir',
          gitDirOf('status'),
          '--work-tree',
          statusWorkTree,
          'status',
          '--porcelain=v2',
          '-z',
          '--branch',
        ],
        { cwd: statusWorkTree, env: fixtureGitEnv({ GIT_OPTIONAL_LOCKS: '0' }) },
      );
    const toolStatus = () => mustCall(gitStatus, statusCtx, { workspace: 'status' });
    const airlockStatus = async () => {
      const s = await brokerCall(client, 'git_status', { workspace: 'status' });
      if (!JSON.stringify(s).includes('dir-0/file-0.txt')) throw new Error('git_status missed the change');
    };
    const [rawStatuses, toolStatuses, airlockStatuses] = await measure(
      [rawStatus, toolStatus, airlockStatus],
      STATUS_WARMUP,
      STATUS_ROUNDS,
    );
    const status = { raw: rawStatuses!, tool: toolStatuses!, airlock: airlockStatuses! };

    // ---- report -------------------------------------------------------------------------------
    const ms0 = (x: number) => x.toFixed(0).padStart(7);
    const ms1 = (x: number) => x.toFixed(1).padStart(7);
    const verdict = (ok: boolean) => (ok ? 'OK' : 'MISSED');
    console.log(
      `git server speed — ${os.cpus().length} cores, node ${process.version}, ${(await run('git', ['--version'])).stdout.trim()}`,
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
      'path'.padEnd(28),
      'median ms'.padStart(10),
      'p90 ms'.padStart(8),
      'overhead ms'.padStart(12),
    );
    const rawStatusMedian = median(status.raw);
    for (const [name, times] of [
      ['raw git status', status.raw],
      ['git_status, handler direct', status.tool],
      ['git_status, through Airlock', status.airlock],
    ] as const) {
      console.log(
        name.padEnd(28),
        ms1(median(times)).padStart(10),
        ms1(percentile(times, 0.9)).padStart(8),
        `+${(median(times) - rawStatusMedian).toFixed(1)}`.padStart(12),
      );
    }
    const overhead = median(status.airlock) - rawStatusMedian;
    console.log(
      `→ through Airlock: overhead ${overhead.toFixed(1)} ms at the median (target ≤ 3 ms) ${verdict(overhead <= 3)}; ` +
        `broker alone (Airlock − direct handler) ${(median(status.airlock) - median(status.tool)).toFixed(1)} ms`,
    );
  } finally {
    for (const step of teardown) await step();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(2);
});
