// A broker loads a server's module when a policy names it (src/servers.ts, ServerCatalog): one
// whose policies name only http never evaluates github's, git's or postgres's tools, and a reload
// that names another server loads it before the policy is put in force, so its socket serves the
// server's tools and its policy decides their calls.
import { readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import { SERVERS } from '../../src/servers.js';
import { connectSocketClient, makeInstallation, type Installation } from '../helpers/fixture.js';

const HTTP_POLICY = `team: acme
servers:
  http:
    hosts:
      - origin: https://api.example.com
    tools:
      http_request: {}
`;

const WITH_GITHUB = `${HTTP_POLICY}  github:
    credential: gh-token
    apiUrl: http://127.0.0.1:9
    repos: ['acme/*']
    tools:
      get_issue: {}
`;

describe('servers load when a policy names them', () => {
  let inst: Installation;
  let broker: Broker;

  beforeAll(async () => {
    inst = await makeInstallation({
      secrets: { 'gh-token': 'ghp_lazyserverstesttoken0123456789' },
      policies: { 'acme.yaml': HTTP_POLICY },
    });
    const [{ Broker }, { loadConfig }, { silentLogger }] = await Promise.all([
      import('../../src/broker.js'),
      import('../../src/config/airlock-yaml.js'),
      import('../../src/log.js'),
    ]);
    broker = await Broker.start(await loadConfig(inst.configFile), { log: silentLogger(), watch: false });
  });
  afterAll(async () => {
    await broker?.stop(1000);
    await inst?.cleanup();
  });

  it('a broker whose policies name http loads http only', () => {
    expect([...SERVERS.loaded.keys()]).toEqual(['http']);
    expect(existsSync(inst.socket('acme', 'http'))).toBe(true);
    expect(existsSync(inst.socket('acme', 'github'))).toBe(false);
  });

  it("a reload that names github loads it: its socket lists github's tools and its policy decides the call", async () => {
    await writeFile(`${inst.policiesDir}/acme.yaml`, WITH_GITHUB);
    await broker.reload();
    expect(Object.keys(broker.core.policies.get('acme')!.servers)).toEqual(['http', 'github']);
    expect([...SERVERS.loaded.keys()].sort()).toEqual(['github', 'http']);

    const { client } = await connectSocketClient(inst.socket('acme', 'github'));
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name)).toEqual(['get_issue']);
    // A repository outside the policy's globs: denied by github's own rules, before any request.
    const r = await client.callTool({
      name: 'get_issue',
      arguments: { owner: 'other', repo: 'app', number: 1 },
    });
    expect(r.isError).toBe(true);
    expect((r.content as Array<{ text: string }>)[0]!.text).toMatch(/^denied: .*other\/app/);
    await client.close();
    const records = (await readFile(inst.auditFile, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { server?: string; tool?: string; decision?: string });
    expect(
      records.some((r) => r.server === 'github' && r.tool === 'get_issue' && r.decision === 'deny'),
    ).toBe(true);
  });
});
