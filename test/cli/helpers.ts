// Running the built `airlock` command as a process, as an operator would.
import { spawn, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CLI, cliReadableByAnyUid } from '../helpers/fixture.js';

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** `airlock ARGS…` in `cwd` (default: a fresh empty folder, so no stray airlock.yaml is found). */
export function airlock(args: string[], opts: SpawnSyncOptions & { cwd?: string } = {}): Run {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { PATH: process.env.PATH, ...(opts.env ?? {}) },
    ...opts,
  });
  return { status: r.status, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
}

export function emptyDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'al-cli-'));
}

/**
 * `airlock ARGS…` without blocking this process: needed when the command talks to a server that
 * this test process runs (spawnSync would stall its event loop, and the server with it).
 */
export function airlockAsync(
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { PATH: process.env.PATH, ...(opts.env ?? {}) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** `airlock ARGS…` as uid/gid 1000 with no supplementary groups (a non-root broker user). */
export async function airlockAsUid1000(args: string[]): Promise<Run> {
  const cli = await cliReadableByAnyUid();
  const r = spawnSync(
    'setpriv',
    ['--reuid', '1000', '--regid', '1000', '--clear-groups', process.execPath, cli, ...args],
    { encoding: 'utf8', timeout: 20_000 },
  );
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
