// GitHub App credentials: an installation token minted per call for the one repository and the
// tool's permissions (the stand-in verifies the App's RS256 JWT and records what was asked for),
// cached per (repository, permission set) and re-minted before expiry; neither a token nor the
// App's private key appears in any result, error, log line or audit record.
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { Redactor } from '../../src/secrets/redact.js';
import { SecretStore } from '../../src/secrets/store.js';
import { startGithubApiStandIn } from '../../src/demo/github-api/server.js';
import { sampleRepo } from '../../src/demo/github-api/data.js';
import { EXPIRED_FORGET_MS, REFRESH_MARGIN_MS } from '../../src/secrets/github-app.js';
import {
  APP_ID,
  appKeyPair,
  call,
  INSTALLATION_ID,
  PAT,
  pemBodyLines,
  startGithubBroker,
  textOf,
  type GithubBroker,
} from './harness.js';

const APP_POLICY = `    credential: gh-app
    repos: ["acme/*"]
    tools:
      get_issue: {}
      get_file_contents: {}
      add_issue_comment: {}
      create_pull_request: { base: [main], head: ["agent/*"] }
`;

/** Every credential-bearing string a test must never find: tokens minted, the PAT, the key and its body lines. */
function secretsOf(gh: GithubBroker): string[] {
  return [...gh.api.mints.map((m) => m.token), PAT, gh.privateKey.trim(), ...pemBodyLines(gh.privateKey)];
}

async function expectNowhere(gh: GithubBroker, results: CallToolResult[]): Promise<void> {
  const haystacks = {
    results: JSON.stringify(results),
    audit: await readFile(gh.inst.auditFile, 'utf8'),
    log: gh.logLines.join('\n'),
  };
  for (const [where, text] of Object.entries(haystacks)) {
    for (const secret of secretsOf(gh))
      expect(text.includes(secret), `${where} holds a credential`).toBe(false);
  }
}

describe('GitHub App installation tokens', () => {
  let gh: GithubBroker;
  const results: CallToolResult[] = [];
  const run = async (tool: string, args: Record<string, unknown>) => {
    const r = await call(await gh.client(), tool, args);
    results.push(r);
    return r;
  };

  beforeAll(async () => {
    gh = await startGithubBroker({ policies: { apps: APP_POLICY } });
  });
  afterAll(() => gh?.close());

  it('two calls on two repositories mint two tokens, each for its one repository and the tool’s least permissions', async () => {
    const a = await run('get_issue', { owner: 'acme', repo: 'payments-api', number: 2 });
    const b = await run('get_file_contents', { owner: 'acme', repo: 'ledger', path: 'README.md' });
    expect(a.isError, textOf(a)).toBeFalsy();
    expect(b.isError, textOf(b)).toBeFalsy();
    expect(
      gh.api.mints.map((m) => ({
        id: m.installationId,
        repositories: m.repositories,
        permissions: m.permissions,
      })),
    ).toEqual([
      { id: INSTALLATION_ID, repositories: ['payments-api'], permissions: { issues: 'read' } },
      { id: INSTALLATION_ID, repositories: ['ledger'], permissions: { contents: 'read' } },
    ]);
    // Each mint authenticated with a JWT the stand-in verified; each API call used its own token.
    const tokenCalls = gh.api.calls.filter((c) => c.url.endsWith('/access_tokens'));
    expect(tokenCalls.map((c) => c.auth)).toEqual(['jwt', 'jwt']);
    const apiCalls = gh.api.calls.filter((c) => c.url.startsWith('/repos/'));
    expect(apiCalls.every((c) => c.auth === 'installation')).toBe(true);
    expect(apiCalls.filter((c) => c.url.includes('/payments-api/')).map((c) => c.credential)).toEqual([
      gh.api.mints[0]!.token,
      gh.api.mints[0]!.token,
    ]);
    expect(apiCalls.filter((c) => c.url.includes('/ledger/')).map((c) => c.credential)).toEqual([
      gh.api.mints[1]!.token,
    ]);
    // The request records say which repository and permissions each call's credential was scoped to.
    const requests = (await gh.audit()).filter((x) => x.phase === 'request');
    expect(requests.map((x) => [x.tool, x.repository, x.githubPermissions])).toEqual([
      ['get_issue', 'acme/payments-api', { issues: 'read' }],
      ['get_file_contents', 'acme/ledger', { contents: 'read' }],
    ]);
    // The scoping is real on the GitHub side: the first token reaches neither the other repository nor writes.
    expect(gh.api.tokenAllows(gh.api.mints[0]!.token, 'acme/payments-api', 'issues', 'read')).toBe(true);
    expect(gh.api.tokenAllows(gh.api.mints[0]!.token, 'acme/ledger', 'issues', 'read')).toBe(false);
    expect(gh.api.tokenAllows(gh.api.mints[0]!.token, 'acme/payments-api', 'issues', 'write')).toBe(false);
  });

  it('reuses the cached token for the same repository and permission set; another permission set mints its own', async () => {
    const mintsBefore = gh.api.mints.length;
    await run('get_issue', { owner: 'acme', repo: 'payments-api', number: 1 });
    await run('get_issue', { owner: 'acme', repo: 'payments-api', number: 3 });
    expect(gh.api.mints.length).toBe(mintsBefore);
    gh.api.repos.get('acme/payments-api')!.branches['agent/app'] = 'd'.repeat(40);
    const pr = await run('create_pull_request', {
      owner: 'acme',
      repo: 'payments-api',
      title: 'x',
      head: 'agent/app',
      base: 'main',
    });
    expect(pr.isError, textOf(pr)).toBeFalsy();
    const comment = await run('add_issue_comment', {
      owner: 'acme',
      repo: 'payments-api',
      number: 2,
      body: 'noted',
    });
    expect(comment.isError, textOf(comment)).toBeFalsy();
    expect(gh.api.mints.slice(mintsBefore).map((m) => [m.repositories, m.permissions])).toEqual([
      [['payments-api'], { pull_requests: 'write' }],
      [['payments-api'], { issues: 'write' }],
    ]);
  });

  it('concurrent first calls on one repository share one mint', async () => {
    const before = gh.api.mints.length;
    const client = await gh.client();
    const all = await Promise.all(
      Array.from({ length: 8 }, () =>
        call(client, 'get_issue', { owner: 'acme', repo: 'ledger', number: 2 }),
      ),
    );
    results.push(...all);
    for (const r of all) expect(r.isError, textOf(r)).toBeFalsy();
    expect(gh.api.mints.slice(before).map((m) => [m.repositories, m.permissions])).toEqual([
      [['ledger'], { issues: 'read' }],
    ]);
  });

  it('re-mints when the cached token is within the refresh margin of its expiry', async () => {
    gh.api.setTokenLifetimeMs(REFRESH_MARGIN_MS - 60_000);
    try {
      const before = gh.api.mints.length;
      await run('get_file_contents', { owner: 'acme', repo: 'payments-api', path: 'README.md' });
      await run('get_file_contents', { owner: 'acme', repo: 'payments-api', path: 'README.md' });
      expect(gh.api.mints.length).toBe(before + 2);
    } finally {
      gh.api.setTokenLifetimeMs(60 * 60_000);
    }
  });

  it('when GitHub answers 401 the error says so and carries no token', async () => {
    gh.api.fault({
      method: 'GET',
      path: /^\/repos\/acme\/payments-api\/issues\/2$/,
      status: 401,
      body: { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest' },
    });
    const r = await run('get_issue', { owner: 'acme', repo: 'payments-api', number: 2 });
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(
      /^error: reading issue #2 of acme\/payments-api: GitHub rejected the credential \(401: Bad credentials\)/,
    );
    const last = (await gh.audit()).at(-1)!;
    expect(last).toMatchObject({ phase: 'result', outcome: 'error' });
    expect(String(last.error)).toContain('401');
  });

  it('no minted token, the PAT or the private key (whole or any line of it) is in a result, the audit or the log', async () => {
    expect(gh.api.mints.length).toBeGreaterThanOrEqual(5);
    await expectNowhere(gh, results);
  });
});

describe('GitHub App failures', () => {
  it('a JWT signed by the wrong key is refused by GitHub: a clear error, no token, no key anywhere', async () => {
    const gh = await startGithubBroker({
      policies: { apps: APP_POLICY },
      keyFileContents: appKeyPair().privateKey,
    });
    try {
      const r = await call(await gh.client(), 'get_issue', {
        owner: 'acme',
        repo: 'payments-api',
        number: 1,
      });
      expect(textOf(r)).toMatch(
        new RegExp(
          `^error: no GitHub credential for this call: GitHub App secret "gh-app": GitHub refused the App's JWT \\(401: A JSON web token could not be decoded\\); check appId ${APP_ID}`,
        ),
      );
      expect(gh.api.calls.map((c) => [c.url, c.auth])).toEqual([
        [`/app/installations/${INSTALLATION_ID}/access_tokens`, 'rejected'],
      ]);
      const key = await readFile(`${gh.inst.root}/secrets/app.pem`, 'utf8');
      const text = JSON.stringify(r) + (await readFile(gh.inst.auditFile, 'utf8')) + gh.logLines.join('\n');
      for (const line of pemBodyLines(key)) expect(text).not.toContain(line);
    } finally {
      await gh.close();
    }
  });

  it('a malformed key file: the call fails naming the secret, nothing reaches GitHub, no part of the file leaks', async () => {
    const garbage =
      '-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\nKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ\n-----END RSA PRIVATE KEY-----\n';
    const gh = await startGithubBroker({ policies: { apps: APP_POLICY }, keyFileContents: garbage });
    try {
      const r = await call(await gh.client(), 'get_issue', {
        owner: 'acme',
        repo: 'payments-api',
        number: 1,
      });
      expect(textOf(r)).toBe(
        'error: no GitHub credential for this call: GitHub App secret "gh-app": the private key is not a valid PEM private key',
      );
      expect(gh.api.calls).toEqual([]);
      const text = JSON.stringify(r) + (await readFile(gh.inst.auditFile, 'utf8')) + gh.logLines.join('\n');
      for (const line of pemBodyLines(garbage)) expect(text).not.toContain(line);
      // The operator hears about it at start-up, without the key.
      expect(gh.logLines.join('\n')).toContain('the GitHub App private key is not a valid PEM private key');
    } finally {
      await gh.close();
    }
  });
});

describe('the token cache against a moving clock (SecretStore, as the broker uses it)', () => {
  it('reuses a token until REFRESH_MARGIN_MS before GitHub’s expires_at, then mints a new one; every token is registered for redaction', async () => {
    const keys = appKeyPair();
    const api = await startGithubApiStandIn({
      app: {
        appId: APP_ID,
        installationId: INSTALLATION_ID,
        publicKey: keys.publicKey,
        repositories: ['acme/payments-api'],
        permissions: { issues: 'write' },
      },
      repos: [sampleRepo('acme', 'payments-api')],
    });
    let now = Date.now();
    const redactor = new Redactor();
    const store = new SecretStore(
      { app: { githubApp: { appId: APP_ID, installationId: INSTALLATION_ID, privateKey: { env: 'KEY' } } } },
      redactor,
      { env: { KEY: keys.privateKey }, now: () => now },
    );
    const scope = () => ({
      apiUrl: api.apiUrl,
      owner: 'acme',
      repo: 'payments-api',
      permissions: { issues: 'read' } as const,
    });
    try {
      const first = await store.githubToken('app', 'any', scope);
      expect(redactor.scrub(`x ${first} y`)).toBe('x [redacted] y');
      now += 60 * 60_000 - REFRESH_MARGIN_MS - 60_000; // a minute before the margin
      expect(await store.githubToken('app', 'any', scope)).toBe(first);
      expect(api.mints).toHaveLength(1);
      now += 2 * 60_000; // inside the margin
      const second = await store.githubToken('app', 'any', scope);
      expect(second).not.toBe(first);
      expect(api.mints).toHaveLength(2);
      expect(redactor.scrub(second)).toBe('[redacted]');
      // A permission the installation lacks: GitHub's 422, said plainly.
      await expect(
        store.githubToken('app', 'any', () => ({ ...scope(), permissions: { contents: 'write' } })),
      ).rejects.toThrow(
        /GitHub would not mint a token for acme\/payments-api with contents: write \(422: The permissions requested are not granted/,
      );
      // Past the first token's expiry but inside the grace: still redacted (a call that took it
      // before the refresh margin may still be answering). The refused mint still sweeps.
      now += 30 * 60_000;
      await expect(
        store.githubToken('app', 'any', () => ({ ...scope(), permissions: { contents: 'write' } })),
      ).rejects.toThrow(/422/);
      expect(redactor.scrub(`x ${first} y`)).toBe('x [redacted] y');
      // Long past both tokens' expiry they grant nothing: the next call stops redacting them (a
      // broker minting every hour must not grow forever), and the token it mints is redacted.
      const registered = redactor.size;
      now += 60 * 60_000 + EXPIRED_FORGET_MS + 60_000; // an hour after the second mint, and the grace
      const third = await store.githubToken('app', 'any', scope);
      expect(api.mints).toHaveLength(3);
      expect(redactor.size).toBe(registered - 1);
      expect(redactor.scrub(`${first} ${second}`)).toBe(`${first} ${second}`);
      expect(redactor.scrub(third)).toBe('[redacted]');
    } finally {
      await api.close();
    }
  });
});
