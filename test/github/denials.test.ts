// Every refusal the policy makes: audited as a denial naming its rule, and nothing reaches the
// GitHub API stand-in (it records every request it gets, including ones it rejects).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, sc, startGithubBroker, textOf, type GithubBroker, type Json } from './harness.js';

const POLICY = `    credential: gh-token
    repos: ["acme/payments-api", "acme/ledger-*"]
    perPage: 20
    maxPages: 5
    tools:
      get_file_contents: {}
      list_branches: {}
      list_commits: {}
      get_issue: {}
      create_issue: { labels: [bug], maxTitleLength: 40 }
      add_issue_comment: { maxBodyLength: 100 }
      create_pull_request: { base: ["main"], head: ["agent/*"], draft: required }
`;

let gh: GithubBroker;
const repo = { owner: 'acme', repo: 'payments-api' };

beforeAll(async () => {
  gh = await startGithubBroker({ policies: { acme: POLICY } });
});
afterAll(() => gh?.close());

const cases: { name: string; tool: string; args: Record<string, unknown>; rule: string; text: RegExp }[] = [
  {
    name: 'a repository outside the globs',
    tool: 'get_issue',
    args: { owner: 'other', repo: 'secret-stuff', number: 1 },
    rule: 'github.repos',
    text: /^denied: github\.repos: repository other\/secret-stuff is not in the policy; allowed: acme\/payments-api, acme\/ledger-\*/,
  },
  {
    name: 'a repository that only looks like a glob match',
    tool: 'get_issue',
    args: { owner: 'acme', repo: 'payments-api-fork', number: 1 },
    rule: 'github.repos',
    text: /not in the policy/,
  },
  {
    name: 'a pull request into a base outside the rules',
    tool: 'create_pull_request',
    args: { ...repo, title: 't', head: 'agent/x', base: 'release/1.0', draft: true },
    rule: 'github.tools.create_pull_request.base',
    text: /base branch "release\/1\.0" is not allowed; allowed: main/,
  },
  {
    name: 'a pull request from a head outside the rules',
    tool: 'create_pull_request',
    args: { ...repo, title: 't', head: 'main', base: 'main', draft: true },
    rule: 'github.tools.create_pull_request.head',
    text: /head branch "main" is not allowed; allowed: agent\/\*/,
  },
  {
    name: 'a cross-repository head (owner:branch)',
    tool: 'create_pull_request',
    args: { ...repo, title: 't', head: 'evil:agent/x', base: 'main', draft: true },
    rule: 'github.tools.create_pull_request.input',
    text: /^invalid argument: head: not a git ref name/,
  },
  {
    name: 'a non-draft pull request when drafts are required',
    tool: 'create_pull_request',
    args: { ...repo, title: 't', head: 'agent/x', base: 'main' },
    rule: 'github.tools.create_pull_request.draft',
    text: /requires draft pull requests; pass draft: true/,
  },
  {
    name: 'a path with ".."',
    tool: 'get_file_contents',
    args: { ...repo, path: 'src/../../../etc/passwd' },
    rule: 'github.tools.get_file_contents.input',
    text: /^invalid argument: path: path has a "\.\." segment/,
  },
  {
    name: 'a path with an encoded %2e%2e',
    tool: 'get_file_contents',
    args: { ...repo, path: 'src/%2e%2e/secrets' },
    rule: 'github.tools.get_file_contents.input',
    text: /percent-escape/,
  },
  {
    name: 'a path with a query',
    tool: 'get_file_contents',
    args: { ...repo, path: 'README.md?ref=evil' },
    rule: 'github.tools.get_file_contents.input',
    text: /"\?" or "#"/,
  },
  {
    name: 'a path with a backslash',
    tool: 'get_file_contents',
    args: { ...repo, path: 'src\\..\\x' },
    rule: 'github.tools.get_file_contents.input',
    text: /backslash/,
  },
  {
    name: 'a path with an empty segment',
    tool: 'get_file_contents',
    args: { ...repo, path: '/etc/passwd' },
    rule: 'github.tools.get_file_contents.input',
    text: /empty segment/,
  },
  {
    name: 'a path with a control character',
    tool: 'get_file_contents',
    args: { ...repo, path: 'a\nb' },
    rule: 'github.tools.get_file_contents.input',
    text: /control character/,
  },
  {
    name: 'an owner with illegal characters',
    tool: 'get_issue',
    args: { owner: 'acme/../other', repo: 'payments-api', number: 1 },
    rule: 'github.tools.get_issue.input',
    text: /^invalid argument: owner: owner must be a GitHub account name/,
  },
  {
    name: 'a repo name of ".."',
    tool: 'get_issue',
    args: { owner: 'acme', repo: '..', number: 1 },
    rule: 'github.tools.get_issue.input',
    text: /^invalid argument: repo:/,
  },
  {
    name: 'a ref that is an option',
    tool: 'get_file_contents',
    args: { ...repo, path: 'README.md', ref: '--upload-pack=x' },
    rule: 'github.tools.get_file_contents.input',
    text: /not a git ref name or object id/,
  },
  {
    name: 'a ref with ".."',
    tool: 'list_commits',
    args: { ...repo, sha: 'main..evil' },
    rule: 'github.tools.list_commits.input',
    text: /not a git ref name/,
  },
  {
    name: 'a page past the cap',
    tool: 'list_branches',
    args: { ...repo, page: 6 },
    rule: 'github.maxPages',
    text: /page 6 is past the policy's last page \(maxPages: 5\)/,
  },
  {
    name: 'a page size past the cap',
    tool: 'list_commits',
    args: { ...repo, perPage: 50 },
    rule: 'github.perPage',
    text: /perPage 50 is more than the policy allows \(perPage: 20\)/,
  },
  {
    name: 'a label outside the allowlist',
    tool: 'create_issue',
    args: { ...repo, title: 'x', body: 'y', labels: ['bug', 'p0-security'] },
    rule: 'github.tools.create_issue.labels',
    text: /label "p0-security" is not allowed; allowed labels: bug/,
  },
  {
    name: 'a title over the length limit',
    tool: 'create_issue',
    args: { ...repo, title: 'x'.repeat(41), body: 'y' },
    rule: 'github.tools.create_issue.maxTitleLength',
    text: /title is 41 characters; the policy allows at most 40/,
  },
  {
    name: 'a body over the length limit',
    tool: 'add_issue_comment',
    args: { ...repo, number: 1, body: 'y'.repeat(101) },
    rule: 'github.tools.add_issue_comment.maxBodyLength',
    text: /body is 101 characters; the policy allows at most 100/,
  },
  {
    name: 'a tool the policy does not list',
    tool: 'list_pull_requests',
    args: { ...repo },
    rule: 'github.tools',
    text: /tool "list_pull_requests" is not enabled for team "acme"/,
  },
  {
    name: 'an unknown argument (no caller-chosen headers or URLs)',
    tool: 'get_issue',
    args: { ...repo, number: 1, headers: { authorization: 'token mine' } },
    rule: 'github.tools.get_issue.input',
    text: /unknown field\(s\) "headers"/,
  },
];

describe('github denials', () => {
  it.each(cases)('$name: denied, audited, nothing sent to GitHub', async ({ tool, args, rule, text }) => {
    const client = await gh.client();
    const before = gh.api.calls.length;
    const r = await call(client, tool, args);
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(text);
    expect(gh.api.calls.length).toBe(before);
    const records = await gh.audit();
    const last = records.at(-1) as Json;
    expect(last).toMatchObject({ tool, phase: 'result', decision: 'deny', outcome: 'denied', rule });
    expect(records.filter((x) => x.call === last.call)).toHaveLength(1);
  });

  it('the same calls inside the rules do reach GitHub (the denials above are the rules, not breakage)', async () => {
    const client = await gh.client();
    gh.api.repos.get('acme/payments-api')!.branches['agent/new'] = 'c'.repeat(40);
    const before = gh.api.calls.length;
    const ok = [
      await call(client, 'get_issue', { owner: 'acme', repo: 'payments-api', number: 1 }),
      await call(client, 'list_branches', { ...repo, page: 5 }),
      await call(client, 'get_file_contents', { ...repo, path: 'src/main.ts', ref: 'main' }),
      await call(client, 'create_pull_request', {
        ...repo,
        title: 't',
        head: 'agent/new',
        base: 'main',
        draft: true,
      }),
    ];
    for (const r of ok) expect(r.isError ? textOf(r) : 'ok').toBe('ok');
    expect(gh.api.calls.length).toBeGreaterThan(before);
    expect(sc(ok[3]!)).toMatchObject({ draft: true });
  });

  it('a comment on an issue without a required label is a late, audited denial after reading the issue only', async () => {
    gh.api.repos.get('acme/payments-api')!.comments[1] ??= [];
    const lateGh = await startGithubBroker({
      policies: {
        acme: `    credential: gh-token\n    repos: ["acme/*"]\n    tools:\n      add_issue_comment: { labels: [agent-ok] }\n`,
      },
    });
    try {
      const client = await lateGh.client();
      const r = await call(client, 'add_issue_comment', { ...repo, number: 1, body: 'hello' });
      expect(textOf(r)).toMatch(
        /^denied: github\.tools\.add_issue_comment\.labels: issue #1 carries none of the labels the policy requires for comments \(agent-ok\); it has: bug/,
      );
      expect(lateGh.api.calls.map((c) => `${c.method} ${c.url}`)).toEqual([
        'GET /repos/acme/payments-api/issues/1',
      ]);
      const records = await lateGh.audit();
      expect(records.map((x) => [x.phase, x.decision, x.rule])).toEqual([
        ['request', 'allow', 'github.repos[0]'],
        ['result', 'deny', 'github.tools.add_issue_comment.labels'],
      ]);
      const ok = await call(client, 'add_issue_comment', { ...repo, number: 2, body: 'hello' });
      expect(ok.isError, textOf(ok)).toBeFalsy();
    } finally {
      await lateGh.close();
    }
  });
});
