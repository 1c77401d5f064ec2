// The demo's GitHub part: a local GitHub API stand-in (GitHub cannot be reached from the demo
// machine) holding acme/payments-api, whose issue #1 hides an instruction in invisible Unicode.
// The agent reads that issue (it comes back cleaned and labelled with its outsider author),
// opens a pull request from agent/* into develop (allowed) and one into main (outside the
// rules: denied), and asks for a repository the policy does not list (denied).
import type { AgentStep, StepReport } from './agent.js';
import { sampleRepo } from './github-api/data.js';
import { startGithubApiStandIn, type GithubApiStandIn } from './github-api/server.js';

export interface GithubDemo {
  api: GithubApiStandIn;
  /** The policy's servers.github section (indented for the team file). */
  policy: string;
  close(): Promise<void>;
}

export async function startGithubDemo(token: string): Promise<GithubDemo> {
  const api = await startGithubApiStandIn({ tokens: [token], repos: [sampleRepo('acme', 'payments-api')] });
  const policy = `  github:
    credential: github-token
    apiUrl: ${api.apiUrl}
    repos: ["acme/payments-api"]
    tools:
      get_issue: {}
      list_pull_requests: {}
      create_pull_request: { base: ["develop"], head: ["agent/*"] }
`;
  return { api, policy, close: () => api.close() };
}

interface GithubExpectation {
  label: string;
  expect: 'ok' | 'denied' | 'done';
  verify?: (step: StepReport) => string | undefined;
  show?: (step: StepReport) => string;
}

interface LabelledBody {
  author: string | null;
  authorAssociation: string | null;
  writeAccess: boolean | null;
  text: string | null;
  invisibleRemoved: number;
}

/** Tag characters, bidi controls and zero-width characters: none may reach the agent. */
const INVISIBLE = /[\u{E0000}-\u{E007F}\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/u;

export function githubPart(
  gh: GithubDemo,
  socket: string,
  fail: (problem: string) => void,
): { steps: AgentStep[]; expectations: GithubExpectation[]; after: () => Promise<string[]> } {
  const repo = { owner: 'acme', repo: 'payments-api' };
  const call = (label: string, tool: string, args: Record<string, unknown>): AgentStep => ({
    kind: 'call',
    label,
    socket,
    tool,
    arguments: { ...repo, ...args },
  });
  const pr = { title: 'Fix the export button on Safari', head: 'agent/fix-export', body: 'Closes #1.' };
  const steps: AgentStep[] = [
    { kind: 'tools', label: 'github: tools/list', socket },
    call('get_issue #1 (hidden Unicode in its body)', 'get_issue', { number: 1 }),
    call('create_pull_request agent/fix-export → develop', 'create_pull_request', { ...pr, base: 'develop' }),
    call('create_pull_request agent/fix-export → main (base not allowed)', 'create_pull_request', {
      ...pr,
      base: 'main',
    }),
    call('get_issue in other/secret-stuff (repository not in policy)', 'get_issue', {
      owner: 'other',
      repo: 'secret-stuff',
      number: 1,
    }),
  ];
  const body = (s: StepReport) => (s.structured as { body?: LabelledBody } | undefined)?.body;
  const expectations: GithubExpectation[] = [
    {
      label: 'github: tools/list',
      expect: 'done',
      show: (s) => `tools offered: ${(s.tools ?? []).join(', ')}`,
    },
    {
      label: steps[1]!.label,
      expect: 'ok',
      verify: (s) => {
        const b = body(s);
        if (!b?.text) return 'the issue body did not come back';
        if (INVISIBLE.test(JSON.stringify(s.structured)) || INVISIBLE.test(s.text ?? ''))
          return 'invisible characters reached the agent';
        if (b.invisibleRemoved === 0) return 'no invisible characters were reported as removed';
        if (b.author !== 'drive-by-user' || b.writeAccess !== false)
          return 'the body is not labelled with its author';
        return undefined;
      },
      show: (s) => {
        const b = body(s)!;
        return `body by @${b.author} (${b.authorAssociation}, no write access), ${b.invisibleRemoved} hidden characters removed`;
      },
    },
    {
      label: steps[2]!.label,
      expect: 'ok',
      show: (s) => `opened #${(s.structured as { number: number }).number}`,
    },
    { label: steps[3]!.label, expect: 'denied' },
    { label: steps[4]!.label, expect: 'denied' },
  ];
  const before = gh.api.calls.length;
  return {
    steps,
    expectations,
    after: async () => {
      const seen = gh.api.calls.slice(before);
      const posts = seen.filter((c) => c.method === 'POST');
      if (seen.length === 0) fail('the GitHub stand-in got no requests');
      if (!seen.every((c) => c.auth === 'token'))
        fail('a request reached the GitHub stand-in without the token');
      if (posts.length !== 1 || (posts[0]!.body as { base?: string }).base !== 'develop')
        fail('the GitHub stand-in did not get exactly the one allowed pull request');
      if (seen.some((c) => c.url.includes('/other/')))
        fail('a denied repository reached the GitHub stand-in');
      return [
        `GitHub stand-in: ${seen.length} request(s), all with "Authorization: token <key>" added by Airlock;`,
        `          one pull request opened (into develop); nothing asked of main or other/secret-stuff`,
      ];
    },
  };
}
