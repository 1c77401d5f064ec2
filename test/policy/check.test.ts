import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig, type AirlockConfig } from '../../src/config/airlock-yaml.js';
import { checkPolicyFiles, MAX_POLICY_FILE_BYTES } from '../../src/policy/team-policy.js';
import { ServerCatalog, type ServerDefinition } from '../../src/tool.js';
import { fakeHttp, fakeServers } from './fake-servers.js';
import { brief, makeWorkspace } from './helpers.js';

let ws: Awaited<ReturnType<typeof makeWorkspace>>;
let config: AirlockConfig;

beforeEach(async () => {
  ws = await makeWorkspace();
  config = await loadConfig(ws.configFile);
});
afterEach(() => ws.cleanup());

async function check(text: string, name = 'payments.yaml') {
  const file = await ws.write(name, text);
  const result = await checkPolicyFiles(config, fakeServers, [file]);
  return { ...result, file, lines: brief(result.issues) };
}

describe('checkPolicyFiles', () => {
  it('reports all three mistakes of one file with exact positions', async () => {
    const { lines, issues, policies, file } = await check(
      [
        'team: payments',
        'servers:',
        '  http:',
        '    hosts:',
        '      - origin: https://api.stripe.com',
        '        inject: { header: Authorization, value: "Bearer ${secret:strpe-key}" }',
        '    timeoutMs: "10s"',
        '    tools:',
        '      http_request: {}',
        '      http_requets: {}',
        '',
      ].join('\n'),
    );
    expect(lines).toEqual([
      '6:49: servers.http.hosts[0].inject.value: unknown secret "strpe-key"; known secrets: anthropic-key, github-token, pg-analytics, stripe-key',
      '7:16: servers.http.timeoutMs: expected a number, not a string',
      '10:7: servers.http.tools: unknown key "http_requets" (allowed: http_request, http_get)',
    ]);
    expect(issues.every((i) => i.file === file)).toBe(true);
    expect(policies).toEqual([]);
  });

  it('accepts a valid policy and parses rate limits and model defaults', async () => {
    const { issues, policies } = await check(
      [
        'team: payments',
        'servers:',
        '  http:',
        '    hosts:',
        '      - origin: https://api.stripe.com',
        '        inject: { header: Authorization, value: "Bearer ${secret:stripe-key}" }',
        '    tools:',
        '      http_request: { rateLimit: 10/hour }',
        '  model:',
        '    credential: anthropic-key',
        '',
      ].join('\n'),
    );
    expect(issues).toEqual([]);
    expect(policies).toHaveLength(1);
    const policy = policies[0]!;
    expect(policy.team).toBe('payments');
    expect(policy.servers.http!.tools.http_request!.rateLimit).toEqual({
      count: 10,
      periodMs: 3_600_000,
      text: '10/hour',
    });
    expect(policy.servers.http!.timeoutMs).toBe(10_000); // the server's default applied
    expect(policy.servers).not.toHaveProperty('model');
    expect(policy.model).toEqual({
      upstream: 'https://api.anthropic.com',
      credential: 'anthropic-key',
      paths: ['/v1/messages', '/v1/messages/count_tokens'],
      allowPrivateAddress: false,
    });
  });

  it('reports YAML syntax errors at their position', async () => {
    const { lines, policies } = await check('team: payments\nservers: a: b\n');
    expect(lines).toEqual(['2:10: Nested mappings are not allowed in compact mappings']);
    expect(policies).toEqual([]);
    expect((await check('team: payments\n\tservers: {}\n', 'tab.yaml')).lines).toEqual([
      '2:1: Tabs are not allowed as indentation',
    ]);
    expect((await check('team: payments\nservers: *nowhere\n', 'alias.yaml')).lines).toEqual([
      '2:10: unknown alias "*nowhere"',
    ]);
  });

  it('refuses an alias bomb instead of expanding it', async () => {
    const bomb = [
      'a: &a ["x","x","x","x","x","x","x","x","x","x"]',
      'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]',
      'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]',
      'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]',
      'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]',
      'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]',
      'team: payments',
      'servers: {}',
      '',
    ].join('\n');
    const { lines, policies } = await check(bomb);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^1:1: cannot read YAML: .*alias/i);
    expect(policies).toEqual([]);
  });

  it('reports a duplicate key at the second occurrence, together with schema errors', async () => {
    const { lines } = await check('team: payments\nservers: {}\nteam: other\nbogus: 1\n');
    expect(lines).toEqual([
      '3:1: duplicate key "team"',
      '4:1: unknown key "bogus" (allowed: team, socketGroup, servers)',
    ]);
  });

  it('reports an unknown server section at its key, listing the known ones', async () => {
    const { lines } = await check('team: payments\nservers:\n  htp:\n    tools: {}\n');
    expect(lines).toEqual(['3:3: servers: unknown key "htp" (allowed: git, github, postgres, http, model)']);
  });

  it('reports an unknown tool option at its key', async () => {
    const { lines } = await check(
      'team: payments\nservers:\n  http:\n    hosts: [{ origin: "https://a.example" }]\n    tools:\n      http_get: { maxByts: 5 }\n',
    );
    expect(lines).toEqual([
      '6:19: servers.http.tools.http_get: unknown key "maxByts" (allowed: maxBytes, rateLimit, approve)',
    ]);
  });

  it('reports a missing key at the mapping that lacks it', async () => {
    const { lines } = await check(
      'team: payments\nservers:\n  http:\n    hosts: [{ origin: "https://a.example" }]\n',
    );
    // The `http` mapping starts at line 4, col 5 (its first key).
    expect(lines).toEqual(['4:5: servers.http: missing required key "tools"']);
    const noTeam = await check('servers: {}\n', 'noteam.yaml');
    expect(noTeam.lines).toEqual(['1:1: missing required key "team"']);
  });

  it('reports a wrong type at the value', async () => {
    const { lines } = await check('team: payments\nservers:\n  http:\n    hosts: yes\n    tools: {}\n');
    expect(lines).toEqual(['4:12: servers.http.hosts: expected a list, not a string']);
  });

  it('requires the team name to match [a-z0-9][a-z0-9-]*', async () => {
    const { lines } = await check('team: Payments_Team\nservers: {}\n');
    expect(lines).toEqual(['1:7: team: team must match [a-z0-9][a-z0-9-]* (lowercase letters, digits, "-")']);
    expect((await check('team: -x\nservers: {}\n', 'b.yaml')).lines).toHaveLength(1);
    expect((await check('team: a-1\nservers: {}\n', 'c.yaml')).lines).toEqual([]);
  });

  it('reports a team defined twice at the second file, naming the first', async () => {
    const first = await ws.write('a.yaml', 'team: payments\nservers: {}\n');
    const second = await ws.write('b.yaml', '# again\nteam: payments\nservers: {}\n');
    const { issues, policies } = await checkPolicyFiles(config, fakeServers);
    expect(issues).toEqual([
      { file: second, line: 2, col: 7, message: `team: team "payments" is already defined in ${first}:1:7` },
    ]);
    expect(policies.map((p) => p.file)).toEqual([first]);
  });

  it('reports unknown secrets in a server section and in model.credential', async () => {
    const { lines } = await check(
      [
        'team: payments',
        'servers:',
        '  http:',
        '    hosts:',
        '      - origin: https://a.example',
        '        inject: { header: X-Key, value: "${secret:nope}" }',
        '    tools: {}',
        '  model:',
        '    credential: missing-key',
        '',
      ].join('\n'),
    );
    const known = 'known secrets: anthropic-key, github-token, pg-analytics, stripe-key';
    expect(lines).toEqual([
      `6:41: servers.http.hosts[0].inject.value: unknown secret "nope"; ${known}`,
      `9:17: servers.model.credential: unknown secret "missing-key"; ${known}`,
    ]);
  });

  it('refuses a secret whose teams do not include this team', async () => {
    const { lines } = await check(
      [
        'team: web',
        'servers:',
        '  http:',
        '    hosts:',
        '      - origin: https://a.example',
        '        inject: { header: X-Key, value: "${secret:github-token}" }',
        '    tools: {}',
        '  model: { credential: anthropic-key }',
        '',
      ].join('\n'),
      'web.yaml',
    );
    // github-token allows [payments, web]; anthropic-key only [payments].
    expect(lines).toEqual([
      '8:24: servers.model.credential: secret "anthropic-key" may not be used by team "web" (allowed: payments)',
    ]);
  });

  it('reports a bad glob at the glob itself', async () => {
    const { lines } = await check(
      [
        'team: payments',
        'servers:',
        '  http:',
        '    hosts:',
        '      - origin: https://a.example',
        '        paths: ["/ok/*", "/bad/***"]',
        '    tools: {}',
        '',
      ].join('\n'),
    );
    expect(lines).toEqual([
      '6:26: servers.http.hosts[0].paths[1]: bad glob "/bad/***": "***" is not a pattern (use "*" or "**")',
    ]);
  });

  it('reports bad rate limits at the value', async () => {
    const { lines } = await check(
      [
        'team: payments',
        'servers:',
        '  http:',
        '    hosts: [{ origin: "https://a.example" }]',
        '    tools:',
        '      http_request: { rateLimit: 10/fortnight }',
        '      http_get: { rateLimit: 0/hour }',
        '',
      ].join('\n'),
    );
    expect(lines).toEqual([
      '6:34: servers.http.tools.http_request.rateLimit: bad rateLimit "10/fortnight": expected N/second, N/minute, N/hour or N/day (e.g. "10/hour")',
      '7:30: servers.http.tools.http_get.rateLimit: bad rateLimit "0/hour": the count must be between 1 and 1000000000',
    ]);
  });

  it('validates the model section strictly', async () => {
    const { lines } = await check(
      [
        'team: payments',
        'servers:',
        '  model:',
        '    upstream: ftp://example.com',
        '    credential: anthropic-key',
        '    paths: ["v1/messages"]',
        '    dailyTokenBudget: -5',
        '    budget: 1',
        '',
      ].join('\n'),
    );
    expect(lines).toEqual([
      '4:15: servers.model.upstream: upstream must be an http(s) URL such as https://api.anthropic.com',
      '6:13: servers.model.paths[0]: paths must start with "/"',
      '7:23: servers.model.dailyTokenBudget: must be more than 0',
      '8:5: servers.model: unknown key "budget" (allowed: upstream, credential, paths, dailyTokenBudget, allowPrivateAddress)',
    ]);
  });

  it('never expands environment variables', async () => {
    process.env.AIRLOCK_TEST_SECRET_VALUE = 'expanded!';
    const { issues, policies } = await check(
      [
        'team: payments',
        'servers:',
        '  http:',
        '    hosts:',
        '      - origin: https://a.example',
        '        paths: ["/$HOME/${AIRLOCK_TEST_SECRET_VALUE}"]',
        '        inject: { header: X-Home, value: "$HOME ${AIRLOCK_TEST_SECRET_VALUE}" }',
        '    tools: {}',
        '',
      ].join('\n'),
    );
    delete process.env.AIRLOCK_TEST_SECRET_VALUE;
    expect(issues).toEqual([]);
    const host = (policies[0]!.servers.http!.hosts as { paths: string[]; inject: { value: string } }[])[0]!;
    expect(host.paths).toEqual(['/$HOME/${AIRLOCK_TEST_SECRET_VALUE}']);
    expect(host.inject.value).toBe('$HOME ${AIRLOCK_TEST_SECRET_VALUE}');
  });

  it('reads only .yaml/.yml files of the folder, whatever their names', async () => {
    await ws.write('whatever-name.yml', 'team: payments\nservers: {}\n');
    await ws.write('other.yaml', 'team: web\nservers: {}\n');
    await ws.write('schema.json', '{"not": "a policy"}');
    await ws.write('README.md', '# notes');
    await ws.write('.#other.yaml', 'broken: [');
    const { issues, policies } = await checkPolicyFiles(config, [fakeHttp]);
    expect(issues).toEqual([]);
    expect(policies.map((p) => [p.team, path.basename(p.file)])).toEqual([
      ['web', 'other.yaml'],
      ['payments', 'whatever-name.yml'],
    ]);
  });

  it('reports a missing file or folder', async () => {
    const missing = path.join(ws.dir, 'nope.yaml');
    expect((await checkPolicyFiles(config, fakeServers, [missing])).issues).toEqual([
      { file: missing, line: 1, col: 1, message: 'no such file' },
    ]);
    const gone = { ...config, policies: path.join(ws.dir, 'gone') };
    expect(brief((await checkPolicyFiles(gone, fakeServers)).issues)).toEqual([
      '1:1: cannot read policy folder (ENOENT)',
    ]);
  });

  it('reports an empty file as a missing mapping', async () => {
    const { lines } = await check('');
    expect(lines).toEqual(['1:1: the file is empty; expected a mapping of settings']);
  });
});

describe('checkPolicyFiles on things that are not policy files', () => {
  /** Fails the test instead of hanging it when a read blocks. */
  const within = <T>(p: Promise<T>, ms = 5_000): Promise<T> =>
    Promise.race([
      p,
      new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`still reading after ${ms} ms`)), ms)),
    ]);

  it('refuses a FIFO, a device and a symlink to either without blocking', async () => {
    const fifo = path.join(ws.dir, 'pipe.yaml');
    execFileSync('mkfifo', [fifo]);
    await symlink(fifo, path.join(ws.policies, 'linked-pipe.yaml'));
    await symlink('/dev/zero', path.join(ws.policies, 'zero.yaml'));
    await ws.write('payments.yaml', 'team: payments\nservers: {}\n');
    const folder = await within(checkPolicyFiles(config, fakeServers));
    expect(folder.policies.map((p) => p.team)).toEqual(['payments']);
    // Symlinks are refused without being followed (one could name any file the broker can read).
    const symlinkRefused =
      "is a symlink; policy files must be regular files (owned by root or the broker's user), so it is not read";
    expect(folder.issues.map((i) => `${path.basename(i.file)}: ${i.message}`)).toEqual([
      `linked-pipe.yaml: ${symlinkRefused}`,
      `zero.yaml: ${symlinkRefused}`,
    ]);
    const named = await within(checkPolicyFiles(config, fakeServers, [fifo, '/dev/zero']));
    expect(named.issues.map((i) => i.message)).toEqual(['not a regular file', 'not a regular file']);
  });

  it('refuses an oversized file without parsing it', async () => {
    const file = await ws.write(
      'big.yaml',
      `team: payments\nservers: {}\n# ${'x'.repeat(MAX_POLICY_FILE_BYTES)}\n`,
    );
    const { issues, policies } = await checkPolicyFiles(config, fakeServers, [file]);
    expect(policies).toEqual([]);
    expect(brief(issues)).toEqual([`1:1: larger than ${MAX_POLICY_FILE_BYTES} bytes; not a policy file`]);
  });

  it('never quotes a secret file that was taken for a policy file', async () => {
    // pg-analytics is `{ file: ./pg_url }`: a value that the YAML parser would echo in its error.
    const value = '*pg_secret_value_that_must_not_print';
    await writeFile(path.join(ws.dir, 'pg_url'), value + '\n', { mode: 0o600 });
    await symlink(path.join(ws.dir, 'pg_url'), path.join(ws.policies, 'analytics.yaml'));
    const folder = await checkPolicyFiles(config, fakeServers);
    const named = await checkPolicyFiles(config, fakeServers, [path.join(ws.dir, 'pg_url')]);
    for (const { issues } of [folder, named]) expect(JSON.stringify(issues)).not.toContain('pg_secret_value');
    // Through the folder it is a symlink (not followed); named directly, it is known as the secret's file.
    expect(brief(folder.issues)).toEqual([
      "1:1: is a symlink; policy files must be regular files (owned by root or the broker's user), so it is not read",
    ]);
    expect(brief(named.issues)).toEqual([
      '1:1: this is the file of secret "pg-analytics", not a policy file; its contents are not read',
    ]);
  });
});

describe('checkPolicyFiles with a catalog (servers loaded when a policy names them)', () => {
  /** A catalog of the fake servers that records which ones it was asked to load. */
  function countingCatalog() {
    const asked: string[] = [];
    const loaders = Object.fromEntries(
      fakeServers.map((s) => [
        s.name,
        async () => {
          asked.push(s.name);
          return s;
        },
      ]),
    ) as Record<string, () => Promise<ServerDefinition>>;
    return { catalog: new ServerCatalog(loaders), asked };
  }
  const HTTP_POLICY =
    'team: payments\nservers:\n  http:\n    hosts:\n      - origin: https://api.stripe.com\n    tools:\n      http_request: {}\n';

  it('loads only the servers a file names, once, and checks the file as fully as with every server', async () => {
    const { catalog, asked } = countingCatalog();
    const first = await ws.write('payments.yaml', HTTP_POLICY);
    const second = await ws.write('web.yaml', HTTP_POLICY.replace('payments', 'web'));
    const { policies, issues } = await checkPolicyFiles(config, catalog, [first, second]);
    expect(issues).toEqual([]);
    expect(policies.map((p) => p.team)).toEqual(['payments', 'web']);
    expect(asked).toEqual(['http']);
    expect([...catalog.loaded.keys()]).toEqual(['http']);
    // The same file against every server at once: the same policy (defaults filled in).
    const eager = await checkPolicyFiles(config, fakeServers, [first]);
    expect(policies[0]).toEqual(eager.policies[0]);
  });

  it('an unknown section lists every server, loaded or not, in the same order as with every server loaded', async () => {
    const { catalog, asked } = countingCatalog();
    const file = await ws.write('payments.yaml', 'team: payments\nservers:\n  htp:\n    tools: {}\n');
    const { issues } = await checkPolicyFiles(config, catalog, [file]);
    expect(brief(issues)).toEqual([
      '3:3: servers: unknown key "htp" (allowed: git, github, postgres, http, model)',
    ]);
    expect(asked).toEqual([]);
  });

  it("a section's mistakes are found in a server loaded for that file (and secret checks run on it)", async () => {
    const { catalog, asked } = countingCatalog();
    const file = await ws.write(
      'payments.yaml',
      HTTP_POLICY.replace(
        'api.stripe.com',
        'api.stripe.com\n        inject: { header: X, value: "${secret:nope}" }',
      ).replace('tools:', 'timeoutMs: "10s"\n    tools:'),
    );
    const { issues, policies } = await checkPolicyFiles(config, catalog, [file]);
    expect(policies).toEqual([]);
    expect(brief(issues)).toEqual([
      expect.stringMatching(/^6:\d+: servers\.http\.hosts\[0\]\.inject\.value: unknown secret "nope"/),
      expect.stringMatching(/^7:\d+: servers\.http\.timeoutMs: /),
    ]);
    expect(asked).toEqual(['http']);
  });

  it('refuses a catalog that defines a server twice', () => {
    expect(() => ServerCatalog.of([fakeHttp, fakeHttp] as unknown as ServerDefinition[])).toThrow(
      'server "http" is defined twice',
    );
  });
});
