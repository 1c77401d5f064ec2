// A new user's clone inside a 0700 folder (root's home, `mktemp -d`): uid 1000 cannot read a
// single file of it, and `npm run demo` there must still run the agent inside the boundary (it
// stages what the agent runs into a folder uid 1000 can read) rather than fall back to running
// it unboxed.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AGENT_GID, AGENT_UID } from '../../src/demo/sandbox.js';
import { REPO_ROOT } from '../helpers/fixture.js';

const privateRoot = mkdtempSync(path.join(tmpdir(), 'airlock-private-'));
afterAll(() => rmSync(privateRoot, { recursive: true, force: true }));

function must(command: string, args: string[], cwd?: string): string {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${r.stderr || r.error}`);
  return r.stdout;
}

function run(command: string, args: string[], cwd: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    // A bound on the wait (the build and the demo on a busy machine), not a timing assertion.
    const timer = setTimeout(() => child.kill('SIGKILL'), 400_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe('a clone inside a 0700 folder', () => {
  it('`npm run demo` there runs the agent in the sandbox', async () => {
    expect(statSync(privateRoot).mode & 0o777).toBe(0o700);
    const clone = path.join(privateRoot, 'airlock');
    must('git', ['clone', '--quiet', '--no-checkout', REPO_ROOT, clone]);
    must('git', [
      '-C',
      clone,
      'checkout',
      '--quiet',
      must('git', ['-C', REPO_ROOT, 'rev-parse', 'HEAD']).trim(),
    ]);
    // The installed dependencies, as `npm ci` would leave them (hard links: same files, no download).
    const linked = spawnSync('cp', ['-al', path.join(REPO_ROOT, 'node_modules'), clone]);
    if (linked.status !== 0) must('cp', ['-a', path.join(REPO_ROOT, 'node_modules'), clone]);

    // The agent's uid really cannot read the clone.
    const probe = spawnSync('setpriv', [
      `--reuid=${AGENT_UID}`,
      `--regid=${AGENT_GID}`,
      '--clear-groups',
      'test',
      '-r',
      path.join(clone, 'package.json'),
    ]);
    expect(probe.status).toBe(1);

    const demo = await run('npm', ['run', 'demo'], clone);
    expect(demo.code, demo.output).toBe(0);
    expect(demo.output).toContain('Sandbox   the agent runs in its own network namespace');
    expect(demo.output).not.toContain('NO SANDBOX');
    expect(demo.output).not.toContain('WITHOUT the sandbox');
    expect(demo.output).toMatch(/^✓ Done: \d+ allowed and \d+ denied calls, all audited/m);
  }, 420_000);
});
