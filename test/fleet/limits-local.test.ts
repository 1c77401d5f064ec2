// Local rateLimit counters (the default store) are the host's, not one process's: `airlock serve`
// and `airlock call` processes on one state folder draw on one bucket, concurrently, and the
// bucket survives a restart of serve.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sampleRepo } from '../../src/demo/github-api/data.js';
import { startGithubApiStandIn, type GithubApiStandIn } from '../../src/demo/github-api/server.js';
import { runCli, startServe, type ServeProcess } from '../approvals/helpers.js';
import { connectSocketClient, makeInstallation, type Installation } from '../helpers/fixture.js';
import { githubPolicy } from './limits-context.js';

const PAT = 'ghp_HostLimitsTestToken0123456789abcdefgh';
const ARGS = JSON.stringify({ owner: 'acme', repo: 'payments-api' });

let api: GithubApiStandIn;
let inst: Installation;
let serve: ServeProcess | undefined;

beforeAll(async () => {
  api = await startGithubApiStandIn({ tokens: [PAT], repos: [sampleRepo('acme', 'payments-api', 101)] });
  inst = await makeInstallation({
    secrets: { 'gh-token': PAT },
    policies: {
      'acme.yaml': githubPolicy('acme', api.apiUrl, '3/hour'),
    },
  });
  serve = await startServe(inst, [inst.socket('acme', 'github')]);
}, 60_000);

afterAll(async () => {
  await serve?.stop();
  await api?.close();
  await inst?.cleanup();
});

const cliCall = () =>
  runCli(['call', 'github', 'get_repository', '--team', 'acme', '--json', ARGS, '--config', inst.configFile]);

describe('local rateLimit across processes on one host', () => {
  it('serve and concurrent airlock call processes share one bucket, which survives a restart', async () => {
    const { client } = await connectSocketClient(inst.socket('acme', 'github'));
    try {
      const viaSocket = Array.from(
        { length: 3 },
        async () =>
          ((await client.callTool({ name: 'get_repository', arguments: JSON.parse(ARGS) })) as CallToolResult)
            .isError !== true,
      );
      const viaCli = Array.from({ length: 3 }, async () => (await cliCall()).code === 0);
      const outcomes = await Promise.all([...viaSocket, ...viaCli]);
      expect(outcomes.filter(Boolean)).toHaveLength(3);
      expect(api.calls.filter((c) => c.url.startsWith('/repos/acme/payments-api'))).toHaveLength(3);
    } finally {
      await client.close();
    }
    const denied = await cliCall();
    expect(denied.code).toBe(1);
    expect(denied.stdout + denied.stderr).toMatch(
      /denied: github\.tools\.get_repository\.rateLimit: rate limit 3\/hour reached; next call allowed in \d+ min/,
    );
    // A restarted serve reads the same counters.
    await serve!.stop();
    serve = await startServe(inst, [inst.socket('acme', 'github')]);
    const { client: again } = await connectSocketClient(inst.socket('acme', 'github'));
    try {
      const r = (await again.callTool({
        name: 'get_repository',
        arguments: JSON.parse(ARGS),
      })) as CallToolResult;
      expect(r.isError).toBe(true);
    } finally {
      await again.close();
    }
    expect(api.calls.filter((c) => c.url.startsWith('/repos/acme/payments-api'))).toHaveLength(3);
  });
});
