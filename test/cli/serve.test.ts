// `airlock serve` start-up as an operator meets it: socket folders that cannot be made exit 1
// once with the path and the fix (never a mkdir spin), strict secrets, and both log formats.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLI, makeInstallation, type Installation } from '../helpers/fixture.js';
import { airlock, airlockAsUid1000 } from './helpers.js';

const POLICY = `team: acme
servers:
  http:
    hosts:
      - origin: http://127.0.0.1:9
        allowPrivateAddress: true
    tools:
      http_request: {}
`;

let inst: Installation;
beforeEach(async () => {
  inst = await makeInstallation({ policies: { 'acme.yaml': POLICY } });
});
afterEach(async () => {
  await inst.cleanup();
});

async function withSocketDir(socketDir: string): Promise<void> {
  const text = await readFile(inst.configFile, 'utf8');
  await writeFile(inst.configFile, text.replace(/^socketDir: .*$/m, `socketDir: ${socketDir}`));
}

/** How often `text` occurs in `haystack`. */
const occurrences = (haystack: string, text: string) => haystack.split(text).length - 1;

describe('a socket folder that cannot be created', () => {
  const cases: [string, () => Promise<string>, RegExp][] = [
    [
      'a path under /proc',
      async () => '/proc/airlock-test',
      /cannot create socketDir \/proc\/airlock-test: \/proc does not allow creating folders .*choose a path on a real filesystem/,
    ],
    [
      'a file in the path (ENOTDIR)',
      async () => {
        await writeFile(path.join(inst.root, 'plain-file'), '');
        return path.join(inst.root, 'plain-file', 'run');
      },
      /plain-file is not a directory; remove it or choose another path/,
    ],
    [
      'a broken symlink',
      async () => {
        await symlink(path.join(inst.root, 'gone'), path.join(inst.root, 'link'));
        return path.join(inst.root, 'link');
      },
      /link is a symlink to .*gone, which does not exist; create the target folder or remove the link/,
    ],
  ];
  for (const [what, setup, message] of cases) {
    it(`${what}: serve exits 1 with the path and the fix, said once; doctor fails it too`, async () => {
      const socketDir = await setup();
      await withSocketDir(socketDir);
      const r = airlock(['serve', '--config', inst.configFile], { timeout: 20_000 });
      expect(r.status, r.stderr).toBe(1);
      const last = r.stderr.trimEnd().split('\n').at(-1)!;
      expect(last).toMatch(message);
      expect(last.startsWith('airlock: ')).toBe(true);
      expect(occurrences(r.stderr, last)).toBe(1);
      expect(r.stderr.split('\n').filter((l) => l.includes('socketDir')).length).toBe(1);
      const doctor = airlock(['doctor', '--config', inst.configFile]);
      expect(doctor.status).toBe(1);
      expect(doctor.stdout).toMatch(new RegExp(`FAIL\\] socket folder .* — .*${message.source}`));
    });
  }

  it('an audit folder that cannot be created is the same: exit 1, the path and the fix', async () => {
    const text = await readFile(inst.configFile, 'utf8');
    await writeFile(
      inst.configFile,
      text.replace(/^ {2}file: .*$/m, '  file: /proc/airlock-audit-test/audit.jsonl'),
    );
    const r = airlock(['serve', '--config', inst.configFile], { timeout: 20_000 });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toBe(
      'airlock: cannot create audit folder /proc/airlock-audit-test: /proc does not allow creating folders ' +
        '(a virtual filesystem such as /proc or /sys); choose a path on a real filesystem\n',
    );
  });

  it('permission denied (as uid 1000): exit 1 with the path and how to create it', async () => {
    const parent = path.join(inst.root, 'rootonly');
    await mkdir(parent, { mode: 0o755 });
    await chmod(parent, 0o755);
    await withSocketDir(path.join(parent, 'run'));
    // Everything else the broker needs belongs to uid 1000.
    spawnSync('chown', [
      '-R',
      '1000:1000',
      inst.policiesDir,
      path.join(inst.root, 'secrets'),
      inst.configFile,
    ]);
    await mkdir(path.dirname(inst.auditFile), { recursive: true });
    await mkdir(inst.stateDir, { recursive: true });
    spawnSync('chown', ['-R', '1000:1000', path.dirname(inst.auditFile), inst.stateDir]);
    await chmod(inst.root, 0o755);
    const r = await airlockAsUid1000(['serve', '--config', inst.configFile]);
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(
      /cannot create socketDir .*rootonly\/run: permission denied in .*rootonly\. Create it once as root \(install -d/,
    );
    expect(occurrences(r.stderr, 'permission denied')).toBe(1);
  });
});

describe('secrets that do not resolve', () => {
  beforeEach(async () => {
    const text = await readFile(inst.configFile, 'utf8');
    await writeFile(
      inst.configFile,
      text.replace(/^secrets: \{\}$/m, 'secrets:\n  absent-one: { env: AIRLOCK_TEST_UNSET_SECRET_VAR }'),
    );
  });

  it('serve --strict-secrets refuses to start and names the secret', () => {
    const r = airlock(['serve', '--strict-secrets', '--log-format', 'json', '--config', inst.configFile]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/airlock: strict secrets: "absent-one" does not resolve/);
    expect(existsSync(inst.socket('acme', 'http'))).toBe(false);
  });

  it('secrets: { strict: true } in airlock.yaml does the same', async () => {
    const text = await readFile(inst.configFile, 'utf8');
    await writeFile(inst.configFile, text.replace(/^secrets:$/m, 'secrets:\n  strict: true'));
    const r = airlock(['serve', '--config', inst.configFile]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/strict secrets: "absent-one" does not resolve/);
    // The option is not taken for a secret by anything else.
    const check = airlock(['policy', 'check', '--config', inst.configFile]);
    expect(check.status, check.stdout + check.stderr).toBe(0);
  });

  it('without strict, serve starts and warns naming the secret once', async () => {
    const child = spawn(
      process.execPath,
      [CLI, 'serve', '--log-format', 'json', '--config', inst.configFile],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    try {
      const until = Date.now() + 15_000;
      while (!existsSync(inst.socket('acme', 'http')) && Date.now() < until)
        await new Promise((r) => setTimeout(r, 50));
      expect(existsSync(inst.socket('acme', 'http'))).toBe(true);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    const warnings = stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { level: number; secret?: string; msg: string })
      .filter((l) => l.level === 40);
    expect(warnings.map((w) => w.secret)).toEqual(['absent-one']);
    expect(occurrences(stderr, 'absent-one')).toBe(1);
  });
});

describe('serve logs', () => {
  async function firstLines(format: string): Promise<string[]> {
    const child = spawn(
      process.execPath,
      [CLI, 'serve', '--log-format', format, '--config', inst.configFile],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const until = Date.now() + 15_000;
    while (!stderr.includes('ready') && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    return stderr.trim().split('\n');
  }

  it('--log-format json: one JSON object per line', async () => {
    const lines = await firstLines('json');
    expect(lines.length).toBeGreaterThan(2);
    for (const l of lines) expect(JSON.parse(l)).toHaveProperty('msg');
  });

  it('--log-format pretty: local time, level and message, then the fields', async () => {
    const lines = await firstLines('pretty');
    const listening = lines.find((l) => l.includes('listening'))!;
    expect(listening).toMatch(
      /^\d\d:\d\d:\d\d\.\d{3} INFO +listening team=acme server=http socketPath=\S+http\.sock$/,
    );
    for (const l of lines) expect(() => JSON.parse(l)).toThrow();
  });
});
