// The agent changes its work tree while git runs: a folder git has just checked (and cached as
// a folder) becomes a symlink out of the tree. Git cannot close that race, so every git that
// touches the work tree runs where the work tree is mounted nosymfollow. Without that, a
// checkout writes the branch's files wherever the symlink points, and `git add` stages (and
// git_diff then shows) host files — both as the broker.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildArgv, gitBinary, gitEnv, runGit } from '../../servers/git/runner.js';
import { gitTools } from '../../servers/git/tools.js';
import { callTool, mustCall, tempDir, useGitRemote } from './context.js';
import { createBareRepo, fixtureGitEnv } from './smart-http-server.js';

const SECRET = 'ghs_RacesSecret_3c4d5e6f';
const HOST_SECRET = 'HOST-ONLY-CONTENT-8e1f';
const FILES = 1000;
const ATTEMPTS = 4;
// The loops are sized by ATTEMPTS; this only bounds the wait, generously, for a busy 2-core machine.
const bound = { timeout: 240_000 };
const tool = Object.fromEntries(gitTools.map((t) => [t.name, t]));

const fx = useGitRemote(SECRET);

let counter = 0;
async function workspace(files: Record<string, string>) {
  const n = ++counter;
  const bare = await createBareRepo(fx.repos, `r${n}.git`, { files });
  const workTree = path.join(fx.root, `wt-${n}`);
  const outside = path.join(fx.root, `outside-${n}`);
  await fs.mkdir(outside);
  const ctx = fx.context({
    stateDir: path.join(fx.root, `state-${n}`),
    workTree,
    remote: fx.server.repoUrl(`r${n}.git`),
  });
  await mustCall(tool.git_status!, ctx, { workspace: 'api' });
  return { bare, workTree, outside, ctx };
}

/**
 * The agent: atomically exchanges `dir` (a real folder) with a symlink to `target`, in a loop
 * (renameat2 RENAME_EXCHANGE, so `dir` always exists: git never fails on a missing path).
 */
function startSwapper(workTree: string, target: string): ChildProcess {
  const renameat2 = { x64: 316, arm64: 276 }[process.arch as 'x64' | 'arm64'];
  if (!renameat2) throw new Error(`no renameat2 syscall number for ${process.arch}`);
  return spawn(
    'perl',
    [
      '-e',
      'my ($nr, $dir, $target) = @ARGV; chdir $dir or die; symlink $target, "link" or die;' +
        ' my ($from, $to) = ("dir", "link"); while (1) { syscall($nr, -100, $from, -100, $to, 2) }',
      String(renameat2),
      workTree,
      target,
    ],
    { stdio: 'ignore', detached: true },
  );
}

/** Kills the swapper and waits until it is gone: a dying one could still swap the next attempt's folder. */
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    // gone
  }
  await exited;
}

describe('a folder swapped for a symlink while git runs', () => {
  it('git_checkout never writes the branch files through it', bound, async () => {
    const { bare, workTree, outside, ctx } = await workspace({ 'README.md': 'hi\n' });
    // A branch with many files under dir/ (the agent pushed it earlier).
    const seed = path.join(fx.root, `seed-${counter}`);
    const env = fixtureGitEnv();
    execFileSync('git', ['clone', '--quiet', bare, seed], { env });
    await fs.mkdir(path.join(seed, 'dir'));
    for (let i = 0; i < FILES; i++) await fs.writeFile(path.join(seed, 'dir', `f${i}`), `payload ${i}\n`);
    execFileSync('git', ['-C', seed, 'add', '-A'], { env });
    execFileSync('git', ['-C', seed, 'commit', '--quiet', '-m', 'many files'], { env });
    execFileSync('git', ['-C', seed, 'push', '--quiet', 'origin', 'HEAD:refs/heads/agent/many'], { env });
    await mustCall(tool.git_fetch!, ctx, { workspace: 'api' });

    const swapper = startSwapper(workTree, outside);
    try {
      for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
        await callTool(tool.git_checkout!, ctx, { workspace: 'api', branch: 'agent/many' });
        expect(await fs.readdir(outside), `attempt ${attempt}`).toEqual([]);
        await callTool(tool.git_checkout!, ctx, { workspace: 'api', branch: 'main' });
        expect(await fs.readdir(outside), `attempt ${attempt}`).toEqual([]);
      }
    } finally {
      await stop(swapper);
    }
  });

  it('git_add never stages host files through it', bound, async () => {
    const { workTree, outside, ctx } = await workspace({ 'README.md': 'hi\n' });
    for (let i = 0; i < FILES; i++) await fs.writeFile(path.join(outside, `f${i}`), `${HOST_SECRET} ${i}\n`);
    const refill = async () => {
      // A real dir/ with the same names, so git sees a folder at first.
      for (const name of ['dir', 'link'])
        await fs.rm(path.join(workTree, name), { recursive: true, force: true });
      await fs.mkdir(path.join(workTree, 'dir'));
      // Same sizes as the host files: git lstat()s one file and reads another without noticing.
      const filler = 'a'.repeat(HOST_SECRET.length);
      for (let i = 0; i < FILES; i++)
        await fs.writeFile(path.join(workTree, 'dir', `f${i}`), `${filler} ${i}\n`);
    };
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      await refill();
      const swapper = startSwapper(workTree, outside);
      try {
        await callTool(tool.git_add!, ctx, { workspace: 'api', paths: ['dir'] });
      } finally {
        await stop(swapper);
      }
      const staged = await mustCall(tool.git_diff!, ctx, { workspace: 'api', staged: true });
      expect(staged.structured.diff as string, `attempt ${attempt}`).not.toContain(HOST_SECRET);
    }
  });
});

describe('work-tree confinement', () => {
  it('git confined to a work tree cannot follow a symlink in it; unconfined it can', async () => {
    const { workTree, outside } = await workspace({ 'README.md': 'hi\n' });
    await fs.writeFile(path.join(outside, 'secret.txt'), `${HOST_SECRET}\n`);
    await fs.symlink(outside, path.join(workTree, 'link'));
    const home = await tempDir();
    const base = {
      gitDir: path.join(fx.root, `state-${counter}`, 'git', 'payments', 'api.git'),
      workTree,
      cwd: workTree,
      // `git hash-object <path>` reads the file at a path, following any symlink on the way.
      args: ['hash-object', '--', 'link/secret.txt'],
      env: gitEnv({ home, protocol: 'http' }),
      protocol: 'http' as const,
      timeoutMs: 10_000,
    };
    // The control: the same git outside any namespace follows it. (Not runGit without confineTo:
    // as root that runs in the spawn helper's namespace, where this work tree is already confined.)
    const unconfined = execFileSync(gitBinary(), buildArgv(base), { cwd: workTree, env: base.env });
    expect(unconfined.toString()).toMatch(/^[0-9a-f]{40}/);
    const confined = await runGit({ ...base, confineTo: workTree });
    expect(confined.code).not.toBe(0);
    expect(confined.stderr).toMatch(/Too many levels of symbolic links/);
    // Symlinks themselves are still content: git reads them with readlink.
    const asLink = await runGit({ ...base, args: ['add', '--', 'link'], confineTo: workTree });
    expect(asLink.code, asLink.stderr).toBe(0);
    await fs.rm(home, { recursive: true, force: true });
  });

  it('follows a work tree that was replaced since its confined namespace was made', async () => {
    const { workTree } = await workspace({ 'README.md': 'hi\n' });
    const home = await tempDir();
    const base = {
      gitDir: path.join(fx.root, `state-${counter}`, 'git', 'payments', 'api.git'),
      workTree,
      cwd: workTree,
      args: ['hash-object', '--', 'file.txt'],
      env: gitEnv({ home, protocol: 'http' }),
      protocol: 'http' as const,
      timeoutMs: 10_000,
      confineTo: workTree,
    };
    await fs.writeFile(path.join(workTree, 'file.txt'), 'first\n');
    const first = await runGit(base);
    expect(first.code, first.stderr).toBe(0);
    // Re-provisioned: same path, a different folder.
    await fs.rm(workTree, { recursive: true, force: true });
    await fs.mkdir(workTree);
    await fs.writeFile(path.join(workTree, 'file.txt'), 'second\n');
    const second = await runGit(base);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout.toString()).not.toBe(first.stdout.toString());
    // And the new folder is confined too (a removed folder's mounts vanish in every namespace).
    const outside = await tempDir();
    await fs.writeFile(path.join(outside, 'secret.txt'), `${HOST_SECRET}\n`);
    await fs.symlink(outside, path.join(workTree, 'link'));
    const through = await runGit({ ...base, args: ['hash-object', '--', 'link/secret.txt'] });
    expect(through.code).not.toBe(0);
    expect(through.stderr).toMatch(/Too many levels of symbolic links/);
    await fs.rm(outside, { recursive: true, force: true });
    await fs.rm(home, { recursive: true, force: true });
  });
});
