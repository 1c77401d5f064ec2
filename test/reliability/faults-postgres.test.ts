// PostgreSQL restarted in the middle of a run: a statement in flight when the server goes down
// and calls made while it is down get a clear error (no credential, no host detail), the pool
// recovers by itself once the server is back (no broker restart), and another team's session is
// answered throughout (latency printed).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { startPostgresCluster, type PostgresCluster } from '../../src/demo/postgres-cluster.js';
import { AGENT_PASSWORD, AGENT_ROLE, SHOP_SQL, shopPolicy } from '../postgres/context.js';
import { baseline, startFaultBroker, victimDuringFault, type FaultBroker } from './faults.js';

describe('postgres restarted mid-run', () => {
  let cluster: PostgresCluster;
  let fb: FaultBroker;
  let acme: Client;
  let baselineMs: number[];
  const texts: string[] = [];
  const victim = () => fb.victim();

  beforeAll(async () => {
    cluster = await startPostgresCluster();
    await cluster.admin('CREATE DATABASE shop');
    await cluster.admin(SHOP_SQL, 'shop');
    fb = await startFaultBroker({
      secrets: {
        'pg-shop': cluster.url({ user: AGENT_ROLE, password: AGENT_PASSWORD, database: 'shop' }),
      },
      policies: { 'acme.yaml': shopPolicy() },
    });
    acme = await fb.client('acme', 'postgres');
    baselineMs = await baseline(victim);
  });

  afterAll(async () => {
    await fb?.close();
    await cluster?.close();
  });

  async function query(database: string, sql: string): Promise<{ isError: boolean; text: string }> {
    const r = (await acme.callTool({ name: 'query', arguments: { database, sql } })) as CallToolResult;
    const text = (r.content[0] as { text: string }).text;
    texts.push(text);
    return { isError: r.isError === true, text };
  }
  const countOrders = () => query('shop', 'SELECT count(*) AS n FROM public.orders');

  it('in-flight and down-time calls fail clearly; the pool serves again once the server is back', async () => {
    // Several pooled connections, all idle when the server goes: each must be noticed as dead.
    const warm = await Promise.all(Array.from({ length: 4 }, countOrders));
    for (const w of warm) expect(w.isError, w.text).toBe(false);

    const { value } = await victimDuringFault(
      'postgres restarted',
      async () => {
        const inFlight = query('slow', 'SELECT count(*) AS n FROM generate_series(1, 2000000000) g');
        await new Promise((r) => setTimeout(r, 300)); // the statement is running on the server
        await cluster.stopServer();
        const interrupted = await inFlight;
        const whileDown = [await countOrders(), await countOrders()];
        await cluster.startServer();
        const afterRestart = [await countOrders(), await countOrders(), await countOrders()];
        return { interrupted, whileDown, afterRestart };
      },
      victim,
      baselineMs,
    );
    expect(value.interrupted).toEqual({
      isError: true,
      text: 'error: 57P01: terminating connection due to administrator command',
    });
    for (const d of value.whileDown) {
      expect(d.isError).toBe(true);
      expect(d.text).toMatch(/^error: cannot connect to database "shop" \(ECONNREFUSED\)/);
    }
    // Back without a broker restart: every call after the server returned is answered.
    for (const a of value.afterRestart) {
      expect(a.isError, a.text).toBe(false);
      expect(a.text).toContain('50');
    }
  });

  it('no answer carried the connection password or the host detail of the secret', () => {
    const all = texts.join('\n');
    expect(all).not.toContain(AGENT_PASSWORD);
    expect(all).not.toContain(fb.inst.root);
  });
});
