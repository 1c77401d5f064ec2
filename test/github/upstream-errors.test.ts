// GitHub's errors as an agent sees them: 401, 403 with rate-limit headers, 404, 422, 5xx; the
// secondary rate limit retried by the throttling plugin within a bounded wait, a long
// Retry-After answered with an error instead of a wait.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import { collectGarbage } from '../helpers/gc.js';
import { call, PAT, startGithubBroker, textOf, type GithubBroker } from './harness.js';

const POLICY = `    credential: gh-token
    repos: ["acme/*"]
    tools:
      get_issue: {}
      get_repository: {}
      create_issue: {}
`;

let gh: GithubBroker;
const repo = { owner: 'acme', repo: 'payments-api' };
const ISSUE = /^\/repos\/acme\/payments-api\/issues\/2$/;

const SLOW_POLICY = `    credential: gh-token
    repos: ["acme/*"]
    timeoutMs: 500
    tools:
      get_issue: {}
`;

beforeAll(async () => {
  gh = await startGithubBroker({ policies: { acme: POLICY, slow: SLOW_POLICY } });
});
afterAll(() => gh?.close());

/** Every result, to look for the token in afterwards. */
const results: unknown[] = [];

async function issueCall() {
  const before = gh.api.calls.length;
  const r = await call(await gh.client(), 'get_issue', { ...repo, number: 2 });
  results.push(r);
  return { r, requests: gh.api.calls.slice(before).filter((c) => ISSUE.test(c.url)).length };
}

describe('upstream errors', () => {
  it('403 with x-ratelimit-remaining: 0 says when the limit resets, and is not waited for', async () => {
    const reset = Math.floor(Date.now() / 1000) + 1800;
    gh.api.fault({
      path: ISSUE,
      status: 403,
      headers: {
        'x-ratelimit-limit': '5000',
        'x-ratelimit-remaining': '0',
        'x-ratelimit-reset': String(reset),
      },
      body: {
        message: 'API rate limit exceeded for user ID 1.',
        documentation_url: 'https://docs.github.com/rest/overview/rate-limits-for-the-rest-api',
      },
    });
    const { r, requests } = await issueCall();
    expect(textOf(r)).toMatch(
      new RegExp(
        `^error: reading issue #2 of acme/payments-api: GitHub's rate limit for this credential is used up \\(limit 5000\\); it resets at ${new Date(reset * 1000).toISOString().replace(/\./g, '\\.')} \\(in \\d+ s\\); try again after that`,
      ),
    );
    expect(requests).toBe(1);
  });

  it('a secondary rate limit with a short Retry-After is retried once and the call succeeds', async () => {
    gh.api.fault({
      path: ISSUE,
      status: 403,
      headers: { 'retry-after': '1' },
      body: {
        message: 'You have exceeded a secondary rate limit. Please wait a few minutes before you try again.',
      },
    });
    const { r, requests } = await issueCall();
    expect(r.isError, textOf(r)).toBeFalsy();
    expect(requests).toBe(2);
  });

  it('a secondary rate limit with a long Retry-After is an error at once (bounded wait, no hot loop)', async () => {
    gh.api.fault({
      path: ISSUE,
      status: 403,
      headers: { 'retry-after': '3600' },
      body: { message: 'You have exceeded a secondary rate limit.' },
      times: 3,
    });
    const { r, requests } = await issueCall();
    expect(textOf(r)).toMatch(
      /secondary rate limit was hit and Airlock's bounded retries are spent; wait 3600 s before retrying/,
    );
    expect(requests).toBe(1);
    gh.api.clearFaults();
  });

  it('403 without rate-limit headers: the credential lacks permission', async () => {
    gh.api.fault({
      path: ISSUE,
      status: 403,
      body: { message: 'Resource not accessible by personal access token' },
    });
    const { r } = await issueCall();
    expect(textOf(r)).toMatch(
      /GitHub refused \(403: Resource not accessible by personal access token\); the credential lacks permission/,
    );
  });

  it('404 names what was not found', async () => {
    const r = await call(await gh.client(), 'get_issue', { ...repo, number: 999 });
    expect(textOf(r)).toBe(
      'error: reading issue #999 of acme/payments-api: not found (404) — it does not exist, or the credential cannot see it',
    );
  });

  it('422 carries GitHub’s validation errors', async () => {
    gh.api.fault({
      method: 'POST',
      path: /^\/repos\/acme\/payments-api\/issues$/,
      status: 422,
      body: {
        message: 'Validation Failed',
        errors: [{ resource: 'Issue', field: 'title', code: 'invalid' }, { message: 'labels must exist' }],
      },
    });
    const r = await call(await gh.client(), 'create_issue', { ...repo, title: 'x', body: 'y' });
    expect(textOf(r)).toBe(
      'error: creating an issue in acme/payments-api: GitHub rejected the request as invalid (422: Validation Failed): Issue title invalid; labels must exist',
    );
  });

  it('a 502 is retried by the retry plugin and then succeeds', async () => {
    gh.api.fault({ path: ISSUE, status: 502, body: { message: 'Server Error' } });
    const { r, requests } = await issueCall();
    expect(r.isError, textOf(r)).toBeFalsy();
    expect(requests).toBe(2);
  });

  it('a write that fails with a 5xx is not retried (it may have happened) and says so', async () => {
    const before = gh.api.calls.length;
    gh.api.fault({
      method: 'POST',
      path: /^\/repos\/acme\/payments-api\/issues$/,
      status: 502,
      body: { message: 'Server Error' },
    });
    const r = await call(await gh.client(), 'create_issue', { ...repo, title: 'x', body: 'y' });
    results.push(r);
    expect(textOf(r)).toBe(
      'error: creating an issue in acme/payments-api: GitHub failed (HTTP 502: Server Error); not retried, since it may have been done anyway — check before trying again',
    );
    expect(gh.api.calls.slice(before).filter((c) => c.method === 'POST')).toHaveLength(1);
  });

  it('a GitHub that does not answer within timeoutMs: an error saying so, within the deadline, garbage collections or not', async () => {
    gh.api.fault({ path: ISSUE, status: 200, body: {}, delayMs: 60_000, times: 3 });
    // Collections while the call waits: a deadline held only weakly (AbortSignal.any over
    // AbortSignal.timeout on Node 20) was collected and never came.
    const gcs = setInterval(collectGarbage, 20);
    try {
      const r = await call(await gh.client('slow'), 'get_issue', { ...repo, number: 2 });
      results.push(r);
      expect(textOf(r)).toBe(
        "error: reading issue #2 of acme/payments-api: GitHub did not answer in time (the policy's github timeoutMs)",
      );
    } finally {
      clearInterval(gcs);
      gh.api.clearFaults();
    }
  }, 10_000);

  it('a redirect is not followed (the token would go along): an error, and the target gets nothing', async () => {
    const before = gh.api.calls.length;
    gh.api.fault({
      path: ISSUE,
      status: 301,
      headers: { location: `${gh.api.apiUrl}/repos/other/secret-stuff/issues/1` },
    });
    const { r } = await issueCall();
    expect(textOf(r)).toMatch(/GitHub answered with a redirect .*which Airlock does not follow/);
    // The issue (redirected, not followed) and its comments (asked for at the same time); nothing at the target.
    expect(
      gh.api.calls
        .slice(before)
        .map((c) => c.url.split('?')[0])
        .sort(),
    ).toEqual(['/repos/acme/payments-api/issues/2', '/repos/acme/payments-api/issues/2/comments']);
  });

  it('GitHub’s own error text is cleaned of invisible characters before the agent sees it', async () => {
    gh.api.fault({
      path: ISSUE,
      status: 403,
      body: { message: 'nope\u202e\u200b\u{E0041}\u{E0042} really' },
    });
    const { r } = await issueCall();
    expect(textOf(r)).toContain('(403: nope really)');
  });
});

describe('after all those errors', () => {
  it('the token is in no result, audit record or log line', async () => {
    const text =
      JSON.stringify(results) + (await readFile(gh.inst.auditFile, 'utf8')) + gh.logLines.join('\n');
    expect(results.length).toBeGreaterThan(5);
    expect(text).not.toContain(PAT);
    expect(text).not.toContain(Buffer.from(PAT).toString('base64'));
  });
});

describe('GitHub unreachable', () => {
  it('says GitHub could not be reached (after the bounded retries), not an HTTP status', async () => {
    await gh.api.close();
    const r = await call(await gh.client(), 'get_issue', { ...repo, number: 2 });
    expect(textOf(r)).toMatch(
      /^error: reading issue #2 of acme\/payments-api: GitHub could not be reached: .*ECONNREFUSED/,
    );
  });
});
