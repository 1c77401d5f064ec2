// `airlock init` scaffolds a working installation; `airlock call` runs one tool through the
// session pipeline against a real upstream, audited as transport "cli".
import { mkdir, chown, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAuditFile } from './audit-records.js';
import {
  acmeHttpPolicy,
  makeInstallation,
  startEchoUpstream,
  type Installation,
} from '../helpers/fixture.js';
import { airlock, airlockAsync, emptyDir } from './helpers.js';

describe('airlock init', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await emptyDir();
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates a config, a commented policy with $schema, the folders with their modes, and prints the next commands', async () => {
    const target = path.join(dir, 'site');
    const r = airlock(['init', '--dir', target, '--team', 'payments'], { cwd: dir });
    expect(r.status, r.stderr).toBe(0);
    const policy = await readFile(path.join(target, 'policies/payments.yaml'), 'utf8');
    expect(policy.split('\n')[0]).toBe('# yaml-language-server: $schema=schema.json');
    expect(policy).toContain('team: payments');
    expect(JSON.parse(await readFile(path.join(target, 'policies/schema.json'), 'utf8')).title).toBe(
      'Airlock team policy',
    );
    const mode = async (p: string) => (await stat(path.join(target, p))).mode & 0o7777;
    expect(await mode('run')).toBe(0o755);
    expect(await mode('state')).toBe(0o700);
    expect(await mode('audit')).toBe(0o700);
    expect((await stat(path.join(target, 'run'))).uid).toBe(process.getuid!());
    const next = r.stdout.slice(r.stdout.indexOf('next:'));
    expect(next).toContain('airlock policy check --config site/airlock.yaml');
    expect(next).toContain('airlock doctor --config site/airlock.yaml');
    expect(next).toContain('airlock serve --config site/airlock.yaml');

    // What it made is valid and ready: the printed next commands succeed.
    const config = path.join(target, 'airlock.yaml');
    const check = airlock(['policy', 'check', '--config', config], { cwd: dir });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toMatch(/^ok payments .*payments\.yaml: http \(1 tool\)$/m);
    const doctor = airlock(['doctor', '--config', config], { cwd: dir });
    expect(doctor.status, doctor.stdout).toBe(0);
  });

  it('never overwrites: a second init changes nothing and exits 1', async () => {
    const target = path.join(dir, 'again');
    expect(airlock(['init', '--dir', target], { cwd: dir }).status).toBe(0);
    const before = await readFile(path.join(target, 'airlock.yaml'), 'utf8');
    await writeFile(path.join(target, 'airlock.yaml'), before + '# edited\n');
    const r = airlock(['init', '--dir', target], { cwd: dir });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/airlock\.yaml already exists; nothing was changed/);
    expect(await readFile(path.join(target, 'airlock.yaml'), 'utf8')).toBe(before + '# edited\n');
  });

  it('refuses a bad team name', () => {
    const r = airlock(['init', '--dir', path.join(dir, 'bad'), '--team', 'Pay Ments'], { cwd: dir });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('--team "Pay Ments": a team name is lowercase letters');
  });
});

const SECRET = 'tok_cliCallSecret_0a1b2c3d4e5f6789';

describe('airlock call', () => {
  let inst: Installation;
  let upstream: Awaited<ReturnType<typeof startEchoUpstream>>;

  beforeAll(async () => {
    upstream = await startEchoUpstream();
    inst = await makeInstallation({
      secrets: { 'api-token': SECRET },
      policies: { 'acme.yaml': acmeHttpPolicy(upstream.origin) },
    });
  });
  afterAll(async () => {
    await upstream?.close();
    await inst?.cleanup();
  });

  const call = (...args: string[]) => airlockAsync(['call', ...args, '--config', inst.configFile]);
  /** http_request as team acme with `method` and `path` on the upstream. */
  const request = (method: string, urlPath: string) =>
    call(
      'http',
      'http_request',
      '--team',
      'acme',
      '--json',
      JSON.stringify({ method, url: `${upstream.origin}${urlPath}` }),
    );

  it('runs an allowed call with the credential injected, prints the result, audits request and result as cli', async () => {
    const r = await request('GET', '/v1/ping');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('/v1/ping');
    expect(r.stdout + r.stderr).not.toContain(SECRET);
    expect(upstream.requests.at(-1)!.headers.authorization).toBe(`Bearer ${SECRET}`);
    const records = await readAuditFile(inst.auditFile);
    const mine = records.filter((x) => x.call === records.at(-1)!.call);
    expect(mine.map((x) => [x.phase, x.decision, x.transport])).toEqual([
      ['request', 'allow', 'cli'],
      ['result', 'allow', 'cli'],
    ]);
    expect(JSON.stringify(records)).not.toContain(SECRET);
  });

  it('a call the policy refuses prints the denial, exits 1, and is audited as a cli denial', async () => {
    const before = upstream.requests.length;
    const r = await request('DELETE', '/v1/x');
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/^denied: http\.hosts/);
    expect(upstream.requests.length).toBe(before);
    const last = (await readAuditFile(inst.auditFile)).at(-1)!;
    expect([last.phase, last.decision, last.transport, last.tool]).toEqual([
      'result',
      'deny',
      'cli',
      'http_request',
    ]);
  });

  it('a tool the policy does not list is denied and audited (default deny)', async () => {
    const r = await call('http', 'http_delete_everything', '--team', 'acme');
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/^denied: /);
    const last = (await readAuditFile(inst.auditFile)).at(-1)!;
    expect([last.tool, last.decision, last.transport]).toEqual(['http_delete_everything', 'deny', 'cli']);
  });

  it('bad input is a clear error that calls and records nothing', async () => {
    const count = (await readAuditFile(inst.auditFile)).length;
    const cases: [string[], RegExp][] = [
      [['http', 'http_request', '--team', 'acme', '--json', '{not json'], /--json is not valid JSON/],
      [['http', 'http_request', '--team', 'acme', '--json', '[1,2]'], /--json must be a JSON object/],
      [['http', 'http_request', '--team', 'nobody'], /no policy for team "nobody"/],
      [['git', 'git_status', '--team', 'acme'], /team "acme" does not enable the git server/],
      [['ftp', 'get', '--team', 'acme'], /unknown server "ftp"/],
      [['http', 'http_request'], /--team TEAM is required/],
    ];
    for (const [args, message] of cases) {
      const r = await call(...args);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(message);
    }
    expect((await readAuditFile(inst.auditFile)).length).toBe(count);
  });

  it('reads the arguments from stdin with --json -', async () => {
    const r = await airlockAsync(
      ['call', 'http', 'http_request', '--team', 'acme', '--json', '-', '--config', inst.configFile],
      {
        input: JSON.stringify({ method: 'GET', url: `${upstream.origin}/v1/stdin` }),
      },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('/v1/stdin');
  });
});

describe('a git work tree that does not exist yet', () => {
  it('is created owned like its parent folder, group-writable and setgid (never root:root 0755)', async () => {
    const dir = await emptyDir();
    const inst = await makeInstallation({
      secrets: { tok: 'tok_gitWorkTreeSecret_11223344' },
      policies: {
        'acme.yaml': `team: acme
servers:
  git:
    workspaces:
      app: { path: ${dir}/agents/app, remote: "http://127.0.0.1:9/app.git", credential: tok }
    tools:
      git_status: {}
`,
      },
    });
    try {
      await mkdir(path.join(dir, 'agents'));
      await chown(path.join(dir, 'agents'), 1000, 1000);
      // The clone fails (nothing listens on port 9); the work tree is made before it.
      airlock([
        'call',
        'git',
        'git_status',
        '--team',
        'acme',
        '--json',
        '{"workspace":"app"}',
        '--config',
        inst.configFile,
      ]);
      const st = await stat(path.join(dir, 'agents/app'));
      expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([1000, 1000, 0o2775]);
    } finally {
      await inst.cleanup();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
