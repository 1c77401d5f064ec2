// The GitHub API stand-in is only worth testing against if it is as strict as GitHub: no or a
// wrong token is 401, an installation token reaches only its repositories and permissions and
// dies at expires_at, and a mint needs an RS256 JWT signed by the App's key with the right iss
// and an iat/exp window GitHub would accept.
import { createSign } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGithubApiStandIn, type GithubApiStandIn } from '../../src/demo/github-api/server.js';
import { sampleRepo } from '../../src/demo/github-api/data.js';
import { APP_ID, appKeyPair, INSTALLATION_ID } from './harness.js';

const keys = appKeyPair();
const other = appKeyPair();
let api: GithubApiStandIn;

beforeAll(async () => {
  api = await startGithubApiStandIn({
    tokens: ['ghp_valid_personal_token_123'],
    app: {
      appId: APP_ID,
      installationId: INSTALLATION_ID,
      publicKey: keys.publicKey,
      repositories: ['acme/payments-api'],
      permissions: { issues: 'write', contents: 'read' },
    },
    repos: [sampleRepo('acme', 'payments-api'), sampleRepo('acme', 'ledger', 102)],
  });
});
afterAll(() => api?.close());

const b64 = (v: object) => Buffer.from(JSON.stringify(v)).toString('base64url');
function jwt(claims: Record<string, unknown>, opts: { key?: string; alg?: string } = {}): string {
  const head = `${b64({ alg: opts.alg ?? 'RS256', typ: 'JWT' })}.${b64(claims)}`;
  const sig = createSign('RSA-SHA256')
    .update(head)
    .sign(opts.key ?? keys.privateKey)
    .toString('base64url');
  return `${head}.${sig}`;
}
const now = () => Math.floor(Date.now() / 1000);

async function get(path: string, token?: string) {
  const res = await fetch(`${api.apiUrl}${path}`, {
    headers: token ? { authorization: `token ${token}` } : {},
  });
  return { status: res.status, body: (await res.json()) as { message?: string } };
}
async function mint(
  token: string,
  body: object = { repositories: ['payments-api'], permissions: { issues: 'read' } },
) {
  const res = await fetch(`${api.apiUrl}/app/installations/${INSTALLATION_ID}/access_tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return {
    status: res.status,
    body: (await res.json()) as { token?: string; message?: string; expires_at?: string },
  };
}

describe('the GitHub API stand-in', () => {
  it('401 without a token and with a wrong one; 200 with the configured token', async () => {
    expect(await get('/repos/acme/payments-api/issues/1')).toMatchObject({
      status: 401,
      body: { message: 'Requires authentication' },
    });
    expect(await get('/repos/acme/payments-api/issues/1', 'ghp_wrong')).toMatchObject({
      status: 401,
      body: { message: 'Bad credentials' },
    });
    expect((await get('/repos/acme/payments-api/issues/1', 'ghp_valid_personal_token_123')).status).toBe(200);
  });

  it('mints only for a JWT signed by the App key, with the App id as iss and a GitHub-acceptable iat/exp', async () => {
    const good = { iat: now() - 30, exp: now() + 540, iss: APP_ID };
    const cases: [string, string, RegExp][] = [
      ['signed by another key', jwt(good, { key: other.privateKey }), /could not be decoded/],
      ['alg none', `${b64({ alg: 'none' })}.${b64(good)}.`, /'alg' must be RS256/],
      ['another App id', jwt({ ...good, iss: '999' }), /Issuer/],
      ['issued in the future', jwt({ ...good, iat: now() + 300 }), /Issued at/],
      ['expired', jwt({ ...good, iat: now() - 700, exp: now() - 10 }), /too far in the past/],
      ['exp more than 10 minutes ahead', jwt({ ...good, exp: now() + 3600 }), /too far in the future/],
      ['not a JWT', 'ghp_valid_personal_token_123', /could not be decoded/],
    ];
    for (const [name, token, message] of cases) {
      const r = await mint(token);
      expect(r.status, name).toBe(401);
      expect(r.body.message, name).toMatch(message);
    }
    expect(api.mints).toHaveLength(0);
    const ok = await mint(jwt(good));
    expect(ok.status).toBe(201);
    expect(api.mints).toHaveLength(1);
  });

  it('refuses a mint for a repository outside the installation or a permission it was not granted (422)', async () => {
    const good = jwt({ iat: now() - 30, exp: now() + 540, iss: APP_ID });
    expect((await mint(good, { repositories: ['ledger'], permissions: { issues: 'read' } })).status).toBe(
      422,
    );
    expect(
      (await mint(good, { repositories: ['payments-api'], permissions: { contents: 'write' } })).status,
    ).toBe(422);
  });

  it('an installation token reaches only its repository, only with its permissions, and only until it expires', async () => {
    const good = jwt({ iat: now() - 30, exp: now() + 540, iss: APP_ID });
    const token = (await mint(good, { repositories: ['payments-api'], permissions: { issues: 'read' } })).body
      .token!;
    expect((await get('/repos/acme/payments-api/issues/1', token)).status).toBe(200);
    expect((await get('/repos/acme/payments-api/contents/README.md', token)).body.message).toBe(
      'Resource not accessible by integration',
    );
    expect((await get('/repos/acme/ledger/issues/1', token)).status).toBe(404);
    api.setTokenLifetimeMs(-1000);
    try {
      const expired = (await mint(good, { repositories: ['payments-api'], permissions: { issues: 'read' } }))
        .body.token!;
      expect(await get('/repos/acme/payments-api/issues/1', expired)).toMatchObject({
        status: 401,
        body: { message: 'Bad credentials' },
      });
    } finally {
      api.setTokenLifetimeMs(60 * 60_000);
    }
  });
});
