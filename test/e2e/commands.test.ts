// The operator commands that have no server of their own: claude-config and doctor.
import { spawnSync } from 'node:child_process';
import { writeFile, chmod } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, makeInstallation, type Installation } from '../helpers/fixture.js';

const SECRET = 'tok_commandsTestSecret_5566778899';

describe('airlock claude-config and doctor', () => {
  let inst: Installation;

  beforeAll(async () => {
    inst = await makeInstallation({
      secrets: { 'api-token': SECRET, 'anthropic-key': 'sk-ant-api03-commandsTestKey-AAAA' },
      extraSecretsYaml: '  missing-one: { env: AIRLOCK_TEST_NOT_SET_ANYWHERE }',
      policies: {
        'acme.yaml': `team: acme
servers:
  http:
    hosts:
      - origin: https://api.example.com
        inject: { header: X-Key, value: "\${secret:api-token}" }
    tools:
      http_request: {}
  git:
    workspaces:
      app: { path: ${'/tmp'}/airlock-wt-acme, remote: https://git.example.com/app.git }
    tools:
      git_status: {}
  model:
    credential: anthropic-key
`,
      },
    });
  });

  afterAll(async () => {
    await inst?.cleanup();
  });

  const airlock = (...args: string[]) =>
    spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH } });

  it('prints stdio commands for Claude Code on the host', () => {
    const r = airlock('claude-config', '--team', 'acme', '--config', inst.configFile);
    expect(r.status, r.stderr).toBe(0);
    const json = JSON.parse(r.stdout);
    expect(Object.keys(json.mcpServers).sort()).toEqual(['git', 'http']);
    // The command itself (package.json bin, the bundle's entry), not the dist/src/cli.js forwarder.
    expect(json.mcpServers.http.args).toEqual([
      CLI.replace(/cli\.js$/, 'cli.cjs'),
      'stdio',
      'http',
      '--team',
      'acme',
      '--config',
      inst.configFile,
    ]);
    expect(r.stderr).toContain('"mcp__http__*"');
    expect(r.stdout + r.stderr).not.toContain(SECRET);
  });

  it('prints bridge commands on the mounted sockets with --sandbox, and the model settings', () => {
    const r = airlock('claude-config', '--team', 'acme', '--sandbox', '--config', inst.configFile);
    expect(r.status, r.stderr).toBe(0);
    const json = JSON.parse(r.stdout);
    expect(json.mcpServers.git).toEqual({
      type: 'stdio',
      command: 'airlock-bridge',
      args: ['/run/airlock/git.sock'],
    });
    expect(json.mcpServers.http.args).toEqual(['/run/airlock/http.sock']);
    expect(r.stderr).toContain('ANTHROPIC_BASE_URL=http://127.0.0.1:8080');
    expect(r.stderr).toContain('--listen 127.0.0.1:8080 /run/airlock/model.sock');
  });

  it('--socket-dir names where the socket folder is mounted', () => {
    const r = airlock(
      'claude-config',
      '--team',
      'acme',
      '--sandbox',
      '--socket-dir',
      '/mnt/al',
      '--config',
      inst.configFile,
    );
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).mcpServers.http.args).toEqual(['/mnt/al/http.sock']);
    expect(r.stderr).toContain('/mnt/al/model.sock');
    const bad = airlock(
      'claude-config',
      '--team',
      'acme',
      '--sandbox',
      '--socket-dir',
      'rel',
      '--config',
      inst.configFile,
    );
    expect(bad.status).toBe(1);
  });

  it('accepts --config anywhere on the command line', () => {
    for (const args of [
      ['--config', inst.configFile, 'policy', 'check'],
      ['policy', '--config', inst.configFile, 'check'],
      ['policy', 'check', `--config=${inst.configFile}`],
    ]) {
      const r = airlock(...args);
      expect(r.status, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stdout).toContain('acme');
    }
  });

  it('airlock bridge exits once stdin closes, even if the socket side stays open', async () => {
    const net = await import('node:net');
    const { spawn } = await import('node:child_process');
    const sock = `${inst.root}/quiet.sock`;
    const held: import('node:net').Socket[] = [];
    const server = net.createServer((c) => void held.push(c)); // never answers, never closes
    await new Promise<void>((r) => server.listen(sock, r));
    const child = spawn(process.execPath, [CLI, 'bridge', sock], { stdio: ['pipe', 'pipe', 'pipe'] });
    await new Promise((r) => setTimeout(r, 300));
    child.stdin!.end();
    // A bound on the wait only (-1: it never exited), not on how fast a busy machine is.
    const code = await new Promise<number | null>((resolve) => {
      const t = setTimeout(() => {
        child.kill('SIGKILL');
        resolve(-1);
      }, 30_000);
      child.on('exit', (c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
    expect(code).toBe(0);
    for (const c of held) c.destroy();
    server.close();
  }, 45_000);

  it("is not stopped by another team's broken policy file", async () => {
    const { rm } = await import('node:fs/promises');
    await writeFile(`${inst.policiesDir}/other.yaml`, 'team: other\nservers:\n  http:\n    hostz: []\n');
    try {
      const r = airlock('claude-config', '--team', 'acme', '--config', inst.configFile);
      expect(r.status, r.stderr).toBe(0);
      expect(Object.keys(JSON.parse(r.stdout).mcpServers).sort()).toEqual(['git', 'http']);
      const other = airlock('claude-config', '--team', 'other', '--config', inst.configFile);
      expect(other.status).toBe(1);
      expect(other.stderr).toMatch(/other\.yaml:4:5: .*unknown key "hostz"/);
    } finally {
      await rm(`${inst.policiesDir}/other.yaml`);
    }
  });

  it('refuses an unknown team with exit 1', () => {
    const r = airlock('claude-config', '--team', 'nobody', '--config', inst.configFile);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('no policy for team "nobody"');
  });

  it('doctor names the secret that does not resolve, never printing values, and exits 1', async () => {
    const r = airlock('doctor', '--config', inst.configFile);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/FAIL\] secret "missing-one" — .*AIRLOCK_TEST_NOT_SET_ANYWHERE/);
    expect(r.stdout).toMatch(/ ok \] secret "api-token"/);
    expect(r.stdout).toMatch(/ ok \] git — git version/);
    expect(r.stdout).toMatch(
      / ok \] git work-tree confinement — the git spawn helper's mount namespace \(root\)/,
    );
    expect(r.stdout).not.toContain(SECRET);
  });

  it('doctor passes once every secret resolves, and flags a world-readable secret file', async () => {
    await writeFile(
      inst.configFile,
      (await import('node:fs')).readFileSync(inst.configFile, 'utf8').replace(/^ {2}missing-one:.*\n/m, ''),
    );
    await chmod(`${inst.root}/secrets/api-token`, 0o644);
    // The git work tree as the README asks for it: the agent's user and group, setgid.
    const { mkdir, chown, rm } = await import('node:fs/promises');
    await mkdir('/tmp/airlock-wt-acme', { recursive: true });
    await chown('/tmp/airlock-wt-acme', 1000, 1000);
    await chmod('/tmp/airlock-wt-acme', 0o2775);
    try {
      const r = airlock('doctor', '--config', inst.configFile);
      expect(r.stdout).toMatch(/warn\] secret "api-token"/);
      expect(r.stdout).toMatch(/ ok \] work tree \/tmp\/airlock-wt-acme .* — 1000:1000 mode 2775$/m);
      expect(r.status, r.stdout).toBe(0);
      expect(r.stdout).toContain('all checks passed');
    } finally {
      await rm('/tmp/airlock-wt-acme', { recursive: true, force: true });
    }
  });

  it('doctor fails a team socket folder that is a symlink (serve would refuse it)', async () => {
    const { mkdir, symlink, rm } = await import('node:fs/promises');
    await mkdir(inst.socketDir, { recursive: true });
    await symlink('/etc', `${inst.socketDir}/acme`);
    try {
      const r = airlock('doctor', '--config', inst.configFile);
      expect(r.status).toBe(1);
      expect(r.stdout).toMatch(/FAIL\] team socket folder .*acme — is a symlink; airlock serve refuses it/);
    } finally {
      await rm(`${inst.socketDir}/acme`);
    }
  });
});
