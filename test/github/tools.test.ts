// The twelve tools through a real broker socket against the GitHub API stand-in with a token
// secret: what each returns, what GitHub received, and hidden Unicode cleaned and labelled.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HIDDEN_INSTRUCTION } from '../../src/demo/github-api/fixtures.js';
import { HIDDEN_ISSUE_INVISIBLE } from '../../src/demo/github-api/data.js';
import { call, PAT, sc, startGithubBroker, textOf, type GithubBroker, type Json } from './harness.js';

const ALL_TOOLS = [
  'get_repository',
  'get_file_contents',
  'list_branches',
  'list_commits',
  'list_issues',
  'get_issue',
  'create_issue',
  'add_issue_comment',
  'list_pull_requests',
  'get_pull_request',
  'get_pull_request_diff',
  'create_pull_request',
];

const POLICY = `    credential: gh-token
    repos: ["acme/*"]
    perPage: 2
    maxPages: 3
    tools:
${ALL_TOOLS.filter((t) => !t.startsWith('create_') && t !== 'add_issue_comment')
  .map((t) => `      ${t}: {}`)
  .join('\n')}
      create_issue: { labels: [bug, agent] }
      add_issue_comment: { labels: [agent-ok] }
      create_pull_request: { base: [main, develop], head: ["agent/*"], draft: required }
`;

const OMIT_POLICY = `    credential: gh-token
    repos: ["acme/payments-api"]
    untrustedAuthors: omit
    tools:
      get_issue: {}
`;

let gh: GithubBroker;
const repo = { owner: 'acme', repo: 'payments-api' };

beforeAll(async () => {
  gh = await startGithubBroker({ policies: { acme: POLICY, strict: OMIT_POLICY } });
});
afterAll(() => gh?.close());

describe('github tools with a token secret', () => {
  it('lists the twelve tools with output schemas and honest annotations', async () => {
    const client = await gh.client();
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual([...ALL_TOOLS].sort());
    for (const t of tools) {
      expect(t.outputSchema?.type).toBe('object');
      const writes = t.name.startsWith('create_') || t.name === 'add_issue_comment';
      expect(t.annotations).toMatchObject({
        readOnlyHint: !writes,
        destructiveHint: false,
        openWorldHint: true,
      });
    }
  });

  it('get_issue removes hidden Unicode, counts it, and labels every text with its author', async () => {
    const client = await gh.client();
    const r = await call(client, 'get_issue', { ...repo, number: 1 });
    expect(r.isError).toBeFalsy();
    const s = sc(r);
    expect(s.body).toEqual({
      author: 'drive-by-user',
      authorAssociation: 'NONE',
      writeAccess: false,
      text: 'The export button does nothing on Safari. Steps: open /reports, click Export.',
      omitted: false,
      invisibleRemoved: HIDDEN_ISSUE_INVISIBLE,
      truncated: false,
    });
    expect(
      s.comments.map((c: Json) => [c.body.author, c.body.authorAssociation, c.body.writeAccess, c.body.text]),
    ).toEqual([
      ['octo-maintainer', 'MEMBER', true, 'Confirmed on Safari 18. Agent: please fix in a branch.'],
      ['drive-by-user', 'CONTRIBUTOR', false, '+1'],
    ]);
    expect(s.invisibleRemoved).toBeGreaterThan(HIDDEN_ISSUE_INVISIBLE);
    const text = textOf(r);
    expect(text).toContain('issue body by @drive-by-user (NONE, NO write access)');
    expect(text).toContain(`${HIDDEN_ISSUE_INVISIBLE} invisible character(s) removed`);
    expect(text).toContain('comment 501 by @octo-maintainer (MEMBER, write access)');
    // Neither the tag-encoded instruction nor any tag character reaches the agent.
    const all = JSON.stringify(r);
    expect(all).not.toMatch(/[\u{E0000}-\u{E007F}\u200b\u202e\u2060\ufeff]/u);
    expect(all).not.toContain(HIDDEN_INSTRUCTION);
    // The request carried the PAT, an Octokit user agent and nothing the agent chose.
    const last = gh.api.calls.at(-1)!;
    expect(last.credential).toBe(PAT);
    expect(last.url).toBe('/repos/acme/payments-api/issues/1/comments?per_page=2&page=1');
    // The result record says how much was removed.
    const records = await gh.audit();
    expect(records.at(-1)).toMatchObject({
      tool: 'get_issue',
      phase: 'result',
      outcome: 'ok',
      omittedBodies: 0,
    });
    expect((records.at(-1) as Json).invisibleRemoved).toBe(s.invisibleRemoved);
  });

  it('requests to GitHub carry only the client’s own headers, whatever the arguments hold', async () => {
    const client = await gh.client();
    await call(client, 'get_file_contents', { ...repo, path: 'README.md', ref: 'main' });
    await call(client, 'create_issue', {
      ...repo,
      title: 'X-Forwarded-For: 1.2.3.4\r\nAuthorization: token evil',
      body: 'b',
    });
    for (const c of gh.api.calls.slice(-2)) {
      const names = Object.keys(c.headers).sort();
      const expected = ['accept', 'accept-encoding', 'authorization', 'connection', 'host', 'user-agent'];
      expect(names).toEqual(
        c.method === 'POST' ? [...expected, 'content-length', 'content-type'].sort() : expected,
      );
      expect(c.headers.authorization).toBe(`token ${PAT}`);
      expect(c.userAgent).toMatch(/^airlock-github /);
    }
    // The header-looking title went as the JSON body's title, nowhere else.
    expect(gh.api.calls.at(-1)!.body).toMatchObject({
      title: 'X-Forwarded-For: 1.2.3.4\r\nAuthorization: token evil',
    });
  });

  it('untrustedAuthors: omit drops bodies by authors without write access, keeps the maintainer', async () => {
    const client = await gh.client('strict');
    const r = await call(client, 'get_issue', { ...repo, number: 1 });
    const s = sc(r);
    expect(s.body).toMatchObject({ author: 'drive-by-user', text: null, omitted: true });
    expect(s.comments.map((c: Json) => c.body.omitted)).toEqual([false, true]);
    expect(s.comments[0].body.text).toContain('Confirmed on Safari 18');
    expect(textOf(r)).toContain('[omitted: the author has no write access (policy untrustedAuthors: omit)]');
    expect(JSON.stringify(r)).not.toContain('export button does nothing');
  });

  it('get_repository, list_branches with pagination, list_commits with labelled messages', async () => {
    const client = await gh.client();
    const info = await call(client, 'get_repository', repo);
    expect(info.structuredContent).toMatchObject({
      fullName: 'acme/payments-api',
      defaultBranch: 'main',
      private: true,
    });
    const p1 = await call(client, 'list_branches', repo);
    expect(p1.structuredContent).toMatchObject({ page: 1, nextPage: 2, truncated: false });
    expect(sc(p1).branches).toHaveLength(2);
    const p2 = await call(client, 'list_branches', { ...repo, page: 2 });
    expect(sc(p2).branches.map((b: Json) => b.name)).toEqual(['agent/fix-export', 'release/1.0']);
    expect(p2.structuredContent).toMatchObject({ nextPage: null, truncated: false });
    const commits = await call(client, 'list_commits', { ...repo, sha: 'main', path: 'src/main.ts' });
    const list = sc(commits).commits;
    expect(list[0].message).toMatchObject({
      author: 'octo-maintainer',
      authorAssociation: null,
      writeAccess: null,
    });
    expect(list[1].message).toMatchObject({ text: 'Initial commit', invisibleRemoved: 1 });
    expect(gh.api.calls.at(-1)!.url).toBe(
      '/repos/acme/payments-api/commits?sha=main&path=src%2Fmain.ts&page=1&per_page=2',
    );
  });

  it('truncated: true when a list goes on past the policy maxPages', async () => {
    const client = await gh.client();
    const state = gh.api.repos.get('acme/ledger')!;
    for (let i = 0; i < 8; i++) state.branches[`feature/${i}`] = 'b'.repeat(40);
    const last = await call(client, 'list_branches', { owner: 'acme', repo: 'ledger', page: 3 });
    expect(last.structuredContent).toMatchObject({ page: 3, nextPage: null, truncated: true });
  });

  it('get_file_contents: text cleaned, binary as base64, directories listed, path encoded segment by segment', async () => {
    const client = await gh.client();
    const file = await call(client, 'get_file_contents', {
      ...repo,
      path: 'src/payments/refund.ts',
      ref: 'main',
    });
    expect(file.structuredContent).toMatchObject({ type: 'file', encoding: 'utf8', truncated: false });
    expect(sc(file).content).toContain('export function refund');
    expect(gh.api.calls.at(-1)!.url).toBe(
      '/repos/acme/payments-api/contents/src/payments/refund.ts?ref=main',
    );
    const hidden = await call(client, 'get_file_contents', { ...repo, path: 'docs/hidden.md' });
    expect(hidden.structuredContent).toMatchObject({ content: 'Looks harmless.\n', invisibleRemoved: 26 });
    const bin = await call(client, 'get_file_contents', { ...repo, path: 'assets/logo.bin' });
    expect(bin.structuredContent).toMatchObject({
      encoding: 'base64',
      content: Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x00, 0xff, 0xfe, 0x01]).toString('base64'),
    });
    const dir = await call(client, 'get_file_contents', { ...repo, path: 'src' });
    expect(sc(dir).entries.map((e: Json) => [e.path, e.type])).toEqual([
      ['src/main.ts', 'file'],
      ['src/payments', 'dir'],
    ]);
    gh.api.repos.get('acme/payments-api')!.files['docs/a file with spaces & ü.md'] = 'ok';
    const spaced = await call(client, 'get_file_contents', {
      ...repo,
      path: 'docs/a file with spaces & ü.md',
    });
    expect(spaced.isError).toBeFalsy();
    expect(gh.api.calls.at(-1)!.url).toBe(
      '/repos/acme/payments-api/contents/docs/a%20file%20with%20spaces%20%26%20%C3%BC.md',
    );
  });

  it('list_issues leaves out pull requests and bodies; list/get pull request and its diff', async () => {
    const client = await gh.client();
    gh.api.repos.get('acme/payments-api')!.issues.push({
      number: 9,
      title: 'PR as issue',
      body: 'x',
      user: { login: 'a', id: 1 },
      authorAssociation: 'MEMBER',
      state: 'open',
      labels: [],
      pullRequest: true,
    });
    const issues = await call(client, 'list_issues', { ...repo, state: 'all', perPage: 2, page: 1 });
    const nums = sc(issues).issues.map((i: Json) => i.number);
    expect(nums).toEqual([1, 2]);
    expect(JSON.stringify(issues.structuredContent)).not.toContain('does nothing on Safari');
    const pulls = await call(client, 'list_pull_requests', repo);
    expect(sc(pulls).pullRequests[0]).toMatchObject({
      number: 4,
      head: { ref: 'agent/fix-export' },
      base: { ref: 'main' },
    });
    const pr = await call(client, 'get_pull_request', { ...repo, number: 4 });
    expect(pr.structuredContent).toMatchObject({
      number: 4,
      additions: 1,
      deletions: 1,
      changedFiles: 1,
      body: { author: 'octo-maintainer', writeAccess: true, text: 'Closes #1.' },
    });
    const diff = await call(client, 'get_pull_request_diff', { ...repo, number: 4 });
    expect(diff.structuredContent).toMatchObject({ invisibleRemoved: 1, truncated: false });
    expect(sc(diff).diff).toContain('+export const main = () => 43;\n');
    expect(gh.api.calls.at(-1)!.headers.accept).toBe('application/vnd.github.v3.diff');
  });

  it('create_issue with allowed labels, add_issue_comment on an agent-ok issue, create_pull_request as draft', async () => {
    const client = await gh.client();
    const issue = await call(client, 'create_issue', {
      ...repo,
      title: 'Flaky test',
      body: 'Seen twice.',
      labels: ['bug'],
    });
    expect(issue.isError, textOf(issue)).toBeFalsy();
    expect(gh.api.calls.at(-1)).toMatchObject({
      method: 'POST',
      url: '/repos/acme/payments-api/issues',
      body: { title: 'Flaky test', body: 'Seen twice.', labels: ['bug'] },
    });
    const comment = await call(client, 'add_issue_comment', {
      ...repo,
      number: 2,
      body: 'Measured: 120 ms.',
    });
    expect(comment.isError, textOf(comment)).toBeFalsy();
    expect(gh.api.calls.at(-1)).toMatchObject({
      method: 'POST',
      url: '/repos/acme/payments-api/issues/2/comments',
      body: { body: 'Measured: 120 ms.' },
    });
    const pr = await call(client, 'create_pull_request', {
      ...repo,
      title: 'Fix export',
      head: 'agent/fix-export',
      base: 'develop',
      draft: true,
    });
    expect(pr.isError, textOf(pr)).toBeFalsy();
    expect(pr.structuredContent).toMatchObject({ draft: true, head: 'agent/fix-export', base: 'develop' });
    expect(gh.api.calls.at(-1)).toMatchObject({
      method: 'POST',
      url: '/repos/acme/payments-api/pulls',
      body: { head: 'agent/fix-export', base: 'develop', draft: true },
    });
    const records = await gh.audit();
    expect(records.at(-1)).toMatchObject({
      tool: 'create_pull_request',
      phase: 'result',
      outcome: 'ok',
      decision: 'allow',
      rule: 'github.repos[0]',
    });
  });
});
