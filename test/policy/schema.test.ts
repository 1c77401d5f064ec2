import { SERVERS } from '../../src/servers.js';
import { describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Ajv } from 'ajv';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config/airlock-yaml.js';
import { checkPolicyFiles, policyJsonSchema } from '../../src/policy/team-policy.js';
import { fakeServers } from './fake-servers.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const EXAMPLES = ['policies/payments.yaml', 'policies/demo.yaml'];

function compile(servers = fakeServers) {
  // Formats (uri) are an editor nicety; structure is what is checked here.
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  return ajv.compile(policyJsonSchema(servers));
}

describe('policy JSON schema', () => {
  it('is draft-07 with a title and descriptions', () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- walking a JSON document
    const schema = policyJsonSchema(fakeServers) as Record<string, any>;
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
    expect(schema.title).toBe('Airlock team policy');
    expect(schema.additionalProperties).toBe(false);
    expect(schema.required).toEqual(['team', 'servers']);
    const servers = schema.properties.servers;
    expect(Object.keys(servers.properties)).toEqual(['git', 'github', 'postgres', 'http', 'model']);
    expect(servers.additionalProperties).toBe(false);
    const httpTools = servers.properties.http.properties.tools;
    expect(Object.keys(httpTools.properties)).toEqual(['http_request', 'http_get']);
    expect(httpTools.additionalProperties).toBe(false);
    expect(httpTools.properties.http_request.properties.rateLimit.type).toBe('string');
    expect(httpTools.properties.http_request.properties.rateLimit.description).toMatch(/N\/second/);
    expect(servers.properties.model.description).toMatch(/model API/);
  });

  it('accepts the example policy files (against the schema of the servers this build ships)', async () => {
    const validate = compile(await SERVERS.all());
    for (const file of EXAMPLES) {
      const data = parse(await readFile(path.join(ROOT, file), 'utf8'));
      const ok = validate(data);
      expect({ file, errors: validate.errors }).toEqual({ file, errors: null });
      expect(ok).toBe(true);
    }
  });

  it('rejects a broken policy', () => {
    const validate = compile();
    const base = {
      team: 'payments',
      servers: { http: { hosts: [{ origin: 'https://a.example' }], tools: { http_request: {} } } },
    };
    expect(validate(base)).toBe(true);
    expect(validate({ ...base, extra: 1 })).toBe(false);
    expect(validate({ ...base, team: 'Bad Team' })).toBe(false);
    expect(
      validate({ team: 'payments', servers: { http: { ...base.servers.http, tools: { nope: {} } } } }),
    ).toBe(false);
    expect(
      validate({ team: 'payments', servers: { http: { ...base.servers.http, timeoutMs: '10s' } } }),
    ).toBe(false);
    expect(
      validate({
        team: 'payments',
        servers: { http: { ...base.servers.http, tools: { http_request: { rateLimit: '5/fortnight' } } } },
      }),
    ).toBe(false);
    expect(validate({ team: 'payments', servers: { model: { upstream: 'https://x.example' } } })).toBe(false); // no credential
  });

  it('the example policies also pass policy check against the example config', async () => {
    const config = await loadConfig(path.join(ROOT, 'airlock.example.yaml'));
    // Against the servers this build really ships.
    const { policies, issues } = await checkPolicyFiles(
      config,
      SERVERS,
      EXAMPLES.map((f) => path.join(ROOT, f)),
    );
    expect(issues).toEqual([]);
    expect(policies.map((p) => p.team)).toEqual(['payments', 'demo']);
    const payments = policies[0]!;
    expect(Object.keys(payments.servers)).toEqual(['git', 'http', 'github', 'postgres']);
    expect(payments.model?.dailyTokenBudget).toBe(5_000_000);
    expect(policies[1]!.servers.http!.tools.http_request!.rateLimit).toEqual({
      count: 60,
      periodMs: 60_000,
      text: '60/minute',
    });
  });
});
