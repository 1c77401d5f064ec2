// Git server speed, against raw git on the same machine (prints figures; not a test).
//  1. git_push of a 50 MB change through the tool vs raw `git push` to the same loopback
//     smart-HTTP server (target: ratio ≤ 1.1).
//  2. git_status on a 10,000-file work tree through the tool vs raw `git status`
//     (target: overhead ≤ 5 ms).
// Run: npx tsc -p . && node dist/bench/git.js
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { gitAdd, gitCommit, gitCreateBranch, gitPush, gitStatus } from '../servers/git/tools.js';
import { gitContext, mustCall, tempDir } from '../test/git/context.js';
import { createBareRepo, fixtureGitEnv, refOf, startSmartHttpServer } from '../test/git/smart-http-server.js';

const run = promisify(execFile);
const SECRET = 'ghs_BenchSecret_a1b2c3d4';
const PUSH_ROUNDS = 3;
const STATUS_ROUNDS = 60;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

async function time<T>(fn: () => Promise<T>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

async function main(): Promise<void> {
  const root = await tempDir('airlock-git-bench-');
  const repos = path.join(root, 'repos');
  await fs.mkdir(repos);
  const server = await startSmartHttpServer({ root: repos, username: 'x-access-token', password: SECRET });
  const basic = Buffer.from(`x-access-token:${SECRET}`).toString('base64');
  try {
    // ---- 1. push of a 50 MB change -----------------------------------------------------------
    const toolTimes: number[] = [];
    const rawTimes: number[] = [];
    for (let i = 0; i < PUSH_ROUNDS; i++) {
      await createBareRepo(repos, `tool-${i}.git`, { files: { 'README.md': 'bench\n' } });
      const rawBare = await createBareRepo(repos, `raw-${i}.git`, { files: { 'README.md': 'bench\n' } });
      const workTree = path.join(root, `push-wt-${i}`);
      const ctx = gitContext({
        stateDir: path.join(root, `push-state-${i}`),
        secrets: { 'github-token': SECRET },
        section: {
          workspaces: {
            api: { path: workTree, remote: server.repoUrl(`tool-${i}.git`), credential: 'github-token' },
          },
        },
      });
      await mustCall(gitStatus, ctx, { workspace: 'api' });
      await fs.writeFile(path.join(workTree, 'blob.bin'), randomBytes(50 * 1024 * 1024));
      await mustCall(gitAdd, ctx, { workspace: 'api', paths: ['blob.bin'] });
      const sha = (await mustCall(gitCommit, ctx, { workspace: 'api', message: '50 MB' })).structured
        .sha as string;
      await mustCall(gitCreateBranch, ctx, { workspace: 'api', name: 'bench/push' });
      const gitDir = path.join(root, `push-state-${i}`, 'git', 'payments', 'api.git');
      const rawPush = () =>
        run(
          'git',
          [
            '-c',
            `http.extraHeader=Authorization: Basic ${basic}`,
            '--git-dir',
            gitDir,
            'push',
            '--quiet',
            server.repoUrl(`raw-${i}.git`),
            `${sha}:refs/heads/bench/push`,
          ],
          { env: fixtureGitEnv(), maxBuffer: 16 * 1024 * 1024 },
        );
      const toolPush = () =>
        mustCall(gitPush, ctx, { workspace: 'api', branch: 'bench/push' }, { branches: ['bench/*'] });
      // Alternate the order so page-cache warmth favours neither side.
      if (i % 2 === 0) {
        toolTimes.push(await time(toolPush));
        rawTimes.push(await time(rawPush));
      } else {
        rawTimes.push(await time(rawPush));
        toolTimes.push(await time(toolPush));
      }
      if (
        refOf(rawBare, 'refs/heads/bench/push') !== sha ||
        refOf(path.join(repos, `tool-${i}.git`), 'refs/heads/bench/push') !== sha
      ) {
        throw new Error('a push did not land');
      }
    }
    const pushRatio = median(toolTimes) / median(rawTimes);
    console.log(
      `git_push 50 MB: tool median ${median(toolTimes).toFixed(0)} ms, raw git push median ${median(rawTimes).toFixed(0)} ms, ratio ${pushRatio.toFixed(3)} (target ≤ 1.1) ${pushRatio <= 1.1 ? 'OK' : 'MISSED'}`,
    );
    console.log(
      `  rounds: tool [${toolTimes.map((t) => t.toFixed(0)).join(', ')}], raw [${rawTimes.map((t) => t.toFixed(0)).join(', ')}]`,
    );

    // ---- 2. status on 10,000 files ----------------------------------------------------------
    await createBareRepo(repos, 'status.git', { files: { 'README.md': 'bench\n' } });
    const workTree = path.join(root, 'status-wt');
    const ctx = gitContext({
      stateDir: path.join(root, 'status-state'),
      secrets: { 'github-token': SECRET },
      section: {
        workspaces: {
          api: { path: workTree, remote: server.repoUrl('status.git'), credential: 'github-token' },
        },
      },
    });
    await mustCall(gitStatus, ctx, { workspace: 'api' });
    for (let d = 0; d < 100; d++) {
      const dir = path.join(workTree, `dir-${d}`);
      await fs.mkdir(dir);
      await Promise.all(
        Array.from({ length: 100 }, (_, f) => fs.writeFile(path.join(dir, `file-${f}.txt`), `${d}/${f}\n`)),
      );
    }
    await mustCall(gitAdd, ctx, { workspace: 'api', paths: ['.'] });
    await mustCall(gitCommit, ctx, { workspace: 'api', message: '10k files' });
    await fs.writeFile(path.join(workTree, 'dir-0', 'file-0.txt'), 'changed\n');
    const gitDir = path.join(root, 'status-state', 'git', 'payments', 'api.git');
    const rawStatus = () =>
      run(
        'git',
        ['--git-dir', gitDir, '--work-tree', workTree, 'status', '--porcelain=v2', '-z', '--branch'],
        {
          cwd: workTree,
          env: fixtureGitEnv({ GIT_OPTIONAL_LOCKS: '0' }),
        },
      );
    const toolStatus = () => mustCall(gitStatus, ctx, { workspace: 'api' });
    for (let i = 0; i < 5; i++) {
      await rawStatus();
      await toolStatus();
    }
    const toolStatusTimes: number[] = [];
    const rawStatusTimes: number[] = [];
    for (let i = 0; i < STATUS_ROUNDS; i++) {
      rawStatusTimes.push(await time(rawStatus));
      toolStatusTimes.push(await time(toolStatus));
    }
    const overhead = median(toolStatusTimes) - median(rawStatusTimes);
    console.log(
      `git_status 10,000 files: tool median ${median(toolStatusTimes).toFixed(1)} ms, raw git status median ${median(rawStatusTimes).toFixed(1)} ms, overhead ${overhead.toFixed(1)} ms (target ≤ 5 ms) ${overhead <= 5 ? 'OK' : 'MISSED'}`,
    );
  } finally {
    await server.close();
    await fs.rm(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(2);
});
