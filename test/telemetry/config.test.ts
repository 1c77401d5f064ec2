// `telemetry:` in airlock.yaml: defaults, and every mistake reported at its file:line:col.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/airlock-yaml.js';
import { signalUrl } from '../../src/telemetry/config.js';
import { BASE_CONFIG, brief, makeWorkspace } from '../policy/helpers.js';

let ws: Awaited<ReturnType<typeof makeWorkspace>>;
beforeEach(async () => {
  ws = await makeWorkspace();
});
afterEach(() => ws.cleanup());

async function load(telemetry: string) {
  const file = path.join(ws.dir, 'airlock.yaml');
  await writeFile(file, BASE_CONFIG + telemetry);
  return loadConfig(file);
}

async function issues(telemetry: string): Promise<string[]> {
  const err = await load(telemetry).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  return brief((err as ConfigError).issues);
}

// BASE_CONFIG has 10 lines: `telemetry:` is line 11.
describe('telemetry in airlock.yaml', () => {
  it('is off when absent', async () => {
    expect((await loadConfig(ws.configFile)).telemetry).toBeUndefined();
  });

  it('takes an endpoint and fills in the defaults', async () => {
    const config = await load('telemetry:\n  otlp: { endpoint: "http://collector:4318" }\n');
    expect(config.telemetry).toEqual({
      otlp: { endpoint: 'http://collector:4318', protocol: 'http/protobuf', headers: {} },
      serviceName: 'airlock',
      sampleRatio: 1,
      exportIntervalMs: 60_000,
    });
  });

  it("takes the SPEC's short form, otlp: <url>, as the endpoint with the defaults", async () => {
    const config = await load('telemetry: { otlp: http://127.0.0.1:4318 }\n');
    expect(config.telemetry).toEqual({
      otlp: { endpoint: 'http://127.0.0.1:4318', protocol: 'http/protobuf', headers: {} },
      serviceName: 'airlock',
      sampleRatio: 1,
      exportIntervalMs: 60_000,
    });
    expect(await issues('telemetry: { otlp: ftp://collector }\n')).toEqual([
      '11:20: telemetry.otlp.endpoint: must be an http:// or https:// URL (OTLP/HTTP), not ftp:',
    ]);
  });

  it('takes every key', async () => {
    const config = await load(
      [
        'telemetry:',
        '  otlp:',
        '    endpoint: https://otel.example.com/otlp',
        '    protocol: http/json',
        '    headers: { authorization: stripe-key, x-scope: pg-analytics }',
        '  serviceName: airlock-ci',
        '  sampleRatio: 0.25',
        '  exportIntervalMs: 15000',
        '',
      ].join('\n'),
    );
    expect(config.telemetry).toEqual({
      otlp: {
        endpoint: 'https://otel.example.com/otlp',
        protocol: 'http/json',
        headers: { authorization: 'stripe-key', 'x-scope': 'pg-analytics' },
      },
      serviceName: 'airlock-ci',
      sampleRatio: 0.25,
      exportIntervalMs: 15000,
    });
  });

  it('reports each mistake at its position', async () => {
    expect(
      await issues(
        [
          'telemetry:',
          '  otlp:',
          '    endpoint: ftp://collector:21',
          '    protocol: grpc',
          '    headers: { authorization: no-such-secret, "bad header": stripe-key }',
          '    compression: gzip',
          '  sampleRatio: 2',
          '  exportIntervalMs: 10',
          '  servicename: x',
          '',
        ].join('\n'),
      ),
    ).toEqual([
      '13:15: telemetry.otlp.endpoint: must be an http:// or https:// URL (OTLP/HTTP), not ftp:',
      '14:15: telemetry.otlp.protocol: must be one of: http/protobuf, http/json',
      '15:47: telemetry.otlp.headers: invalid key "bad header": header names are HTTP tokens',
      '16:5: telemetry.otlp: unknown key "compression" (allowed: endpoint, protocol, headers)',
      '17:16: telemetry.sampleRatio: must be 1 or less',
      '18:21: telemetry.exportIntervalMs: must be 100 or more',
      '19:3: telemetry: unknown key "servicename" (allowed: otlp, serviceName, sampleRatio, exportIntervalMs)',
    ]);
  });

  it('refuses a header naming an unknown secret, and a missing otlp', async () => {
    expect(
      await issues(
        'telemetry:\n  otlp:\n    endpoint: http://c:4318\n    headers: { authorization: nope }\n',
      ),
    ).toEqual(['14:31: telemetry.otlp.headers.authorization: unknown secret "nope" (not in secrets:)']);
    expect(await issues('telemetry:\n  serviceName: a\n')).toEqual([
      '12:3: telemetry: missing required key "otlp"',
    ]);
  });

  it('refuses endpoints with credentials, a query, a signal path, or no URL at all', async () => {
    const endpoint = async (url: string) => (await issues(`telemetry:\n  otlp: { endpoint: "${url}" }\n`))[0];
    expect(await endpoint('http://user:pw@c:4318')).toMatch(
      /must not carry credentials; put them in telemetry.otlp.headers as a secret/,
    );
    expect(await endpoint('http://c:4318/?a=1')).toMatch(/must not have a query or a fragment/);
    expect(await endpoint('http://c:4318/v1/traces')).toMatch(
      /is the base URL: \/v1\/traces and \/v1\/metrics/,
    );
    expect(await endpoint('collector:4318')).toMatch(/must be an http:\/\/ or https:\/\/ URL/);
    expect(await endpoint('not a url')).toMatch(/is not a URL/);
  });

  it('appends the signal path to the base URL', () => {
    expect(signalUrl('http://c:4318', 'traces')).toBe('http://c:4318/v1/traces');
    expect(signalUrl('http://c:4318/', 'metrics')).toBe('http://c:4318/v1/metrics');
    expect(signalUrl('https://o.example/otlp/', 'traces')).toBe('https://o.example/otlp/v1/traces');
  });
});
