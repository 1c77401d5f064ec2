// `airlock serve` opens model.sock for a team whose policy has a `model:` section; requests
// through it reach the model API with the team's key and are audited; reloads apply.
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Broker } from '../../src/broker.js';
import { loadConfig } from '../../src/config/airlock-yaml.js';
import { silentLogger } from '../../src/log.js';
import { makeInstallation, type Installation } from '../helpers/fixture.js';
import { startScriptedApi, type ScriptedApi } from '../model/scripted-api.js';
import { messagesBody, send } from '../model/harness.js';

const KEY = 'sk-ant-api03-brokerWiringTestKey0123456789abcdef-AAAA';

describe('model.sock through airlock serve', () => {
  let inst: Installation;
  let api: ScriptedApi;
  let broker: Broker;

  const policy = (budget = '') => `team: acme
servers:
  model:
    upstream: ${api.url}
    credential: anthropic-key
    allowPrivateAddress: true${budget}
`;

  beforeAll(async () => {
    api = await startScriptedApi({ apiKey: KEY });
    inst = await makeInstallation({ secrets: { 'anthropic-key': KEY } });
    await inst.writePolicy('acme.yaml', policy());
    broker = await Broker.start(await loadConfig(inst.configFile), { log: silentLogger() });
  });

  afterAll(async () => {
    await broker?.stop(1000);
    await api?.close();
    await inst?.cleanup();
  });

  it('serves the model socket (and no MCP socket) for a model-only team', () => {
    expect(existsSync(inst.socket('acme', 'model'))).toBe(true);
    expect(existsSync(inst.socket('acme', 'http'))).toBe(false);
  });

  it('injects the key, strips the client one, and audits model + usage without the key', async () => {
    api.enqueue({ text: 'hello from the scripted API' });
    const res = await send(inst.socket('acme', 'model'), {
      headers: { 'x-api-key': 'placeholder-from-the-sandbox' },
      body: messagesBody(),
    });
    expect(res.status).toBe(200);
    expect(res.text).toContain('hello from the scripted API');
    const seen = api.requests.at(-1)!;
    expect(seen.headers['x-api-key']).toBe(KEY);
    const audit = await readFile(inst.auditFile, 'utf8');
    expect(audit).not.toContain(KEY);
    const result = audit
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .filter((r) => r.server === 'model')
      .at(-1);
    expect(result).toMatchObject({
      team: 'acme',
      phase: 'result',
      decision: 'allow',
      outcome: 'ok',
      model: 'claude-sonnet-4-5',
    });
    expect(result.usage.output_tokens).toBeGreaterThan(0);
  });

  it("answers Claude Code's start-up probe (HEAD /) locally, without an upstream call or a record", async () => {
    const before = { upstream: api.requests.length, audit: (await readFile(inst.auditFile, 'utf8')).length };
    const res = await send(inst.socket('acme', 'model'), { method: 'HEAD', path: '/' });
    expect(res.status).toBe(200);
    expect(api.requests.length).toBe(before.upstream);
    expect((await readFile(inst.auditFile, 'utf8')).length).toBe(before.audit);
    // Any other path outside the policy is still a denial.
    const other = await send(inst.socket('acme', 'model'), { method: 'GET', path: '/v1/models' });
    expect(other.status).toBe(403);
  });

  it('applies a reloaded budget to the live socket', async () => {
    await inst.writePolicy('acme.yaml', policy('\n    dailyTokenBudget: 1'));
    await broker.reload();
    const before = api.requests.length;
    const res = await send(inst.socket('acme', 'model'), { body: messagesBody() });
    expect(res.status).toBe(429);
    expect(res.json().error.type).toBe('rate_limit_error');
    expect(api.requests.length).toBe(before);
  });

  it('closes the model socket when the section is removed', async () => {
    await inst.writePolicy(
      'acme.yaml',
      'team: acme\nservers:\n  http:\n    hosts:\n      - origin: https://api.example.com\n    tools: { http_request: {} }\n',
    );
    await broker.reload();
    expect(existsSync(inst.socket('acme', 'model'))).toBe(false);
    expect(existsSync(inst.socket('acme', 'http'))).toBe(true);
  });
});
