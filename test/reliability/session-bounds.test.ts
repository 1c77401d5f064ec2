// Sessions are bounded per team and in total (airlock.yaml `sessions`): past a bound a new
// connection gets a JSON-RPC error saying which bound, and the sessions already open carry on.
import { readFile, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { Broker } from '../../src/broker.js';
import {
  connectSocketClient,
  makeInstallation,
  rawExchange,
  INIT_LINE,
  type Installation,
} from '../helpers/fixture.js';
import { socketOnlyPolicy } from './policies.js';

describe('session bounds', () => {
  let inst: Installation;
  let broker: Broker;
  const clients: Client[] = [];

  beforeAll(async () => {
    inst = await makeInstallation({
      policies: { 'a.yaml': socketOnlyPolicy('a'), 'b.yaml': socketOnlyPolicy('b') },
    });
    const config = await readFile(inst.configFile, 'utf8');
    await writeFile(inst.configFile, `sessions: { maxPerTeam: 3, maxTotal: 5 }\n${config}`);
    const [{ Broker }, { loadConfig }, { silentLogger }] = await Promise.all([
      import('../../src/broker.js'),
      import('../../src/config/airlock-yaml.js'),
      import('../../src/log.js'),
    ]);
    broker = await Broker.start(await loadConfig(inst.configFile), { log: silentLogger() });
  });

  afterAll(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
    await broker?.stop(1000);
    await inst?.cleanup();
  });

  const open = async (team: string) => {
    const { client } = await connectSocketClient(inst.socket(team, 'http'));
    clients.push(client);
    return client;
  };
  const refusalOf = async (team: string) => {
    const { lines, closed } = await rawExchange(inst.socket(team, 'http'), INIT_LINE, { waitMs: 3000 });
    expect(closed).toBe(true);
    return lines;
  };

  it('refuses the session past maxPerTeam, then past maxTotal, each with a clear error', async () => {
    for (let i = 0; i < 3; i++) await open('a');
    expect(await refusalOf('a')).toEqual([
      {
        jsonrpc: '2.0',
        id: null,
        error: {
          code: -32000,
          message:
            'refused: team "a" has 3 sessions open, the most allowed (sessions.maxPerTeam); close one and retry',
        },
      },
    ]);
    await open('b');
    await open('b');
    expect(await refusalOf('b')).toEqual([
      {
        jsonrpc: '2.0',
        id: null,
        error: {
          code: -32000,
          message:
            'refused: the broker has 5 sessions open, the most allowed (sessions.maxTotal); retry later',
        },
      },
    ]);
    expect(broker.sessionCount()).toBe(5);
    // The open sessions still answer.
    for (const c of clients) expect(await c.listTools()).toMatchObject({ tools: [{ name: 'http_request' }] });
  });

  it('admits a new session once one closes', async () => {
    await clients.shift()!.close();
    let admitted: Client | undefined;
    for (let i = 0; i < 100 && !admitted; i++) {
      try {
        admitted = await open('a');
        await admitted.listTools();
      } catch {
        admitted = undefined;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    expect(admitted).toBeDefined();
    expect(broker.sessionCount()).toBe(5);
  });
});
