// Fleet-wide model dailyTokenBudget: two model proxies (two brokers' state folders and audit
// files, each with its own connection pool) charge one team row in PostgreSQL, so the budget
// holds across both under concurrent load; another team is not charged; with PostgreSQL down a
// budgeted request is refused (503, audited) and an unbudgeted one still goes through.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AirlockConfig } from '../../src/config/airlock-yaml.js';
import { FleetLimits } from '../../src/limits/fleet.js';
import { silentLogger } from '../../src/log.js';
import { modelSectionSchema } from '../../src/policy/team-policy.js';
import { Redactor } from '../../src/secrets/redact.js';
import { SecretStore } from '../../src/secrets/store.js';
import {
  API_KEY,
  deferred,
  messagesBody,
  send,
  startProxy,
  TEAM,
  type ProxyHarness,
} from '../model/harness.js';
import { startScriptedApi, type ScriptedApi } from '../model/scripted-api.js';
import { LIMITS_PASSWORD, startLimitsDb, type LimitsDb } from './limits-context.js';

let db: LimitsDb;
let api: ScriptedApi;
let secretDir: string;
const fleets: FleetLimits[] = [];
const proxies: ProxyHarness[] = [];

/** What one broker builds from `limits: { store: postgres, connection: limits-db }`. */
function fleetFor(): FleetLimits {
  const config = {
    secrets: { 'limits-db': { file: path.join(secretDir, 'limits-db') } },
    limits: { store: 'postgres', connection: 'limits-db', timeoutMs: 1000 },
  } as unknown as AirlockConfig;
  const fleet = FleetLimits.fromConfig(
    config,
    new SecretStore(config.secrets, new Redactor()),
    silentLogger(),
  )!;
  fleets.push(fleet);
  return fleet;
}

function section(dailyTokenBudget?: number): Record<string, unknown> {
  return {
    upstream: api.url,
    credential: 'anthropic-key',
    ...(dailyTokenBudget !== undefined ? { dailyTokenBudget } : {}),
  };
}

async function budgetRow(team = TEAM): Promise<number | undefined> {
  const rows = await db.query<{ amount: number }>(
    "SELECT amount FROM airlock_limits WHERE team = $1 AND key = 'model.tokens'",
    [team],
  );
  return rows[0]?.amount;
}

beforeAll(async () => {
  db = await startLimitsDb();
  secretDir = await mkdtemp(path.join(os.tmpdir(), 'alf-'));
  await writeFile(path.join(secretDir, 'limits-db'), db.url + '\n', { mode: 0o600 });
  await fleetFor().migrate();
  // Every reply reports 10 tokens unless a test queues another.
  api = await startScriptedApi({
    apiKey: API_KEY,
    fallback: { text: 'OK', usage: { input_tokens: 6, output_tokens: 4 } },
  });
  for (let i = 0; i < 2; i++)
    proxies.push(await startProxy({ section: section(2000), fleetBudget: fleetFor() }));
}, 120_000);

afterAll(async () => {
  for (const p of proxies) await p.close();
  for (const f of fleets) await f.close();
  await api?.close();
  await db?.close();
  if (secretDir) await rm(secretDir, { recursive: true, force: true });
});

describe('fleet-wide dailyTokenBudget in PostgreSQL', () => {
  it('is one budget across two brokers under concurrent load, and per team', async () => {
    // Each request reserves its input estimate + max_tokens (1024): with 2000 tokens, only two
    // can be in flight at once across both brokers, whichever broker they reach.
    const gate = deferred();
    for (let i = 0; i < 2; i++)
      api.enqueue({
        text: 'slow',
        beforeLastEvent: gate.promise,
        usage: { input_tokens: 6, output_tokens: 4 },
      });
    const settled: Array<Awaited<ReturnType<typeof send>>> = [];
    const all = Array.from({ length: 8 }, (_, i) =>
      send(proxies[i % 2]!.socketPath, { body: messagesBody({ stream: true }) }).then((r) => {
        settled.push(r);
        return r;
      }),
    );
    // The two admitted ones hold their reservations until their streams end.
    await waitFor(() => settled.length === 6);
    expect(settled.map((r) => r.status)).toEqual([429, 429, 429, 429, 429, 429]);
    for (const r of settled)
      expect(r.json().error.message).toMatch(
        /^denied: model\.dailyTokenBudget: daily token budget of 2000 tokens for team "payments" is used up across the fleet \(\d+ used or reserved today\); resets at 00:00 UTC/,
      );
    gate.resolve();
    const results = await Promise.all(all);
    expect(results.filter((r) => r.status === 200)).toHaveLength(2);
    expect(api.requests).toHaveLength(2);
    // Settled to what the two really used; the two audit files hold their request records between them.
    expect(await budgetRow()).toBe(20);
    const requests = (await Promise.all(proxies.map((p) => p.records())))
      .flat()
      .filter((r) => r.phase === 'request');
    expect(requests).toHaveLength(2);

    // Another team's row is its own.
    const other = await fleets[0]!.reserve('other-team', 2000, 10);
    expect(other.ok).toBe(true);
    expect(await budgetRow('other-team')).toBe(10);
    expect(await budgetRow()).toBe(20);
  });

  it('refuses budgeted requests while PostgreSQL is down (audited), not unbudgeted ones, and recovers', async () => {
    const [a, b] = proxies as [ProxyHarness, ProxyHarness];
    const forwarded = api.requests.length;
    await db.cluster.stopServer();
    try {
      const refused = await send(a.socketPath, { body: messagesBody() });
      expect(refused.status).toBe(503);
      expect(refused.json().error.message).toMatch(
        /^denied: model\.dailyTokenBudget: fleet limit store unreachable \(.+\); calls under a fleet-wide limit are refused until it answers$/,
      );
      expect(api.requests).toHaveLength(forwarded);
      expect((await a.records()).at(-1)).toMatchObject({
        phase: 'result',
        decision: 'deny',
        rule: 'model.dailyTokenBudget',
        status: 503,
      });
      // A team section without a budget does not need the store.
      b.setSection(modelSectionSchema.parse(section()));
      expect((await send(b.socketPath, { body: messagesBody() })).status).toBe(200);
    } finally {
      b.setSection(modelSectionSchema.parse(section(2000)));
      await db.cluster.startServer();
    }
    expect((await send(a.socketPath, { body: messagesBody() })).status).toBe(200);
    expect(await budgetRow()).toBe(30);
    expect(await a.records().then((r) => JSON.stringify(r))).not.toContain(LIMITS_PASSWORD);
  });

  it('refuses on one broker once the other used the budget up', async () => {
    const [a, b] = proxies as [ProxyHarness, ProxyHarness];
    api.enqueue({ text: 'big', usage: { input_tokens: 1960, output_tokens: 10 } });
    expect((await send(a.socketPath, { body: messagesBody() })).status).toBe(200);
    expect(await budgetRow()).toBe(2000);
    const forwarded = api.requests.length;
    const denied = await send(b.socketPath, { body: messagesBody() });
    expect(denied.status).toBe(429);
    expect(denied.json().error.message).toContain(
      'is used up across the fleet (2000 used or reserved today)',
    );
    expect(api.requests).toHaveLength(forwarded);
  });
});

// A bound on the wait, generous so a busy machine does not fail it.
async function waitFor(cond: () => boolean, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
