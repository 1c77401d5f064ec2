// The git spawn helper (servers/git/spawner.ts): git is forked by a small long-lived process,
// not the broker, and that must keep every guarantee a direct spawn gave — a clean environment,
// the umask asked for, the output cap, the whole process group killed on abort and timeout —
// and survive the helper dying.
import { execFileSync, spawnSync } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { gitEnv, runGit, GitAbortError, type GitRunOptions } from '../../servers/git/runner.js';
import { SpawnServer } from '../../servers/git/spawner.js';
import { tempDir } from './context.js';

/** In a git alias's shell: the pid of git's parent (field 4 of /proc/<git>/stat; git's name has no space). */
const GIT_PARENT = "cut -d' ' -f4 /proc/$PPID/stat";

/** `git -c alias.x=!sh` runs any shell line as "git x" — here used only to get a real child. */
async function shellThroughGit(
  home: string,
  script: string,
  extra: Partial<GitRunOptions> = {},
): Promise<ReturnType<typeof runGit>> {
  return runGit({
    cwd: home,
    // An alias outside the hardening list: enough to run a command line the test controls.
    args: ['-c', `alias.t=!${script}`, 't'],
    env: gitEnv({ home, protocol: 'file' }),
    protocol: 'file',
    timeoutMs: 20_000,
    ...extra,
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(check: () => boolean, ms = 5000): Promise<boolean> {
  for (const until = Date.now() + ms; Date.now() < until;) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return check();
}

describe('git spawn helper', () => {
  it('forks git outside the broker, with only the environment the runner built', async () => {
    const home = await tempDir();
    process.env.AIRLOCK_SPAWNER_TEST_SECRET = 'must-not-leak';
    try {
      const r = await shellThroughGit(home, `echo "helper=$(${GIT_PARENT})"; env`);
      expect(r.code, r.stderr).toBe(0);
      const out = r.stdout.toString();
      expect(out).not.toContain('must-not-leak');
      expect(out).toContain(`HOME=${home}`);
      // git's parent is the helper (a bare `node -e`), not this process.
      const helper = Number(/helper=(\d+)/.exec(out)?.[1]);
      expect(helper).toBeGreaterThan(1);
      expect(helper).not.toBe(process.pid);
      expect(readFileSync(`/proc/${helper}/cmdline`, 'utf8').split('\0')).toContain('-e');
    } finally {
      delete process.env.AIRLOCK_SPAWNER_TEST_SECRET;
      await fs.rm(home, { recursive: true, force: true });
    }
  });

  it('gives git the umask asked for, and leaves the next command at its own', async () => {
    const home = await tempDir();
    const withMask = await shellThroughGit(home, 'umask; true', { umask: 0o002 });
    const without = await shellThroughGit(home, 'umask; true');
    expect(withMask.stdout.toString().trim()).toBe('0002');
    expect(without.stdout.toString().trim()).toBe(
      (process.umask(process.umask()) & 0o777).toString(8).padStart(4, '0'),
    );
    await fs.rm(home, { recursive: true, force: true });
  });

  it('stops at the output cap, and passes stdin through', async () => {
    const home = await tempDir();
    const capped = await shellThroughGit(home, 'yes airlock', { maxOutputBytes: 100_000 });
    expect(capped.truncated).toBe(true);
    expect(capped.stdout.length).toBe(100_000);
    const echoed = await shellThroughGit(home, 'cat', { input: 'through the helper\n' });
    expect(echoed.stdout.toString()).toBe('through the helper\n');
    await fs.rm(home, { recursive: true, force: true });
  });

  it('kills the whole process group on abort and on timeout', async () => {
    const home = await tempDir();
    const pidFile = path.join(home, 'grandchild.pid');
    // A grandchild of git that would outlive git if only git were killed.
    const script = `sleep 60 & echo $! > ${pidFile}; wait`;
    const controller = new AbortController();
    const aborted = shellThroughGit(home, script, { signal: controller.signal });
    expect(await waitFor(() => readFileSync(pidFile, { flag: 'a+' }).length > 0)).toBe(true);
    controller.abort();
    await expect(aborted).rejects.toEqual(new GitAbortError('aborted'));
    const first = Number(readFileSync(pidFile, 'utf8'));
    expect(await waitFor(() => !alive(first))).toBe(true);

    await fs.rm(pidFile);
    const timedOut = shellThroughGit(home, script, { timeoutMs: 1500 });
    await expect(timedOut).rejects.toEqual(new GitAbortError('timeout'));
    const second = Number(readFileSync(pidFile, 'utf8'));
    expect(await waitFor(() => !alive(second))).toBe(true);
    await fs.rm(home, { recursive: true, force: true });
  });

  it('a helper that died fails its running commands, and the next command starts a new one', async () => {
    const home = await tempDir();
    const first = await shellThroughGit(home, GIT_PARENT);
    const helper = Number(first.stdout.toString().trim());
    expect(alive(helper)).toBe(true);
    const running = shellThroughGit(home, 'sleep 30');
    await new Promise((r) => setTimeout(r, 200));
    process.kill(helper, 'SIGKILL');
    await expect(running).rejects.toThrow(/could not run git: the git spawn helper exited/);
    const after = await shellThroughGit(home, GIT_PARENT);
    const next = Number(after.stdout.toString().trim());
    expect(next).toBeGreaterThan(1);
    expect(next).not.toBe(helper);
    await fs.rm(home, { recursive: true, force: true });
  });

  it('confines a work tree mounted after the helper started (a fresh helper sees the mount)', async () => {
    const root = await tempDir();
    const home = path.join(root, 'home');
    const early = path.join(root, 'early');
    const late = path.join(root, 'late');
    const outside = path.join(root, 'outside');
    for (const dir of [home, early, late, outside]) await fs.mkdir(dir);
    await fs.writeFile(path.join(outside, 'secret.txt'), 'HOST ONLY\n');
    const confinedHash = (workTree: string, file: string) =>
      runGit({
        cwd: workTree,
        args: ['hash-object', '--', file],
        env: gitEnv({ home, protocol: 'file' }),
        protocol: 'file',
        timeoutMs: 20_000,
        confineTo: workTree,
      });
    // A helper is running, its namespace made before the volume below is mounted.
    await fs.writeFile(path.join(early, 'a.txt'), 'a\n');
    expect((await confinedHash(early, 'a.txt')).code).toBe(0);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'airlock-test', late]);
    try {
      await fs.writeFile(path.join(late, 'on-volume.txt'), 'on the volume\n');
      await fs.symlink(outside, path.join(late, 'link'));
      // git sees the volume's files (not the folder under it), and cannot follow its symlinks.
      const onVolume = await confinedHash(late, 'on-volume.txt');
      expect(onVolume.code, onVolume.stderr).toBe(0);
      const through = await confinedHash(late, 'link/secret.txt');
      expect(through.code).not.toBe(0);
      expect(through.stderr).toMatch(/Too many levels of symbolic links/);
      // The first work tree is confined in the fresh helper too.
      expect((await confinedHash(early, 'a.txt')).code).toBe(0);
    } finally {
      execFileSync('umount', ['-l', late]);
      await fs.rm(root, { recursive: true, force: true });
    }
  });

  it('exits when its broker drops it, killing what it still runs', async () => {
    const home = await tempDir();
    const pidFile = path.join(home, 'sleep.pid');
    const server = await SpawnServer.start();
    const done = new Promise<string | undefined>((resolve) =>
      server.spawn(
        {
          file: '/bin/sh',
          args: ['-c', `echo $$ > ${pidFile}; exec sleep 60`],
          cwd: '/',
          env: {},
          maxOut: 1024,
        },
        { stdout: () => undefined, stderr: () => undefined, done: (_code, error) => resolve(error) },
      ),
    );
    const keepAlive = setInterval(() => undefined, 100);
    try {
      expect(await waitFor(() => readFileSync(pidFile, { flag: 'a+' }).length > 0)).toBe(true);
      const sleeper = Number(readFileSync(pidFile, 'utf8'));
      expect(alive(sleeper)).toBe(true);
      server.child.disconnect();
      expect(await waitFor(() => !alive(server.pid))).toBe(true);
      expect(await done).toMatch(/helper exited/);
      expect(await waitFor(() => !alive(sleeper))).toBe(true);
    } finally {
      clearInterval(keepAlive);
      await fs.rm(home, { recursive: true, force: true });
    }
  });

  it('keeps a process alive while its only work is a git command, and not once the helper is idle', async () => {
    // `airlock serve` fetches policies from git before any socket listens: with the helper's IPC
    // channel unref'd for good, Node exited under the fetch (CI: "serve did not open its sockets").
    const home = await tempDir();
    const runner = pathToFileURL(
      path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/servers/git/runner.js'),
    ).href;
    const script = [
      `const { runGit, gitEnv } = await import(${JSON.stringify(runner)});`,
      `const r = await runGit({ cwd: ${JSON.stringify(home)}, args: ['-c', 'alias.t=!sleep 0.3; echo ran', 't'],`,
      `  env: gitEnv({ home: ${JSON.stringify(home)}, protocol: 'file' }), protocol: 'file', timeoutMs: 20000 });`,
      `process.stdout.write('code=' + r.code + ' ' + r.stdout.toString());`,
    ].join('\n');
    try {
      // The build, in a plain Node process with nothing else to do, as `airlock serve` runs it.
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(r.stderr).toBe('');
      // It printed (it waited for git), and it exited on its own (the idle helper let it go).
      expect(r.stdout).toBe('code=0 ran\n');
      expect(r.status).toBe(0);
      expect(r.signal).toBeNull();
    } finally {
      await fs.rm(home, { recursive: true, force: true });
    }
  });
});
