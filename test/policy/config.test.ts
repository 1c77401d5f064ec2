import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { ConfigError, loadConfig, resolveGroup } from '../../src/config/airlock-yaml.js';
import { brief, makeWorkspace } from './helpers.js';

let ws: Awaited<ReturnType<typeof makeWorkspace>>;
beforeEach(async () => {
  ws = await makeWorkspace();
});
afterEach(() => ws.cleanup());

async function configIssues(text: string): Promise<string[]> {
  const file = path.join(ws.dir, 'bad.yaml');
  await (await import('node:fs/promises')).writeFile(file, text);
  const err = await loadConfig(file).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  return brief((err as ConfigError).issues);
}

describe('loadConfig', () => {
  it('resolves relative paths against the config file folder, not the working directory', async () => {
    const config = await loadConfig(path.relative(process.cwd(), ws.configFile));
    expect(config.file).toBe(ws.configFile);
    expect(config.dir).toBe(ws.dir);
    expect(config.socketDir).toBe(path.join(ws.dir, 'run'));
    expect(config.stateDir).toBe(path.join(ws.dir, 'state'));
    expect(config.policies).toBe(path.join(ws.dir, 'policies'));
    expect(config.audit.file).toBe(path.join(ws.dir, 'audit.jsonl'));
    expect(config.secrets['pg-analytics']).toEqual({ file: path.join(ws.dir, 'pg_url') });
    expect(config.secrets['stripe-key']).toEqual({ env: 'STRIPE_KEY' });
    expect(config.socketGroup).toBeUndefined();
  });

  it('resolves a githubApp private key file and keeps absolute paths', async () => {
    const file = path.join(ws.dir, 'app.yaml');
    await (
      await import('node:fs/promises')
    ).writeFile(
      file,
      [
        'socketDir: /run/airlock',
        'stateDir: state',
        'audit: { file: /var/log/a.jsonl }',
        'secrets:',
        '  app:',
        '    githubApp: { appId: 1, installationId: "2", privateKey: { file: keys/app.pem } }',
        '    teams: [payments]',
        '  app2:',
        '    githubApp: { appId: 1, installationId: 2, privateKey: { env: APP_KEY } }',
        '',
      ].join('\n'),
    );
    const config = await loadConfig(file);
    expect(config.socketDir).toBe('/run/airlock');
    expect(config.audit.file).toBe('/var/log/a.jsonl');
    expect(config.policies).toBe(path.join(ws.dir, 'policies')); // the default ./policies
    expect(config.secrets.app).toEqual({
      githubApp: { appId: 1, installationId: '2', privateKey: { file: path.join(ws.dir, 'keys/app.pem') } },
      teams: ['payments'],
    });
    expect(config.secrets.app2).toEqual({
      githubApp: { appId: 1, installationId: 2, privateKey: { env: 'APP_KEY' } },
    });
  });

  it('accepts socketGroup as a gid or a group name', async () => {
    const withGroup = async (value: string) => {
      const file = path.join(ws.dir, `g-${Math.random()}.yaml`);
      await (
        await import('node:fs/promises')
      ).writeFile(file, `socketDir: run\nstateDir: state\naudit: { file: a.jsonl }\nsocketGroup: ${value}\n`);
      return (await loadConfig(file)).socketGroup;
    };
    expect(await withGroup('root')).toBe(0);
    expect(await withGroup('1000')).toBe(1000);
    expect(await withGroup('"1234"')).toBe(1234);
    expect(await resolveGroup('root')).toBe(0);
    expect(await resolveGroup('no-such-group-airlock')).toBeUndefined();
  });

  it('reports an unknown group at its value', async () => {
    expect(
      await configIssues(
        'socketDir: run\nstateDir: s\naudit: { file: a }\nsocketGroup: no-such-group-airlock\n',
      ),
    ).toEqual(['4:14: socketGroup: unknown group "no-such-group-airlock" (not in /etc/group)']);
  });

  it('reports every config mistake with its position', async () => {
    const lines = await configIssues(
      [
        'socketDir: 5',
        'audit: { file: a, fsync: true }',
        'polices: ./p',
        'secrets:',
        '  ok: { env: X }',
        '  typo: { env: X, team: [payments] }',
        '  "bad name": { env: X }',
        '  empty: {}',
        '  wrongteam: { env: X, teams: [Payments] }',
        '',
      ].join('\n'),
    );
    expect(lines).toEqual([
      '1:1: missing required key "stateDir"',
      '1:12: socketDir: expected a string, not a number',
      '2:19: audit: unknown key "fsync" (allowed: file, postgres)',
      '3:1: unknown key "polices" (allowed: socketDir, socketGroup, socketGroups, stateDir, approvers, policies, audit, brokerId, secrets, sessions, telemetry, limits)',
      '6:19: secrets.typo: unknown key "team" (allowed: env, teams)',
      '7:3: secrets: invalid key "bad name": secret names use letters, digits, ".", "_" and "-"',
      '8:10: secrets.empty: expected a mapping with exactly one of: env, file, keychain, githubApp',
      '9:32: secrets.wrongteam.teams[0]: team names match [a-z0-9][a-z0-9-]*',
    ]);
  });

  it('reads limits: local by default, postgres with a connection secret', async () => {
    const base = [
      'socketDir: run',
      'stateDir: state',
      'audit: { file: a.jsonl }',
      'secrets:',
      '  db: { env: DB, teams: [payments] }',
    ];
    const file = path.join(ws.dir, 'limits.yaml');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(file, [...base, ''].join('\n'));
    expect((await loadConfig(file)).limits).toEqual({ store: 'local', timeoutMs: 2000 });
    await writeFile(
      file,
      [...base, 'limits: { store: postgres, connection: db, timeoutMs: 500 }', ''].join('\n'),
    );
    expect((await loadConfig(file)).limits).toEqual({ store: 'postgres', connection: 'db', timeoutMs: 500 });
  });

  it('reports limits mistakes with their position', async () => {
    const head = ['socketDir: run', 'stateDir: state', 'audit: { file: a.jsonl }'];
    const app = '  app: { githubApp: { appId: 1, installationId: 2, privateKey: { env: K } } }';
    expect(await configIssues([...head, 'limits: { store: postgres }', ''].join('\n'))).toEqual([
      '4:9: limits: limits.connection is required when store is postgres: name the secret holding the postgres:// URL',
    ]);
    expect(
      await configIssues(
        [...head, 'secrets:', app, 'limits: { store: postgres, connection: nope }', ''].join('\n'),
      ),
    ).toEqual(['6:40: limits.connection: unknown secret "nope"; known secrets: app']);
    expect(
      await configIssues(
        [...head, 'secrets:', app, 'limits: { store: postgres, connection: app }', ''].join('\n'),
      ),
    ).toEqual([
      '6:40: limits.connection: secret "app" is a GitHub App; the limits store needs a secret holding a postgres:// URL',
    ]);
    expect(
      await configIssues(
        [...head, 'limits:', '  store: redis', '  timeoutMs: 10', '  pool: 3', ''].join('\n'),
      ),
    ).toEqual([
      '5:10: limits.store: must be one of: local, postgres',
      '6:14: limits.timeoutMs: must be 50 or more',
      '7:3: limits: unknown key "pool" (allowed: store, connection, timeoutMs)',
    ]);
  });

  it('takes policies from git: defaults, an inline ssh key, a key file, the folder in force', async () => {
    const fs = await import('node:fs/promises');
    const pub = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8aLqQy3lV8mFqH8K7xZ2cJ9s0yZk1V9WQ3Yh0b2pQk';
    await fs.writeFile(path.join(ws.dir, 'signer.pub'), `${pub} release@example.test\n`);
    await fs.writeFile(
      path.join(ws.dir, 'signer.asc'),
      '-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ\n-----END PGP PUBLIC KEY BLOCK-----\n',
    );
    const file = path.join(ws.dir, 'git.yaml');
    await fs.writeFile(
      file,
      [
        'socketDir: run',
        'stateDir: state',
        'audit: { file: a.jsonl }',
        'secrets: { repo-token: { env: REPO_TOKEN } }',
        'policies:',
        '  git: https://git.example.test/acme/policies.git',
        '  every: 5m',
        '  path: teams/',
        '  credential: repo-token',
        `  requireSignedBy: ["${pub}", ./signer.pub, signer.asc]`,
        '',
      ].join('\n'),
    );
    const config = await loadConfig(file);
    expect(config.policies).toBe(path.join(ws.dir, 'state', 'policy-git', 'current'));
    expect(config.policyGit).toMatchObject({
      url: 'https://git.example.test/acme/policies.git',
      protocol: 'https',
      ref: 'main',
      everyMs: 300_000,
      path: 'teams',
      credential: 'repo-token',
      credentialUser: 'x-access-token',
    });
    expect(config.policyGit!.requireSignedBy.map((k) => k.kind)).toEqual(['ssh', 'ssh', 'openpgp']);
    expect(config.policyGit!.requireSignedBy[1]).toMatchObject({ kind: 'ssh', key: pub });
    // file:// (a repository on this host) is accepted, without a credential.
    const localFile = path.join(ws.dir, 'local.yaml');
    await fs.writeFile(
      localFile,
      'socketDir: r\nstateDir: s\naudit: { file: a }\npolicies: { git: "file:///srv/p.git", every: 1s }\n',
    );
    expect((await loadConfig(localFile)).policyGit).toMatchObject({ protocol: 'file', everyMs: 1000 });
  });

  it('reports every mistake in a git policy source with its position', async () => {
    const fs = await import('node:fs/promises');
    await fs.writeFile(path.join(ws.dir, 'notakey.txt'), 'hello\n');
    const lines = await configIssues(
      [
        'socketDir: run',
        'stateDir: state',
        'audit: { file: a.jsonl }',
        'secrets: { app: { githubApp: { appId: 1, installationId: 2, privateKey: { env: K } } } }',
        'policies:',
        '  git: http://git.example.test/p.git',
        '  ref: "main..x"',
        '  every: 500ms',
        '  path: ../up',
        '  credential: nope',
        '  requireSignedBy: [./missing.pub, notakey.txt]',
        '  branch: main',
        '',
      ].join('\n'),
    );
    expect(lines).toEqual([
      '6:8: policies.git: http:// URLs are allowed only on a loopback host; use https://',
      '7:8: policies.ref: branch name contains "..", "@{" or "//"',
      '8:10: policies.every: bad duration "500ms": expected a number and s, m, h or d (e.g. "30m")',
      '9:9: policies.path: path must not contain "." or ".." parts',
      '12:3: policies: unknown key "branch" (allowed: git, ref, every, credential, credentialUser, requireSignedBy, path)',
    ]);
    const second = await configIssues(
      [
        'socketDir: run',
        'stateDir: state',
        'audit: { file: a.jsonl }',
        'secrets: { app: { githubApp: { appId: 1, installationId: 2, privateKey: { env: K } } } }',
        'policies:',
        '  git: https://user:pw@git.example.test/p.git',
        '',
      ].join('\n'),
    );
    expect(second).toEqual(['6:8: policies.git: URL must not carry user info; use `credential`']);
    const keys = await configIssues(
      [
        'socketDir: run',
        'stateDir: state',
        'audit: { file: a.jsonl }',
        'secrets: { app: { githubApp: { appId: 1, installationId: 2, privateKey: { env: K } } } }',
        'policies:',
        '  git: https://git.example.test/p.git',
        '  credential: nope',
        '  requireSignedBy: [./missing.pub, notakey.txt]',
        '',
      ].join('\n'),
    );
    expect(keys).toEqual([
      '7:15: policies.credential: unknown secret "nope"; known secrets: app',
      `8:21: policies.requireSignedBy[0]: not an ssh public key or an armored OpenPGP public key, and as a key file ${path.join(ws.dir, 'missing.pub')}: no such file`,
      `8:36: policies.requireSignedBy[1]: ${path.join(ws.dir, 'notakey.txt')}: holds neither an ssh public key line nor an armored OpenPGP public key`,
    ]);
  });

  it('reports a missing config file', async () => {
    const missing = path.join(ws.dir, 'nope.yaml');
    await expect(loadConfig(missing)).rejects.toThrow(
      `${missing}:1:1: config file not found (pass --config FILE)`,
    );
  });

  it('refuses a config that is a FIFO or a device instead of blocking on it', async () => {
    const fifo = path.join(ws.dir, 'fifo.yaml');
    execFileSync('mkfifo', [fifo]);
    const attempt = (file: string) =>
      Promise.race([
        loadConfig(file).then(
          () => 'loaded',
          (e: Error) => e.message,
        ),
        new Promise((r) => setTimeout(() => r('still reading'), 5_000)),
      ]);
    expect(await attempt(fifo)).toBe(`${fifo}:1:1: config file is not a regular file`);
    expect(await attempt('/dev/zero')).toBe('/dev/zero:1:1: config file is not a regular file');
  });

  it('loads the example config', async () => {
    const config = await loadConfig(path.join(import.meta.dirname, '../../airlock.example.yaml'));
    expect(config.socketGroup).toBe(1000);
    expect(Object.keys(config.secrets).sort()).toEqual([
      'anthropic-key',
      'gh-app',
      'github-token',
      'pg-analytics',
      'stripe-key',
    ]);
    expect(config.policies).toBe(path.resolve(import.meta.dirname, '../../policies'));
  });
});
