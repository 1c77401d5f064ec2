// Fleet-wide rateLimit: two real `airlock serve` processes (two installations, two state
// folders, two audit files) count one tool's calls in one PostgreSQL table, so `3/minute` means
// 3 per team across both; when PostgreSQL is down or too slow, the limited tool is refused
// (audited) while an unlimited one still works, and it recovers without a restart.
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { readFile } from 'node:fs/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sampleRepo } from '../../src/demo/github-api/data.js';
import { startGithubApiStandIn, type GithubApiStandIn } from '../../src/demo/github-api/server.js';
import { auditRecords, runCli, startServe, type ServeProcess } from '../approvals/helpers.js';
import { connectSocketClient, makeInstallation, type Installation } from '../helpers/fixture.js';
import {
  LIMITS_PASSWORD,
  LIMITS_SECRET_YAML,
  setLimitsUrl,
  startLimitsDb,
  useFleetLimits,
  type LimitsDb,
} from './limits-context.js';

const PAT = 'ghp_FleetLimitsTestToken0123456789abcdef';
const TIMEOUT_MS = 1000;

interface Host {
  inst: Installation;
  serve: ServeProcess;
  clients: Client[];
}

let db: LimitsDb;
let api: GithubApiStandIn;
const hosts: Host[] = [];

function policy(team: string): string {
  return `team: ${team}
servers:
  github:
    apiUrl: ${api.apiUrl}
    credential: gh-token
    repos: ["${team}/*"]
    tools:
      get_repository: { rateLimit: 3/minute }
      list_branches: {}
`;
}

async function client(host: Host, team: string): Promise<Client> {
  const { client: c } = await connectSocketClient(host.inst.socket(team, 'github'));
  host.clients.push(c);
  return c;
}

async function call(c: Client, tool: string, team: string): Promise<{ isError: boolean; text: string }> {
  const repo = team === 'acme' ? 'payments-api' : 'ledger';
  const r = (await c.callTool({ name: tool, arguments: { owner: team, repo } })) as CallToolResult;
  return { isError: r.isError === true, text: (r.content[0] as { text: string }).text };
}

beforeAll(async () => {
  db = await startLimitsDb();
  api = await startGithubApiStandIn({
    tokens: [PAT],
    repos: [sampleRepo('acme', 'payments-api', 101), sampleRepo('beta', 'ledger', 102)],
  });
  const insts: Installation[] = [];
  for (let i = 0; i < 2; i++) {
    const inst = await makeInstallation({
      secrets: { 'gh-token': PAT },
      extraSecretsYaml: LIMITS_SECRET_YAML,
      policies: { 'acme.yaml': policy('acme'), 'beta.yaml': policy('beta') },
    });
    await useFleetLimits(inst, db.url, TIMEOUT_MS);
    insts.push(inst);
  }
  // Twice, from both hosts: migrate is idempotent.
  for (const inst of [...insts, insts[0]!]) {
    const r = await runCli(['limits', 'migrate', '--config', inst.configFile]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('ok: table airlock_limits is in place (secret "limits-db")\n');
    expect(r.code).toBe(0);
  }
  // The brokers run with the least rights README names: SELECT, INSERT, UPDATE on the table.
  await db.grantBroker();
  for (const inst of insts) await setLimitsUrl(inst, db.brokerUrl);
  for (const inst of insts) {
    const serve = await startServe(inst, [inst.socket('acme', 'github'), inst.socket('beta', 'github')]);
    hosts.push({ inst, serve, clients: [] });
  }
}, 180_000);

afterAll(async () => {
  for (const h of hosts) {
    for (const c of h.clients) await c.close().catch(() => undefined);
    await h.serve.stop();
    await h.inst.cleanup();
  }
  await api?.close();
  await db?.close();
});

describe('fleet-wide rateLimit in PostgreSQL', () => {
  it('allows exactly 3 of 24 concurrent calls split over two brokers, per team', async () => {
    // Two sessions on each broker, six calls in flight on each session.
    const sessions = await Promise.all(hosts.flatMap((h) => [client(h, 'acme'), client(h, 'acme')]));
    const results = await Promise.all(
      Array.from({ length: 24 }, (_, i) => call(sessions[i % sessions.length]!, 'get_repository', 'acme')),
    );
    const allowed = results.filter((r) => !r.isError);
    const refused = results.filter((r) => r.isError);
    expect(allowed).toHaveLength(3);
    expect(refused).toHaveLength(21);
    for (const r of refused)
      expect(r.text).toMatch(
        /^denied: github\.tools\.get_repository\.rateLimit: rate limit 3\/minute reached across the fleet; next call allowed in \d+ s$/,
      );
    // GitHub saw exactly the allowed calls; the brokers' audit files together hold 3 request records.
    expect(api.calls.filter((c) => c.url.startsWith('/repos/acme/payments-api')).length).toBe(3);
    let requests = 0;
    let denials = 0;
    for (const h of hosts) {
      const records = (await auditRecords(h.inst)).filter((r) => r.tool === 'get_repository');
      requests += records.filter((r) => r.phase === 'request').length;
      denials += records.filter((r) => r.rule === 'github.tools.get_repository.rateLimit').length;
    }
    expect(requests).toBe(3);
    expect(denials).toBe(21);

    // Another team is not charged: beta still has its own 3.
    const beta = await client(hosts[1]!, 'beta');
    expect(await call(beta, 'get_repository', 'beta')).toMatchObject({ isError: false });
    const rows = await db.query<{ team: string; key: string; period: string; amount: number }>(
      'SELECT team, key, period, amount FROM airlock_limits ORDER BY team',
    );
    expect(rows.map((r) => [r.team, r.key, r.period])).toEqual([
      ['acme', 'rate:github/get_repository', 'bucket'],
      ['beta', 'rate:github/get_repository', 'bucket'],
    ]);
    expect(rows[0]!.amount).toBeLessThan(1);
    expect(rows[1]!.amount).toBeGreaterThanOrEqual(2);
  });

  it('fails closed while PostgreSQL is down (audited), leaves unlimited tools alone, and recovers', async () => {
    const beta = await client(hosts[0]!, 'beta');
    await db.cluster.stopServer();
    try {
      const refused = await call(beta, 'get_repository', 'beta');
      expect(refused.isError).toBe(true);
      expect(refused.text).toMatch(
        /^denied: github\.tools\.get_repository\.rateLimit: fleet limit store unreachable \(.+\); calls under a fleet-wide limit are refused until it answers$/,
      );
      // A tool without a rateLimit does not need the store.
      expect(await call(beta, 'list_branches', 'beta')).toMatchObject({ isError: false });
      const last = (await auditRecords(hosts[0]!.inst)).filter((r) => r.tool === 'get_repository').at(-1);
      expect(last).toMatchObject({
        team: 'beta',
        phase: 'result',
        decision: 'deny',
        rule: 'github.tools.get_repository.rateLimit',
        outcome: 'denied',
      });
      expect(String(last?.reason)).toContain('fleet limit store unreachable');
    } finally {
      await db.cluster.startServer();
    }
    // Back up: the same broker, no restart, counts in PostgreSQL again.
    expect(await call(beta, 'get_repository', 'beta')).toMatchObject({ isError: false });
    const [row] = await db.query<{ amount: number }>(
      "SELECT amount FROM airlock_limits WHERE team = 'beta' AND key = 'rate:github/get_repository'",
    );
    expect(row!.amount).toBeLessThan(2);
    // The URL's password is in no log and no audit record.
    for (const h of hosts) {
      expect(h.serve.log()).not.toContain(LIMITS_PASSWORD);
      expect(await readFile(h.inst.auditFile, 'utf8')).not.toContain(LIMITS_PASSWORD);
    }
  });

  it('fails closed when the store answers slower than timeoutMs', async () => {
    const beta = await client(hosts[1]!, 'beta');
    // A lock held elsewhere makes the check wait; the broker gives up after timeoutMs.
    const locker = new pg.Client({ connectionString: db.url });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE airlock_limits IN ACCESS EXCLUSIVE MODE');
      const refused = await call(beta, 'get_repository', 'beta');
      expect(refused.isError).toBe(true);
      expect(refused.text).toContain('fleet limit store unreachable');
      expect(await call(beta, 'list_branches', 'beta')).toMatchObject({ isError: false });
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      await locker.end();
    }
  });
});
