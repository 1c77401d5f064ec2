// GitHub answering 502s for a while, or secondary rate limits, for one team's repository: that
// team's calls end in a clear error after bounded retries (no hot loop, no token), and the other
// teams — one on the same GitHub stand-in, one on http — are answered throughout (latency printed).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { sampleRepo } from '../../src/demo/github-api/data.js';
import { startGithubApiStandIn, type GithubApiStandIn } from '../../src/demo/github-api/server.js';
import { baseline, startFaultBroker, victimDuringFault, type FaultBroker } from './faults.js';

const PAT = 'ghp_FaultTestToken0123456789abcdefABCDEF';
const ACME_ISSUE = /^\/repos\/acme\/payments-api\/issues\/2$/;

describe('github faults', () => {
  let api: GithubApiStandIn;
  let fb: FaultBroker;
  let acme: Client;
  let gamma: Client;
  let baselineMs: number[];
  const texts: string[] = [];

  const section = (repos: string) => `servers:
  github:
    apiUrl: API
    credential: gh-token
    repos: ["${repos}"]
    tools:
      get_issue: {}
`;

  beforeAll(async () => {
    api = await startGithubApiStandIn({
      tokens: [PAT],
      repos: [sampleRepo('acme', 'payments-api', 101), sampleRepo('gamma', 'site', 102)],
    });
    const policy = (team: string, repos: string) =>
      `team: ${team}\n${section(repos).replace('API', api.apiUrl)}`;
    fb = await startFaultBroker({
      secrets: { 'gh-token': PAT },
      policies: { 'acme.yaml': policy('acme', 'acme/*'), 'gamma.yaml': policy('gamma', 'gamma/*') },
    });
    acme = await fb.client('acme', 'github');
    gamma = await fb.client('gamma', 'github');
    baselineMs = await baseline(victim);
  });

  afterAll(async () => {
    await fb?.close();
    await api?.close();
  });

  async function getIssue(client: Client, owner: string, repo: string): Promise<CallToolResult> {
    const r = (await client.callTool({
      name: 'get_issue',
      arguments: { owner, repo, number: 2 },
    })) as CallToolResult;
    texts.push(JSON.stringify(r));
    return r;
  }
  const textOf = (r: CallToolResult) => (r.content[0] as { text: string }).text;

  /** Beta's http call, and gamma's issue on the same GitHub stand-in. */
  async function victim(): Promise<void> {
    await fb.victim();
    const r = await getIssue(gamma, 'gamma', 'site');
    expect(r.isError, textOf(r)).toBeFalsy();
  }

  const acmeRequests = () => api.calls.filter((c) => ACME_ISSUE.test(c.url)).length;

  it('502 on every try: an error after the bounded retries, saying GitHub failed', async () => {
    api.fault({ path: ACME_ISSUE, status: 502, body: { message: 'Server Error' }, times: 1000 });
    const before = acmeRequests();
    const { value } = await victimDuringFault(
      'github 502s',
      () => getIssue(acme, 'acme', 'payments-api'),
      victim,
      baselineMs,
    );
    api.clearFaults();
    expect(value.isError).toBe(true);
    expect(textOf(value)).toMatch(/^error: reading issue #2 of acme\/payments-api: GitHub failed \(HTTP 502/);
    // Retried, but a bounded number of times.
    const tries = acmeRequests() - before;
    expect(tries).toBeGreaterThan(1);
    expect(tries).toBeLessThanOrEqual(5);
    // Once GitHub recovers, the same session is answered.
    expect((await getIssue(acme, 'acme', 'payments-api')).isError).toBeFalsy();
  });

  it('secondary rate limits with a long Retry-After: an error at once saying how long to wait', async () => {
    api.fault({
      path: ACME_ISSUE,
      status: 403,
      headers: { 'retry-after': '600' },
      body: { message: 'You have exceeded a secondary rate limit.' },
      times: 1000,
    });
    const before = acmeRequests();
    const { value } = await victimDuringFault(
      'github secondary rate limit',
      async () => {
        const out: CallToolResult[] = [];
        for (let i = 0; i < 10; i++) out.push(await getIssue(acme, 'acme', 'payments-api'));
        return out;
      },
      victim,
      baselineMs,
    );
    api.clearFaults();
    for (const r of value)
      expect(textOf(r)).toMatch(/secondary rate limit was hit .*wait 600 s before retrying/);
    // One request per call: no retry loop against a rate limit.
    expect(acmeRequests() - before).toBe(10);
  });

  it('no answer carried the token', () => {
    const all = texts.join('\n');
    expect(texts.length).toBeGreaterThan(20);
    expect(all).not.toContain(PAT);
  });
});
