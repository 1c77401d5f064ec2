// A secret that does not resolve: the agent hears "credential unavailable (ask the operator)"
// and the secret's name, never where the operator keeps it (environment variable, host path,
// keychain account); those details go to the operator's log and the audit record.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { Broker } from '../../src/broker.js';
import {
  connectSocketClient,
  makeInstallation,
  startEchoUpstream,
  type EchoUpstream,
  type Installation,
} from '../helpers/fixture.js';

const POLICY = (origin: string) => `team: acme
servers:
  http:
    hosts:
      - origin: ${origin}
        paths: ["/env/**"]
        inject: { header: Authorization, value: "Bearer \${secret:from-env}" }
        allowPrivateAddress: true
      - origin: ${origin}
        paths: ["/file/**"]
        inject: { header: Authorization, value: "Bearer \${secret:from-file}" }
        allowPrivateAddress: true
    tools:
      http_request: {}
`;

describe('credential errors the agent sees', () => {
  let inst: Installation;
  let upstream: EchoUpstream;
  let broker: Broker;
  let client: Client;
  const logLines: string[] = [];
  let missingFile: string;

  beforeAll(async () => {
    upstream = await startEchoUpstream();
    inst = await makeInstallation({
      policies: {},
      extraSecretsYaml:
        '  from-env: { env: ORDERS_KEY_NOT_SET_ANYWHERE }\n  from-file: { file: ./secrets/host-only/orders.key }',
    });
    missingFile = path.join(inst.root, 'secrets/host-only/orders.key');
    await inst.writePolicy('acme.yaml', POLICY(upstream.origin));
    const [{ Broker }, { loadConfig }] = await Promise.all([
      import('../../src/broker.js'),
      import('../../src/config/airlock-yaml.js'),
    ]);
    const log = pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) });
    broker = await Broker.start(await loadConfig(inst.configFile), { log });
    ({ client } = await connectSocketClient(inst.socket('acme', 'http')));
  });

  afterAll(async () => {
    await client?.close();
    await broker?.stop(1000);
    await upstream?.close();
    await inst?.cleanup();
  });

  it.each([
    ['/env/x', 'from-env', 'environment variable ORDERS_KEY_NOT_SET_ANYWHERE is not set'],
    ['/file/x', 'from-file', 'is not readable (ENOENT)'],
  ])('GET %s: the agent gets the name only; the log and audit get the detail', async (p, secret, detail) => {
    const before = upstream.requests.length;
    const r = await client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${upstream.origin}${p}` },
    });
    expect(r.isError).toBe(true);
    const text = (r.content as Array<{ text: string }>)[0]!.text;
    expect(text).toBe(`error: credential "${secret}" is unavailable (ask the operator)`);
    const everything = JSON.stringify(r);
    for (const hostDetail of ['ORDERS_KEY_NOT_SET', inst.root, 'host-only', 'ENOENT'])
      expect(everything).not.toContain(hostDetail);
    expect(upstream.requests.length).toBe(before);

    const records = (await readFile(inst.auditFile, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const result = records.at(-1)!;
    expect(result).toMatchObject({ phase: 'result', outcome: 'error', error: text.slice('error: '.length) });
    expect(String(result.errorDetail)).toContain(detail);
    if (secret === 'from-file') expect(String(result.errorDetail)).toContain(missingFile);
    expect(logLines.some((l) => l.includes(detail) && l.includes('tool call failed'))).toBe(true);
  });
});
