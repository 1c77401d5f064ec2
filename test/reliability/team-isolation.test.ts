// Sessions of one team never see another team's tools, upstream answers or rate-limit budget.
// Two teams on one broker, same servers, different policies: alpha's git lists git_log and
// git_status on its own workspace, bravo's only git_status on another; each team's http reaches
// its own upstream with its own credential, under the same rate-limit rule.
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import {
  createBareRepo,
  startSmartHttpServer,
  type SmartHttpServer,
} from '../../src/demo/git-http-server.js';
import { acmeHttpPolicy, startEchoUpstream, type EchoUpstream } from '../helpers/fixture.js';
import { startFaultBroker, type FaultBroker } from './faults.js';

const GIT_PASSWORD = 'isolation-git-password-61c0a7';
const ALPHA_TOKEN = 'alpha-http-token-4b8e27d1';
const BRAVO_TOKEN = 'bravo-http-token-9f13c5a6';
const CALLS_PER_TEAM = 40;
const RATE = 5;

describe('team isolation', () => {
  let fb: FaultBroker;
  let remote: SmartHttpServer;
  let alphaUp: EchoUpstream;
  let bravoUp: EchoUpstream;
  let root: string;
  const clients: Record<string, Client> = {};

  beforeAll(async () => {
    root = await mkdtemp('/tmp/al-isolation-');
    await mkdir(path.join(root, 'repos'));
    for (const repo of ['alpha.git', 'bravo.git'])
      await createBareRepo(path.join(root, 'repos'), repo, { files: { 'README.md': `# ${repo}\n` } });
    remote = await startSmartHttpServer({
      root: path.join(root, 'repos'),
      username: 'x-access-token',
      password: GIT_PASSWORD,
    });
    alphaUp = await startEchoUpstream();
    bravoUp = await startEchoUpstream();
    const policy = (team: string, origin: string, secret: string, gitTools: string) =>
      acmeHttpPolicy(origin)
        .replace('team: acme', `team: ${team}`)
        .replace('secret:api-token', `secret:${secret}`)
        .replace('      http_request: {}', `      http_request: { rateLimit: ${RATE}/hour }`) +
      `  git:
    workspaces:
      ${team}-app: { path: ${path.join(root, 'work', team)}, remote: ${remote.repoUrl(`${team}.git`)}, credential: git-token }
    tools:
${gitTools}`;
    for (const team of ['alpha', 'bravo']) await mkdir(path.join(root, 'work', team), { recursive: true });
    fb = await startFaultBroker({
      secrets: { 'git-token': GIT_PASSWORD, 'alpha-token': ALPHA_TOKEN, 'bravo-token': BRAVO_TOKEN },
      policies: {
        'alpha.yaml': policy(
          'alpha',
          alphaUp.origin,
          'alpha-token',
          '      git_status: {}\n      git_log: {}\n',
        ),
        'bravo.yaml': policy('bravo', bravoUp.origin, 'bravo-token', '      git_status: {}\n'),
      },
    });
    for (const team of ['alpha', 'bravo'])
      for (const server of ['http', 'git']) clients[`${team}/${server}`] = await fb.client(team, server);
  }, 60_000);

  afterAll(async () => {
    await fb?.close();
    await remote?.close();
    await alphaUp?.close();
    await bravoUp?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  const call = async (team: string, server: string, name: string, args: Record<string, unknown>) => {
    const r = (await clients[`${team}/${server}`]!.callTool({ name, arguments: args })) as CallToolResult;
    return {
      isError: r.isError === true,
      text: (r.content[0] as { text: string }).text,
      raw: JSON.stringify(r),
    };
  };

  it("lists only the team's own tools, and another team's tool or workspace does not exist for it", async () => {
    const names = async (team: string) =>
      (await clients[`${team}/git`]!.listTools()).tools.map((t) => t.name).sort();
    expect(await names('alpha')).toEqual(['git_log', 'git_status']);
    expect(await names('bravo')).toEqual(['git_status']);

    const log = await call('bravo', 'git', 'git_log', { workspace: 'bravo-app' });
    expect(log.isError).toBe(true);
    expect(log.text).toMatch(/^denied: /);
    const other = await call('bravo', 'git', 'git_status', { workspace: 'alpha-app' });
    expect(other.isError).toBe(true);
    expect(other.raw).not.toContain(path.join(root, 'work', 'alpha'));
    expect((await call('alpha', 'git', 'git_status', { workspace: 'alpha-app' })).isError).toBe(false);
    expect((await call('bravo', 'git', 'git_status', { workspace: 'bravo-app' })).isError).toBe(false);

    // Each team's socket folder holds its own sockets only.
    expect((await readdir(path.join(fb.inst.socketDir, 'bravo'))).sort()).toEqual(['git.sock', 'http.sock']);
    // bravo cannot aim its credentialed tool at alpha's upstream.
    const cross = await call('bravo', 'http', 'http_request', {
      method: 'GET',
      url: `${alphaUp.origin}/v1/x`,
    });
    expect(cross.text).toMatch(/^denied: /);
    expect(alphaUp.requests).toHaveLength(0);
  });

  it('concurrent calls of both teams each get their own answer, with their own credential upstream', async () => {
    // RATE - 1 calls per team, all at once (bravo's denied call above was not charged).
    const results = await Promise.all(
      ['alpha', 'bravo'].flatMap((team) =>
        Array.from({ length: RATE - 1 }, (_, i) => {
          const nonce = `${team}-nonce-${i}-${Math.random().toString(36).slice(2)}`;
          const origin = team === 'alpha' ? alphaUp.origin : bravoUp.origin;
          return call(team, 'http', 'http_request', { method: 'GET', url: `${origin}/v1/${nonce}` }).then(
            (r) => ({
              team,
              nonce,
              r,
            }),
          );
        }),
      ),
    );
    const nonces = results.map((x) => x.nonce);
    for (const { nonce, r } of results) {
      expect(r.isError, r.text).toBe(false);
      expect(r.raw).toContain(nonce);
      for (const other of nonces) if (other !== nonce) expect(r.raw).not.toContain(other);
      for (const token of [ALPHA_TOKEN, BRAVO_TOKEN]) expect(r.raw).not.toContain(token);
    }
    expect(alphaUp.requests.every((q) => q.headers.authorization === `Bearer ${ALPHA_TOKEN}`)).toBe(true);
    expect(bravoUp.requests.every((q) => q.headers.authorization === `Bearer ${BRAVO_TOKEN}`)).toBe(true);
    expect(alphaUp.requests.every((q) => q.url.includes('alpha-nonce-'))).toBe(true);
    expect(bravoUp.requests.every((q) => q.url.includes('bravo-nonce-'))).toBe(true);
  });

  it("one team spending its rate-limit budget leaves the other team's untouched", async () => {
    const get = (team: string, origin: string) =>
      call(team, 'http', 'http_request', { method: 'GET', url: `${origin}/v1/budget` });
    // alpha spends the rest of its budget and past it.
    const alpha: Array<{ isError: boolean; text: string }> = [];
    for (let i = 0; i < CALLS_PER_TEAM; i++) alpha.push(await get('alpha', alphaUp.origin));
    const allowed = alpha.filter((r) => !r.isError).length;
    expect(allowed).toBe(1); // RATE - 1 were spent in the test before
    expect(alpha.at(-1)!.text).toMatch(
      /^denied: http\.tools\.http_request\.rateLimit: rate limit 5\/hour reached/,
    );

    // bravo still has what it had: exactly one call left.
    const before = bravoUp.requests.length;
    expect((await get('bravo', bravoUp.origin)).isError).toBe(false);
    expect(bravoUp.requests.length).toBe(before + 1);
    expect((await get('bravo', bravoUp.origin)).text).toMatch(/rate limit 5\/hour reached/);
  });
});
