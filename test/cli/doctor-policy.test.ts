// doctor checks what serve will need; --json on doctor, policy check and audit verify; policy
// check without an airlock.yaml; messages that read as advice, not validator output.
import { chmod, chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { makeInstallation, type Installation } from '../helpers/fixture.js';
import { airlock, airlockAsUid1000, emptyDir } from './helpers.js';

const gitPolicy = (workTree: string) => `team: acme
servers:
  git:
    workspaces:
      app: { path: ${workTree}, remote: "https://git.example.com/app.git" }
    tools:
      git_status: {}
`;

interface DoctorJson {
  ok: boolean;
  problems: number;
  checks: { status: 'ok' | 'warn' | 'fail'; label: string; detail?: string }[];
}

describe('airlock doctor', () => {
  let inst: Installation;
  let workTree: string;
  beforeEach(async () => {
    inst = await makeInstallation({});
    workTree = path.join(inst.root, 'agents', 'app');
    await inst.writePolicy('acme.yaml', gitPolicy(workTree));
  });
  afterEach(async () => {
    await inst.cleanup();
  });
  const doctor = (): DoctorJson => {
    const r = airlock(['doctor', '--json', '--config', inst.configFile]);
    const json = JSON.parse(r.stdout) as DoctorJson;
    expect(r.status).toBe(json.ok ? 0 : 1);
    return json;
  };
  const check = (json: DoctorJson, label: RegExp) => json.checks.find((c) => label.test(c.label));

  it('fails a work tree serve would leave unwritable for the agent (root:root 0755), and says the fix', async () => {
    await mkdir(workTree, { recursive: true });
    await chmod(workTree, 0o755);
    const json = doctor();
    expect(json.ok).toBe(false);
    const c = check(json, /^work tree .*app \(team acme, workspace app\)$/)!;
    expect(c.status).toBe('fail');
    expect(c.detail).toMatch(
      /owned by root:root, which the agent cannot write; not group-writable; no setgid bit/,
    );
    expect(c.detail).toMatch(/fix: chown <agent uid>:<agent gid> .* && chmod 2775 /);
  });

  it('passes a work tree with the agent group, setgid and group-writable; checks socketGroup', async () => {
    await mkdir(workTree, { recursive: true });
    await chown(workTree, 1000, 1000);
    await chmod(workTree, 0o2775);
    expect(check(doctor(), /^work tree /)!.status).toBe('ok');
    const text = await readFile(inst.configFile, 'utf8');
    await writeFile(inst.configFile, `socketGroup: 1234\n${text}`);
    const c = check(doctor(), /^work tree /)!;
    expect(c.status).toBe('fail');
    expect(c.detail).toContain('group 1000, not socketGroup 1234');
  });

  it('fails a missing work tree whose parent is root-owned, and warns when serve will create it for the agent', async () => {
    const missing = check(doctor(), /^work tree /)!;
    expect(missing.status).toBe('fail');
    expect(missing.detail).toMatch(
      /does not exist; create it for the agent: install -d -o <agent uid> -g <agent gid> -m 2775 /,
    );
    await mkdir(path.dirname(workTree), { recursive: true });
    await chown(path.dirname(workTree), 1000, 1000);
    const later = check(doctor(), /^work tree /)!;
    expect(later.status).toBe('warn');
    expect(later.detail).toContain('the first git call creates it 1000:1000 mode 2775');
  });

  it('checks the audit folder by writing and fsyncing in it; a read-only one fails', async () => {
    const auditDir = path.dirname(inst.auditFile);
    await mkdir(auditDir, { recursive: true });
    // It times the fsync too; a slow disk is a warning, never a failure (how slow is the machine's).
    const audit = check(doctor(), /^audit folder /)!;
    expect(audit.detail).toMatch(
      /^writable; fsync works(, but slowly:|;) fdatasync \d+\.\d\d ms \(median of 5; an allowed call waits for two\)/,
    );
    expect(audit.status).toBe(audit.detail.includes('slowly') ? 'warn' : 'ok');
    const text = await readFile(inst.configFile, 'utf8');
    await writeFile(
      inst.configFile,
      text.replace(/file: .*audit\.jsonl/, 'file: /dev/shm/al-doctor-test/audit.jsonl'),
    );
    await mkdir('/dev/shm/al-doctor-test', { recursive: true });
    try {
      const tmpfs = check(doctor(), /^audit folder /)!;
      expect(tmpfs.status).toBe('warn');
      expect(tmpfs.detail).toContain('on tmpfs: records do not survive a reboot');
    } finally {
      await rm('/dev/shm/al-doctor-test', { recursive: true, force: true });
    }
    await writeFile(
      inst.configFile,
      text.replace(/file: .*audit\.jsonl/, 'file: /proc/self/airlock-audit.jsonl'),
    );
    expect(check(doctor(), /^audit folder /)!.status).toBe('fail');
  });

  it('as a user outside socketGroup, fails the group serve could not give the sockets to', async () => {
    const text = await readFile(inst.configFile, 'utf8');
    await writeFile(inst.configFile, `socketGroup: 0\n${text}`);
    await chmod(inst.root, 0o755);
    const { spawnSync } = await import('node:child_process');
    spawnSync('chown', ['-R', '1000:1000', inst.root]);
    const r = await airlockAsUid1000(['doctor', '--config', inst.configFile]);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(
      /^\[FAIL\] socketGroup 0 — this user \(uid 1000\) is not in it, so serve cannot give the sockets to it; add it/m,
    );
  });

  it('names a secret once per line (no doubled prefix) and reports the state folder', async () => {
    const text = await readFile(inst.configFile, 'utf8');
    await writeFile(
      inst.configFile,
      text.replace(/^secrets: \{\}$/m, 'secrets:\n  gone: { env: AIRLOCK_TEST_NEVER_SET_X }'),
    );
    const r = airlock(['doctor', '--config', inst.configFile]);
    const line = r.stdout.split('\n').find((l) => l.includes('secret "gone"'))!;
    expect(line).toMatch(
      /^\[FAIL\] secret "gone" — environment variable AIRLOCK_TEST_NEVER_SET_X is not set$/,
    );
    expect(r.stdout).toMatch(
      /\[warn\] state folder .* — does not exist yet \(created on first use, mode 700/,
    );
  });
});

describe('airlock policy check', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await emptyDir();
    await writeFile(
      path.join(dir, 'team.yaml'),
      `team: web\nservers:\n  http:\n    hosts:\n      - origin: https://api.example.com\n        inject: { header: X-Key, value: "\${secret:some-token}" }\n    tools:\n      http_request: {}\n`,
    );
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('checks PATHs without an airlock.yaml, secret names by shape only, and says so', async () => {
    const r = airlock(['policy', 'check', 'team.yaml'], { cwd: dir });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toBe('ok web team.yaml: http (1 tool)\n');
    expect(r.stderr).toMatch(/^note: no config at airlock\.yaml; secret references are checked by name only/);
    await writeFile(
      path.join(dir, 'bad-name.yaml'),
      'team: web2\nservers:\n  model: { credential: "has space" }\n',
    );
    const bad = airlock(['policy', 'check', 'bad-name.yaml'], { cwd: dir });
    expect(bad.status).toBe(1);
    expect(bad.stdout.trim().split('\n')).toHaveLength(1);
    expect(bad.stdout).toMatch(
      /^bad-name\.yaml:3:24: servers\.model\.credential: secret names use letters, digits/,
    );
    await rm(path.join(dir, 'bad-name.yaml'));
  });

  it('without PATHs and without a config it says what to do; an explicit --config must exist', () => {
    const r = airlock(['policy', 'check'], { cwd: dir });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(
      'no config file; pass --config FILE, or name the policy files or folders to check',
    );
    const given = airlock(['policy', 'check', 'team.yaml', '--config', path.join(dir, 'nope.yaml')], {
      cwd: dir,
    });
    expect(given.status).toBe(1);
    expect(given.stdout).toContain('config file not found');
  });

  it('--json prints one object with the policies and the issues', async () => {
    const ok = airlock(['policy', 'check', '--json', 'team.yaml'], { cwd: dir });
    expect(ok.status).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({
      ok: true,
      config: null,
      policies: [
        {
          team: 'web',
          file: path.join(dir, 'team.yaml'),
          servers: { http: { tools: ['http_request'] } },
          model: false,
        },
      ],
      issues: [],
    });
    await writeFile(path.join(dir, 'broken.yaml'), 'team: x\nservers:\n  htp: {}\n');
    const bad = airlock(['policy', 'check', '--json', 'broken.yaml'], { cwd: dir });
    expect(bad.status).toBe(1);
    expect(JSON.parse(bad.stdout)).toMatchObject({
      ok: false,
      issues: [
        {
          file: path.join(dir, 'broken.yaml'),
          line: 3,
          col: 3,
          message: expect.stringContaining('unknown key "htp"'),
        },
      ],
    });
    await rm(path.join(dir, 'broken.yaml'));
  });

  it('explains empty files, empty lists and brace globs instead of quoting the validator', async () => {
    const cases: [string, string][] = [
      ['', '1:1: the file is empty; expected a mapping of settings'],
      ['team: a\nservers:\n', '2:9: servers: is empty; expected a mapping'],
      [
        'team: a\nservers:\n  model: { credential: k, paths: [] }\n',
        '3:34: servers.model.paths: must list at least one item',
      ],
      [
        'team: a\nservers:\n  http:\n    hosts:\n      - origin: https://a.example\n        paths: ["/v1/{charges,refunds}"]\n    tools: { http_request: {} }\n',
        '6:17: servers.http.hosts[0].paths[0]: bad glob "/v1/{charges,refunds}": braces ({a,b}) are not supported; list each pattern separately',
      ],
    ];
    for (const [text, expected] of cases) {
      await writeFile(path.join(dir, 'case.yaml'), text);
      const r = airlock(['policy', 'check', 'case.yaml'], { cwd: dir });
      expect(r.status, text).toBe(1);
      expect(r.stdout.trim()).toBe(`case.yaml:${expected}`);
      expect(r.stdout).not.toMatch(/Too small|received null|expected object/);
    }
    await rm(path.join(dir, 'case.yaml'));
  });
});

describe('airlock audit verify --json', () => {
  it('prints {ok, file, count} and, for a broken chain, the line and reason', async () => {
    const dir = await emptyDir();
    try {
      const file = path.join(dir, 'audit.jsonl');
      await writeFile(file, '');
      const ok = airlock(['audit', 'verify', '--json', '--file', file]);
      expect(ok.status).toBe(0);
      expect(JSON.parse(ok.stdout)).toEqual({ ok: true, file, count: 0 });
      await writeFile(file, '{"v":1,"seq":1}\n');
      const bad = airlock(['audit', 'verify', '--json', '--file', file]);
      expect(bad.status).toBe(1);
      expect(JSON.parse(bad.stdout)).toMatchObject({
        ok: false,
        file,
        count: 0,
        line: 1,
        reason: expect.any(String),
      });
      const missing = airlock(['audit', 'verify', '--json', '--file', path.join(dir, 'none.jsonl')]);
      expect(missing.status).toBe(1);
      expect(JSON.parse(missing.stdout)).toMatchObject({ ok: false, error: 'ENOENT' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
