// The servers.github policy section as `airlock policy check` sees it: positions and messages for
// the mistakes an operator makes, and the secrets it references.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, type AirlockConfig } from '../../src/config/airlock-yaml.js';
import { checkPolicyFiles } from '../../src/policy/team-policy.js';
import { SERVERS } from '../../src/servers.js';
import { brief, makeWorkspace } from '../policy/helpers.js';

let ws: Awaited<ReturnType<typeof makeWorkspace>>;
let config: AirlockConfig;

beforeEach(async () => {
  ws = await makeWorkspace();
  config = await loadConfig(ws.configFile);
});
afterEach(() => ws.cleanup());

async function check(section: string[]) {
  const file = await ws.write(
    'payments.yaml',
    ['team: payments', 'servers:', '  github:', ...section, ''].join('\n'),
  );
  return checkPolicyFiles(config, SERVERS, [file]);
}

describe('servers.github policy', () => {
  it('accepts the SPEC example and fills the defaults', async () => {
    const { issues, policies } = await check([
      '    credential: github-token',
      '    apiUrl: https://api.github.com',
      '    repos: ["acme/payments-api"]',
      '    tools:',
      '      get_file_contents: {}',
      '      create_pull_request: { base: ["main"], head: ["agent/*"], draft: required }',
      '      add_issue_comment: { rateLimit: 10/hour }',
      '    untrustedAuthors: label',
    ]);
    expect(brief(issues)).toEqual([]);
    expect(policies[0]!.servers.github).toMatchObject({
      credential: 'github-token',
      perPage: 30,
      maxPages: 10,
      untrustedAuthors: 'label',
      tools: {
        create_pull_request: { base: ['main'], head: ['agent/*'], draft: 'required', maxTitleLength: 256 },
        add_issue_comment: { rateLimit: { text: '10/hour' } },
      },
    });
  });

  it('reports each mistake at its position', async () => {
    const { issues } = await check([
      '    credential: no-such-secret',
      '    apiUrl: http://github.example.com',
      '    repos: ["acme", "acme/**"]',
      '    untrustedAuthors: hide',
      '    perPage: 500',
      '    tools:',
      '      create_pull_request: { base: ["main"], draft: sometimes }',
      '      delete_repository: {}',
    ]);
    expect(brief(issues)).toEqual([
      '4:17: servers.github.credential: unknown secret "no-such-secret"; known secrets: anthropic-key, github-token, pg-analytics, stripe-key',
      '5:13: servers.github.apiUrl: apiUrl may use http:// only for a loopback address (127.0.0.1, [::1], localhost); use https://',
      '6:13: servers.github.repos[0]: repos globs are OWNER/NAME (e.g. "acme/*"), not "acme"',
      '6:21: servers.github.repos[1]: repos globs are OWNER/NAME (e.g. "acme/*"), not "acme/**"',
      '7:23: servers.github.untrustedAuthors: must be one of: label, omit',
      '8:14: servers.github.perPage: must be 100 or less',
      '10:53: servers.github.tools.create_pull_request.draft: must be one of: required, allowed',
      expect.stringMatching(
        /^11:7: servers\.github\.tools: unknown key "delete_repository" \(allowed: get_repository, /,
      ),
    ]);
  });

  it('accepts http:// to loopback (tests, local stand-ins) and https:// GitHub Enterprise Server', async () => {
    for (const apiUrl of ['http://127.0.0.1:8080', 'http://[::1]:9000', 'https://ghe.example.com/api/v3']) {
      const { issues } = await check([
        '    credential: github-token',
        `    apiUrl: ${apiUrl}`,
        '    repos: ["acme/*"]',
        '    tools:',
        '      get_issue: {}',
      ]);
      expect(brief(issues), apiUrl).toEqual([]);
    }
  });
});
