// docker/compose.example.yaml as Compose itself reads it: the `docker compose` plugin when the
// machine has it, else Debian's docker-compose (1.29; Debian ships no compose plugin).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { dockerDir } from './helpers.js';

function findCompose(): string[] {
  if (spawnSync('docker', ['compose', 'version'], { timeout: 20_000 }).status === 0)
    return ['docker', 'compose'];
  if (spawnSync('docker-compose', ['version'], { timeout: 20_000 }).status === 0) return ['docker-compose'];
  throw new Error(
    'neither `docker compose` nor docker-compose is installed (apt-get install docker-compose)',
  );
}

const workspace = mkdtempSync(path.join(tmpdir(), 'airlock-compose-'));
afterAll(() => rmSync(workspace, { recursive: true, force: true }));

/** `compose -p airlock-payments -f compose.example.yaml config`, run from docker/ as the file says. */
function composeConfig(env: NodeJS.ProcessEnv) {
  const [command, ...args] = findCompose();
  return spawnSync(command!, [...args, '-p', 'airlock-payments', '-f', 'compose.example.yaml', 'config'], {
    cwd: dockerDir,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 30_000,
  });
}

describe('compose.example.yaml, read by Compose', () => {
  it('validates, with the sandbox settings and pull_policy: never', () => {
    const result = composeConfig({ AIRLOCK_WORKSPACE: workspace });
    expect(result.status, result.stderr).toBe(0);
    const agent = parseYaml(result.stdout).services.agent;
    expect(agent.image).toBe('airlock-agent:latest');
    expect(agent.pull_policy).toBe('never');
    expect(agent.network_mode).toBe('none');
    expect(agent.read_only).toBe(true);
    expect(agent.cap_drop).toEqual(['ALL']);
    expect(String(agent.user)).toBe('1000:1000');
    // Compose spells it seccomp=… or seccomp:… depending on its version.
    expect((agent.security_opt as string[]).map((o) => o.replace(':', '='))).toEqual(
      expect.arrayContaining(['no-new-privileges=true', 'seccomp=./seccomp.json']),
    );
    const volumes = agent.volumes as Array<{ source: string; target: string; read_only?: boolean }>;
    expect(volumes.find((v) => v.target === '/workspace')?.source).toBe(workspace);
    expect(volumes.find((v) => v.target === '/run/airlock')).toMatchObject({
      source: '/run/airlock/payments',
      read_only: true,
    });
  });

  it('refuses to run without AIRLOCK_WORKSPACE, and says what to set', () => {
    const env = { ...process.env };
    delete env.AIRLOCK_WORKSPACE;
    const [command, ...args] = findCompose();
    const result = spawnSync(command!, [...args, '-f', 'compose.example.yaml', 'config'], {
      cwd: dockerDir,
      encoding: 'utf8',
      env,
      timeout: 30_000,
    });
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('set AIRLOCK_WORKSPACE');
  });
});
