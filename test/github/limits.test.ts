// The github server's own rate-limit and retry hook (servers/github/limits.ts), on the Octokit the
// server uses, against the local GitHub API stand-in: concurrency cap, write spacing that ends with
// the caller's deadline, rate-limit and 5xx retries; and the retry decisions one by one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Octokit } from '@octokit/rest';
import { sampleRepo } from '../../src/demo/github-api/data.js';
import { startGithubApiStandIn, type GithubApiStandIn } from '../../src/demo/github-api/server.js';
import { createGithubOctokit } from '../../servers/github/client.js';
import { MAX_CONCURRENT, retryDecision, type GithubLimitsOptions } from '../../servers/github/limits.js';

const TOKEN = 'ghp_LimitsTestToken0123456789abcdefABCDEF';
const headers = { authorization: `token ${TOKEN}` };
const ISSUE = /^\/repos\/acme\/payments-api\/issues\/1$/;
const where = { owner: 'acme', repo: 'payments-api', issue_number: 1, headers };

let api: GithubApiStandIn;
beforeAll(async () => {
  api = await startGithubApiStandIn({ tokens: [TOKEN], repos: [sampleRepo('acme', 'payments-api')] });
});
afterAll(() => api?.close());

const requestsTo = (re: RegExp, method = 'GET') =>
  api.calls.filter((c) => c.method === method && re.test(c.url.split('?')[0]!)).length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A fresh client: each has its own limits. */
const client = (): Promise<Octokit> => createGithubOctokit({ apiUrl: api.apiUrl });

describe('limits on the wire', () => {
  it(`at most ${MAX_CONCURRENT} requests of one client are in flight; the rest wait and then go`, async () => {
    const octokit = await client();
    const before = requestsTo(ISSUE);
    const n = MAX_CONCURRENT + 3;
    api.fault({ path: ISSUE, status: 200, body: { held: true }, delayMs: 1500, times: n });
    const all = Promise.all(Array.from({ length: n }, () => octokit.rest.issues.get(where)));
    const deadline = Date.now() + 5000;
    while (requestsTo(ISSUE) - before < MAX_CONCURRENT && Date.now() < deadline) await sleep(20);
    await sleep(300);
    // The first ones are still held by the stand-in: the others have not been sent.
    expect(requestsTo(ISSUE) - before).toBe(MAX_CONCURRENT);
    const results = await all;
    expect(results).toHaveLength(n);
    expect(requestsTo(ISSUE) - before).toBe(n);
  });

  it('a write that notifies waits for its slot after the previous one, and that wait ends with its deadline', async () => {
    const octokit = await client();
    const ISSUES = /^\/repos\/acme\/payments-api\/issues$/;
    const before = requestsTo(ISSUES, 'POST');
    const create = (signal?: AbortSignal) =>
      octokit.rest.issues.create({
        owner: 'acme',
        repo: 'payments-api',
        title: 'limits test',
        headers,
        request: { signal, retries: 0 },
      });
    await create();
    // The next issue may only start 3 s after the first: with a 300 ms deadline it never starts.
    await expect(create(AbortSignal.timeout(300))).rejects.toThrow();
    expect(requestsTo(ISSUES, 'POST') - before).toBe(1);
  });

  it('a primary rate limit that resets within the cap is waited for once, then the request succeeds', async () => {
    const octokit = await client();
    const before = requestsTo(ISSUE);
    api.fault({
      path: ISSUE,
      status: 403,
      headers: {
        'x-ratelimit-limit': '5000',
        'x-ratelimit-remaining': '0',
        'x-ratelimit-reset': String(Math.floor(Date.now() / 1000)),
      },
      body: { message: 'API rate limit exceeded for user ID 1.' },
    });
    const { data } = await octokit.rest.issues.get(where);
    expect(data.number).toBe(1);
    expect(requestsTo(ISSUE) - before).toBe(2);
  });

  it('a 5xx backoff ends with the deadline: no further try after it', async () => {
    const octokit = await client();
    const before = requestsTo(ISSUE);
    api.fault({ path: ISSUE, status: 502, body: { message: 'Server Error' }, times: 3 });
    await expect(
      octokit.rest.issues.get({ ...where, request: { signal: AbortSignal.timeout(300) } }),
    ).rejects.toThrow();
    await sleep(1200);
    expect(requestsTo(ISSUE) - before).toBe(1);
    api.clearFaults();
  });
});

describe('retry decisions', () => {
  const opts: GithubLimitsOptions = { retries: 2, rateLimitRetries: 2, maxRateLimitWaitS: 20 };
  const fresh = () => ({ server: 0, rateLimit: 0 });
  const error = (status: number, h: Record<string, string> = {}, message = 'x') => ({
    status,
    message,
    response: { headers: h, data: { message } },
  });
  const now = 1_700_000_000_000;

  it('5xx and network failures (Octokit reports them as 500): 1 s, then 4 s, then give up', () => {
    expect(retryDecision(error(502), fresh(), 2, opts)).toEqual({ waitS: 1, kind: 'server' });
    expect(retryDecision(error(500), { server: 1, rateLimit: 0 }, 2, opts)).toEqual({
      waitS: 4,
      kind: 'server',
    });
    expect(retryDecision(error(503), { server: 2, rateLimit: 0 }, 2, opts)).toBeUndefined();
    // A write passes retries: 0.
    expect(retryDecision(error(502), fresh(), 0, opts)).toBeUndefined();
  });

  it('4xx other than rate limits are not retried', () => {
    for (const status of [400, 401, 403, 404, 409, 422])
      expect(retryDecision(error(status), fresh(), 2, opts)).toBeUndefined();
  });

  it('primary limit: until one second past x-ratelimit-reset, only within the cap', () => {
    const reset = (inS: number) => ({
      'x-ratelimit-remaining': '0',
      'x-ratelimit-reset': String(now / 1000 + inS),
    });
    expect(retryDecision(error(403, reset(5)), fresh(), 2, opts, now)).toEqual({
      waitS: 6,
      kind: 'rateLimit',
    });
    expect(retryDecision(error(429, reset(1800)), fresh(), 2, opts, now)).toBeUndefined();
    expect(retryDecision(error(403, reset(5)), { server: 0, rateLimit: 2 }, 2, opts, now)).toBeUndefined();
  });

  it('secondary limit: Retry-After, else a minute (beyond the cap: an error at once)', () => {
    const secondary = 'You have exceeded a secondary rate limit.';
    expect(retryDecision(error(403, { 'retry-after': '3' }, secondary), fresh(), 2, opts)).toEqual({
      waitS: 3,
      kind: 'rateLimit',
    });
    expect(retryDecision(error(429, { 'retry-after': '2' }), fresh(), 2, opts)).toEqual({
      waitS: 2,
      kind: 'rateLimit',
    });
    expect(retryDecision(error(403, {}, secondary), fresh(), 2, opts)).toBeUndefined();
    expect(retryDecision(error(429), fresh(), 2, opts)).toBeUndefined();
    expect(retryDecision(error(403, { 'retry-after': '600' }, secondary), fresh(), 2, opts)).toBeUndefined();
    expect(
      retryDecision(error(403, { 'retry-after': '1' }, secondary), { server: 0, rateLimit: 2 }, 2, opts),
    ).toBeUndefined();
  });
});
