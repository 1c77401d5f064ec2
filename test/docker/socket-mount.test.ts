// run-agent.sh mounts the team's socket folder read-only. This checks, on the real kernel, the claim
// that makes that safe to do: a read-only bind mount stops changes to the folder but still lets a
// client connect() to a Unix socket inside it (connecting needs write permission on the socket
// inode, which the mount flag does not take away).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

let root: string;
let server: net.Server;

beforeEach(async () => {
  root = mkdtempSync(path.join(tmpdir(), 'airlock-rosock-'));
  mkdirSync(path.join(root, 'team'));
  mkdirSync(path.join(root, 'mnt'));
  server = net.createServer((socket) => socket.end('pong\n'));
  await new Promise<void>((resolve) => server.listen(path.join(root, 'team', 'git.sock'), resolve));
});

afterEach(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(root, { recursive: true, force: true });
});

/** Runs a shell script in new user + mount namespaces (unprivileged; the mounts vanish with it). */
function inMountNamespace(
  script: string,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('unshare', ['--user', '--map-root-user', '--mount', 'sh', '-c', script], {
      env: { ...process.env, ROOT: root, NODE: process.execPath },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 20_000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

describe('a read-only bind mount of the socket folder', () => {
  it('blocks writes to the folder but not connect() to its sockets', async () => {
    const result = await inMountNamespace(`
      set -e
      mount --bind "$ROOT/team" "$ROOT/mnt"
      mount -o remount,bind,ro "$ROOT/mnt"
      grep -q " $ROOT/mnt ro," /proc/self/mountinfo && echo mount=ro
      if touch "$ROOT/mnt/new-file" 2>/dev/null; then echo create=allowed; else echo create=refused; fi
      if rm "$ROOT/mnt/git.sock" 2>/dev/null; then echo unlink=allowed; else echo unlink=refused; fi
      "$NODE" -e '
        const s = require("node:net").connect(process.argv[1]);
        s.on("data", (d) => process.stdout.write("reply=" + d));
        s.on("error", (e) => { console.log("connect=" + e.code); process.exitCode = 1; });
      ' "$ROOT/mnt/git.sock"
    `);
    expect(result.stderr).toBe('');
    expect(result.stdout.split('\n')).toEqual([
      'mount=ro',
      'create=refused',
      'unlink=refused',
      'reply=pong',
      '',
    ]);
    expect(result.status).toBe(0);
  });
});
