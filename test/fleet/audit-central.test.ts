// Central audit in PostgreSQL with two real `airlock serve` processes (two state folders, two
// local audit files) shipping to one table of a real cluster: records land with their broker
// ids, a SIGKILLed broker and a stopped PostgreSQL converge afterwards, and tampering on either
// side (rows edited or deleted in the table, a local file cut or rewritten) is reported.
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import pg from 'pg';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordHash, type AuditRecord } from '../../src/audit/log.js';
import { startPostgresCluster, type PostgresCluster } from '../../src/demo/postgres-cluster.js';
import { startServe, waitFor, type ServeProcess } from '../approvals/helpers.js';
import { airlockAsync } from '../cli/helpers.js';
import {
  acmeHttpPolicy,
  CLI,
  connectSocketClient,
  makeInstallation,
  startEchoUpstream,
  type EchoUpstream,
  type Installation,
} from '../helpers/fixture.js';
import { auditRecords } from '../postgres/context.js';

const SHIP_ROLE = 'airlock_ship';
/** Distinctive, so a leak into any output is found by a substring search. */
const SHIP_PASSWORD = 'pw-Ship7Qx2Lk9Vb4Nm';
const TABLE = 'airlock_audit';

interface Host {
  inst: Installation;
  serve?: ServeProcess;
  client?: Client;
  id: string;
}

let cluster: PostgresCluster;
let upstream: EchoUpstream;
let owner: pg.Client;
let adminUrl: string;
const hosts: Host[] = [];

/** The table owner's connection (made again after the cluster restarts). */
async function connectOwner(): Promise<void> {
  await owner?.end().catch(() => undefined);
  owner = new pg.Client({ connectionString: adminUrl });
  owner.on('error', () => undefined); // the cluster is stopped on purpose below
  await owner.connect();
}

async function makeHost(adminUrl: string, shipUrl: string): Promise<Host> {
  const inst = await makeInstallation({
    secrets: { 'api-token': 'tok-fleet-0123456789', 'audit-db': shipUrl, 'audit-owner': adminUrl },
    policies: { 'acme.yaml': acmeHttpPolicy(upstream.origin) },
  });
  const config = await readFile(inst.configFile, 'utf8');
  await writeFile(
    inst.configFile,
    config.replace(
      `  file: ${inst.auditFile}\n`,
      `  file: ${inst.auditFile}\n  postgres: { connection: audit-db }\n`,
    ),
  );
  return { inst, id: '' };
}

async function start(host: Host): Promise<void> {
  // A killed broker leaves its socket behind: wait for the new one, not the old.
  await rm(host.inst.socket('acme', 'http'), { force: true });
  host.serve = await startServe(host.inst, [host.inst.socket('acme', 'http')]);
  ({ client: host.client } = await connectSocketClient(host.inst.socket('acme', 'http')));
  host.id = (await readFile(path.join(host.inst.stateDir, 'broker-id'), 'utf8')).trim();
}

async function call(host: Host, n: number): Promise<void> {
  const r = (await host.client!.callTool({
    name: 'http_request',
    arguments: { method: 'GET', url: `${upstream.origin}/v1/item/${n}` },
  })) as { isError?: boolean; content: Array<{ text?: string }> };
  expect(r.isError, r.content[0]?.text).not.toBe(true);
}

async function tableRows(broker: string): Promise<Array<{ seq: number; hash: string }>> {
  const res = await owner.query<{ seq: string; hash: string }>(
    `SELECT seq, hash FROM ${TABLE} WHERE broker = $1 ORDER BY seq`,
    [broker],
  );
  return res.rows.map((r) => ({ seq: Number(r.seq), hash: r.hash }));
}

/** Waits until the table holds exactly the host's local records (seq and hash). */
async function converged(host: Host, timeoutMs = 40_000): Promise<AuditRecord[]> {
  let last = '';
  try {
    return await waitFor(
      `the table to hold ${host.id}'s local records`,
      async () => {
        const local = await auditRecords(host.inst.auditFile);
        const rows = await tableRows(host.id).catch(() => []);
        last = `local ${local.length} records, table ${rows.length}`;
        const same =
          local.length > 0 &&
          JSON.stringify(rows) === JSON.stringify(local.map((r) => ({ seq: r.seq, hash: r.hash })));
        return same ? local : undefined;
      },
      timeoutMs,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message} (${last})\n${host.serve?.log() ?? ''}`);
  }
}

const cli = (host: Host, args: string[]) => airlockAsync([...args, '--config', host.inst.configFile]);

beforeAll(async () => {
  cluster = await startPostgresCluster();
  upstream = await startEchoUpstream();
  await cluster.admin(`CREATE DATABASE fleet`);
  await cluster.admin(`CREATE ROLE ${SHIP_ROLE} LOGIN PASSWORD '${SHIP_PASSWORD}'`);
  adminUrl = cluster.url({ user: cluster.superuser, password: cluster.superPassword, database: 'fleet' });
  const shipUrl = cluster.url({ user: SHIP_ROLE, password: SHIP_PASSWORD, database: 'fleet' });
  await connectOwner();
  hosts.push(await makeHost(adminUrl, shipUrl), await makeHost(adminUrl, shipUrl));
}, 120_000);

afterAll(async () => {
  for (const h of hosts) {
    await h.client?.close().catch(() => undefined);
    await h.serve?.kill();
    await h.inst.cleanup();
  }
  await owner?.end().catch(() => undefined);
  await upstream?.close();
  await cluster?.close();
});

describe('central audit: two brokers, one table', () => {
  it('audit migrate creates the table and runs again without harm', async () => {
    for (let i = 0; i < 2; i++) {
      const r = await cli(hosts[0]!, ['audit', 'migrate', '--admin', 'audit-owner']);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain(`migrated ${TABLE}`);
      expect(r.stdout).toContain(`role ${SHIP_ROLE} (audit.postgres.connection) may INSERT and SELECT only`);
    }
    const cols = await owner.query<{ column_name: string }>(
      `SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`,
      [TABLE],
    );
    expect(cols.rows.map((c) => c.column_name)).toEqual(
      expect.arrayContaining([
        'broker',
        'seq',
        'ts',
        'team',
        'server',
        'tool',
        'decision',
        'outcome',
        'hash',
        'prev',
        'record',
      ]),
    );
  });

  it('calls on both brokers land in the table with their broker ids', async () => {
    await Promise.all(hosts.map(start));
    expect(hosts[0]!.id).toMatch(/^host-[0-9a-f]{8}$/);
    expect(hosts[1]!.id).toMatch(/^host-[0-9a-f]{8}$/);
    expect(hosts[0]!.id).not.toBe(hosts[1]!.id);
    for (let n = 0; n < 3; n++) await Promise.all(hosts.map((h) => call(h, n)));
    for (const h of hosts) {
      const local = await converged(h);
      expect(local.every((r) => r.broker === h.id)).toBe(true);
      expect(local.filter((r) => r.tool === 'http_request' && r.phase === 'result')).toHaveLength(3);
    }
    const brokers = await owner.query<{ broker: string }>(`SELECT DISTINCT broker FROM ${TABLE} ORDER BY 1`);
    expect(brokers.rows.map((r) => r.broker)).toEqual([...hosts.map((h) => h.id)].sort());
    const row = await owner.query<{ team: string; server: string; tool: string; record: AuditRecord }>(
      `SELECT team, server, tool, record FROM ${TABLE} WHERE broker = $1 AND record->>'phase' = 'result' LIMIT 1`,
      [hosts[0]!.id],
    );
    expect(row.rows[0]).toMatchObject({ team: 'acme', server: 'http', tool: 'http_request' });
    expect(row.rows[0]!.record.broker).toBe(hosts[0]!.id);
  });

  it('the shipping role can neither UPDATE, DELETE nor TRUNCATE, and the trigger refuses even the owner', async () => {
    const ship = new pg.Client({
      connectionString: cluster.url({ user: SHIP_ROLE, password: SHIP_PASSWORD, database: 'fleet' }),
    });
    await ship.connect();
    try {
      for (const sql of [`UPDATE ${TABLE} SET tool = 'x'`, `DELETE FROM ${TABLE}`, `TRUNCATE ${TABLE}`]) {
        await expect(ship.query(sql), sql).rejects.toMatchObject({ code: '42501' });
      }
      expect(Number((await ship.query(`SELECT count(*) AS n FROM ${TABLE}`)).rows[0].n)).toBeGreaterThan(0);
    } finally {
      await ship.end();
    }
    await expect(owner.query(`DELETE FROM ${TABLE} WHERE seq = 1`)).rejects.toThrow(
      /append-only: DELETE refused/,
    );
    await expect(owner.query(`TRUNCATE ${TABLE}`)).rejects.toThrow(/append-only: TRUNCATE refused/);
  });

  it('after a SIGKILLed broker and a stopped PostgreSQL, the table converges and verify --postgres passes', async () => {
    const [a, b] = hosts as [Host, Host];
    // Broker a is killed with calls in flight.
    let stopLoop = false;
    const loop = (async () => {
      for (let n = 100; !stopLoop; n++) await call(a, n);
    })().catch(() => undefined);
    await waitFor('broker a to record more calls', async () =>
      (await auditRecords(a.inst.auditFile)).length >= 20 ? true : undefined,
    );
    await a.serve!.kill();
    stopLoop = true;
    await loop;
    await a.client!.close().catch(() => undefined);

    // PostgreSQL goes away while broker b keeps answering calls: its local log carries on.
    await cluster.stopServer();
    const before = (await auditRecords(b.inst.auditFile)).length;
    for (let n = 200; n < 206; n++) await call(b, n);
    expect((await auditRecords(b.inst.auditFile)).length).toBe(before + 12);
    // Broker a comes back while the table is still unreachable, and answers calls too.
    await start(a);
    for (let n = 300; n < 303; n++) await call(a, n);
    // Broker b's shipper meets the outage and says so in its status (however long that takes).
    const status = await waitFor('broker b to report the outage in its shipping status', async () => {
      const text = await readFile(path.join(b.inst.stateDir, 'audit-shipping.json'), 'utf8').catch(() => '');
      const s = (text ? JSON.parse(text) : {}) as { lastError?: string; lagRecords?: number };
      return s.lastError !== undefined ? s : undefined;
    });
    expect(status.lagRecords).toBeGreaterThan(0);
    // Meanwhile plain verify says it could not compare, and doctor warns with the lag and the error.
    const unanchored = await cli(b, ['audit', 'verify']);
    expect(unanchored.stdout).toMatch(
      /central audit: NOT compared with airlock_audit \(cannot connect to PostgreSQL/,
    );
    expect(unanchored.status).toBe(0);
    const doctor = JSON.parse((await cli(b, ['doctor', '--json'])).stdout) as {
      checks: Array<{ status: string; label: string; detail?: string }>;
    };
    const shipping = doctor.checks.find((c) => c.label === `audit shipping to ${TABLE}`);
    expect(shipping?.status).toBe('warn');
    expect(shipping?.detail).toMatch(/lag [1-9]\d* records.*last error: .*ECONNREFUSED/);

    await cluster.startServer();
    await connectOwner();
    for (const h of hosts) await converged(h);
    const verify = await cli(a, ['audit', 'verify', '--postgres']);
    expect(verify.stdout.trim().split('\n').sort()).toEqual(
      hosts
        .map((h) => h.id)
        .sort()
        .map((id) => expect.stringMatching(new RegExp(`^${id}: ok: \\d+ records, chain intact$`))),
    );
    expect(verify.status).toBe(0);
    const json = JSON.parse((await cli(a, ['audit', 'verify', '--postgres', '--json'])).stdout) as {
      ok: boolean;
      brokers: Array<{ broker: string; ok: boolean; count: number }>;
    };
    expect(json.ok).toBe(true);
    for (const h of hosts)
      expect(json.brokers.find((x) => x.broker === h.id)?.count).toBe(
        (await auditRecords(h.inst.auditFile)).length,
      );
    // Plain verify of each local file agrees with the table.
    for (const h of hosts) {
      const plain = await cli(h, ['audit', 'verify']);
      expect(plain.stdout).toContain(`central audit: matches ${TABLE} for broker ${h.id}`);
      expect(plain.status).toBe(0);
    }
    for (const h of [a, b]) expect(h.serve!.log()).not.toContain(SHIP_PASSWORD);
  }, 120_000);

  it('doctor shows the shipping lag from the status file', async () => {
    const [a] = hosts as [Host];
    await waitFor('the status file to show no lag', async () => {
      const s = JSON.parse(await readFile(path.join(a.inst.stateDir, 'audit-shipping.json'), 'utf8')) as {
        lagRecords: number;
        lastError?: string;
      };
      return s.lagRecords === 0 && s.lastError === undefined ? true : undefined;
    });
    const doctor = await cli(a, ['doctor', '--json']);
    const checks = (
      JSON.parse(doctor.stdout) as { checks: Array<{ status: string; label: string; detail?: string }> }
    ).checks;
    const shipping = checks.find((c) => c.label === `audit shipping to ${TABLE}`);
    expect(shipping?.status).toBe('ok');
    expect(shipping?.detail).toMatch(
      new RegExp(`broker ${a.id}; shipped up to seq (\\d+) of \\1; lag 0 records`),
    );
    expect(doctor.stdout).not.toContain(SHIP_PASSWORD);
  });

  it('audit tail --postgres shows the records of both brokers', async () => {
    const [a, b] = hosts as [Host, Host];
    const json = await cli(a, ['audit', 'tail', '--postgres', '--json', '-n', '1000']);
    expect(json.status).toBe(0);
    const records = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditRecord);
    expect(new Set(records.map((r) => r.broker))).toEqual(new Set([a.id, b.id]));
    const table = await cli(a, ['audit', 'tail', '--postgres', '-n', '4', '--team', 'acme']);
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^BROKER\s+SEQ\s+TIME\s+TEAM/);
    expect(lines).toHaveLength(5);

    // Following: a call on each broker shows up.
    const follower = spawn(
      process.execPath,
      [CLI, 'audit', 'tail', '--postgres', '-f', '-n', '1', '--json', '--config', a.inst.configFile],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let followOut = '';
    follower.stdout.setEncoding('utf8').on('data', (d: string) => (followOut += d));
    const followerExit = new Promise<number | null>((r) => follower.once('exit', (code) => r(code)));
    // The newest record is printed once its snapshot is taken: following starts from there, so
    // calls made after it are followed however long the command took to start.
    await waitFor('tail -f to print the newest record', () => (followOut.includes('\n') ? true : undefined));
    await call(a, 400);
    await call(b, 401);
    await waitFor('tail -f to print both brokers', () =>
      followOut.includes('/v1/item/400') && followOut.includes('/v1/item/401') ? true : undefined,
    );
    follower.kill('SIGTERM');
    expect(await followerExit).toBe(0);
    const followed = followOut
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as AuditRecord & { args?: { url?: string } });
    const urls = followed
      .filter((r) => r.phase === 'result' || r.phase === 'request')
      .map((r) => `${r.broker} ${r.args?.url ?? ''}`);
    expect(urls).toEqual(
      expect.arrayContaining([
        `${a.id} ${upstream.origin}/v1/item/400`,
        `${b.id} ${upstream.origin}/v1/item/401`,
      ]),
    );
  }, 60_000);

  it('a local file truncated or rewritten after shipping is reported by plain verify', async () => {
    const [a, b] = hosts as [Host, Host];
    for (const h of hosts) await converged(h);
    await a.client!.close();
    await a.serve!.stop();
    await b.client!.close();
    await b.serve!.stop();
    // a: the last records are cut off; the local chain alone still verifies.
    const text = await readFile(a.inst.auditFile, 'utf8');
    const lines = text.split('\n').filter(Boolean);
    await writeFile(a.inst.auditFile, lines.slice(0, lines.length - 5).join('\n') + '\n');
    expect((await airlockAsync(['audit', 'verify', '--file', a.inst.auditFile])).status).toBe(0);
    const cut = await cli(a, ['audit', 'verify']);
    expect(cut.stdout).toContain(
      `central audit: the local log ends at seq ${lines.length - 5}, but ${TABLE} holds seq ${lines.length} for broker ${a.id}: records were removed from the local log after they were shipped`,
    );
    expect(cut.status).toBe(1);

    // b: one record is rewritten and the chain recomputed after it, so the file verifies alone.
    const records = (await readFile(b.inst.auditFile, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const at = records.findIndex((r) => r.phase === 'request');
    records[at]!.tool = 'http_request_rewritten';
    let prev = at === 0 ? '0'.repeat(64) : (records[at - 1]!.hash as string);
    for (const r of records.slice(at)) {
      const { hash: _old, ...rest } = r;
      rest.prev = prev;
      const hash = recordHash(prev, rest);
      Object.assign(r, { prev, hash });
      prev = hash;
    }
    await writeFile(b.inst.auditFile, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
    expect((await airlockAsync(['audit', 'verify', '--file', b.inst.auditFile])).status).toBe(0);
    const rewritten = await cli(b, ['audit', 'verify', '--json']);
    const result = JSON.parse(rewritten.stdout) as { ok: boolean; central: { problem: string } };
    expect(result.ok).toBe(false);
    expect(result.central.problem).toContain(
      `local record seq ${records[at]!.seq as number} differs from the one shipped to ${TABLE}`,
    );
    expect(rewritten.status).toBe(1);
  });

  it('a row deleted or edited in the table is reported by verify --postgres', async () => {
    const [a, b] = hosts as [Host, Host];
    // The owner bypasses the append-only trigger (as an attacker with the owner's password could).
    await owner.query(`ALTER TABLE ${TABLE} DISABLE TRIGGER airlock_audit_no_change`);
    await owner.query(`DELETE FROM ${TABLE} WHERE broker = $1 AND seq = 4`, [a.id]);
    await owner.query(
      `UPDATE ${TABLE} SET line = replace(line, '"team":"acme"', '"team":"other"'),
              record = jsonb_set(record, '{team}', '"other"'), team = 'other'
        WHERE broker = $1 AND seq = 6`,
      [b.id],
    );
    await owner.query(`ALTER TABLE ${TABLE} ENABLE TRIGGER airlock_audit_no_change`);
    const r = await cli(a, ['audit', 'verify', '--postgres']);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toContain(`${a.id}: gap: seq 4 missing (deleted rows) (3 records before it verify)`);
    expect(lines).toContain(
      `${b.id}: changed row at seq 6: hash mismatch (the record was altered) (5 records before it verify)`,
    );
    expect(r.status).toBe(1);

    // A row replaced by a self-consistent record of another chain: its prev does not link.
    await owner.query(`ALTER TABLE ${TABLE} DISABLE TRIGGER airlock_audit_no_change`);
    await owner.query(`DELETE FROM ${TABLE} WHERE broker = $1 AND seq = 6`, [b.id]);
    const row7 = await owner.query<{ line: string }>(
      `SELECT line FROM ${TABLE} WHERE broker = $1 AND seq = 2`,
      [b.id],
    );
    const rec = JSON.parse(row7.rows[0]!.line) as Record<string, unknown>;
    const { hash: _h, ...rest } = { ...rec, seq: 6, prev: 'f'.repeat(64) };
    const forged = { ...rest, hash: recordHash('f'.repeat(64), rest) };
    const line = JSON.stringify(forged);
    await owner.query(
      `INSERT INTO ${TABLE} (broker, seq, ts, hash, prev, record, line) VALUES ($1, 6, $2, $3, $4, $5, $6)`,
      [b.id, forged.ts, forged.hash, forged.prev, line, line],
    );
    await owner.query(`ALTER TABLE ${TABLE} ENABLE TRIGGER airlock_audit_no_change`);
    const forks = await cli(a, ['audit', 'verify', '--postgres']);
    expect(forks.stdout).toContain(`${b.id}: chain broken at seq 6: its prev is not the hash of seq 5`);
    expect(forks.status).toBe(1);
  });
});
