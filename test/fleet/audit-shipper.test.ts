// The pieces of the central audit on their own: the broker id (made once, agreed on by
// concurrent starts, overridable), records with and without `broker` in one chain, and the
// shipper against a real PostgreSQL table: resuming across rotated files, lag, and a row whose
// hash differs from the local record being reported rather than skipped.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadOrCreateBrokerId, readBrokerId } from '../../src/audit/broker-id.js';
import { loadOrCreateAuditSigner } from '../../src/audit/key.js';
import { AuditLog, rotateAuditFile, verifyAuditChain, verifyAuditFile } from '../../src/audit/log.js';
import { insertRows, migrationSql, shipRow, verifyTable } from '../../src/audit/postgres.js';
import { AuditShipper, readShippingStatus } from '../../src/audit/shipper.js';
import { ConfigError, loadConfig } from '../../src/config/airlock-yaml.js';
import { startPostgresCluster, type PostgresCluster } from '../../src/demo/postgres-cluster.js';
import { silentLogger } from '../../src/log.js';
import { waitFor } from '../approvals/helpers.js';
import { entry } from '../audit/helpers.js';
import { REPO_ROOT } from '../helpers/fixture.js';
import { auditRecords } from '../postgres/context.js';

const run = promisify(execFile);
const dirs: string[] = [];
async function tmp(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'al-fleet-'));
  dirs.push(dir);
  return dir;
}

afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('broker id', () => {
  it('is made once, and brokers starting at once (separate processes) agree on it', async () => {
    const stateDir = path.join(await tmp(), 'state');
    const script = `import('${path.join(REPO_ROOT, 'dist/src/audit/broker-id.js')}').then(async (m) => process.stdout.write(await m.loadOrCreateBrokerId(${JSON.stringify(stateDir)})))`;
    const outs = await Promise.all(
      Array.from({ length: 6 }, () => run(process.execPath, ['-e', script]).then((r) => r.stdout)),
    );
    expect(new Set(outs).size).toBe(1);
    expect(outs[0]).toMatch(/^host-[0-9a-f]{8}$/);
    expect(await loadOrCreateBrokerId(stateDir)).toBe(outs[0]);
    expect(await readBrokerId(stateDir)).toBe(outs[0]);
    // No temporary files left behind.
    expect((await import('node:fs/promises')).readdir(stateDir)).resolves.toEqual(['broker-id']);
  });

  it('brokerId in airlock.yaml overrides it; a bad one or an unknown connection secret is a config error', async () => {
    const dir = await tmp();
    const file = path.join(dir, 'airlock.yaml');
    const base = 'socketDir: run\nstateDir: state\n';
    await writeFile(
      file,
      base +
        'brokerId: build-7\naudit:\n  file: a.jsonl\n  postgres: { connection: db }\nsecrets:\n  db: { env: DB_URL }\n',
    );
    const config = await loadConfig(file);
    expect(config.brokerId).toBe('build-7');
    expect(config.audit.postgres).toEqual({ connection: 'db', table: 'airlock_audit' });
    expect(await loadOrCreateBrokerId(config.stateDir, config.brokerId)).toBe('build-7');
    expect(await readBrokerId(config.stateDir)).toBeUndefined(); // nothing was made

    await writeFile(
      file,
      base +
        'brokerId: "-x y"\naudit:\n  file: a.jsonl\n  postgres: { connection: nope, table: "Bad-Name" }\n',
    );
    const err = (await loadConfig(file).catch((e: unknown) => e)) as ConfigError;
    expect(err).toBeInstanceOf(ConfigError);
    const messages = err.issues.map((i) => `${i.line}:${i.col}: ${i.message}`);
    expect(messages).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^3:11: brokerId: broker ids are 1-64 letters, digits/),
        expect.stringMatching(/^6:40: audit.postgres.table: table names are lower-case identifiers/),
      ]),
    );
    await writeFile(file, base + 'audit:\n  file: a.jsonl\n  postgres: { connection: nope }\n');
    const unknown = (await loadConfig(file).catch((e: unknown) => e)) as ConfigError;
    expect(unknown.issues.map((i) => i.message)).toEqual([
      'audit.postgres.connection: unknown secret "nope" (not in secrets)',
    ]);
  });

  it('records carry broker under the hash; a log with older records without it still verifies', async () => {
    const file = path.join(await tmp(), 'audit.jsonl');
    const old = await AuditLog.open(file);
    await old.append(entry());
    await old.close();
    const log = await AuditLog.open(file, { broker: 'host-0a1b2c3d' });
    // An entry cannot pass itself off as another broker's.
    await log.append({ ...entry(), broker: 'forged' });
    await log.close();
    const lines = (await readFile(file, 'utf8')).trim().split('\n');
    expect(JSON.parse(lines[0]!).broker).toBeUndefined();
    expect(lines[1]).toMatch(/^\{"v":1,"seq":2,"ts":"[^"]+","broker":"host-0a1b2c3d","team":/);
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 2 });
    // The hash covers it: another broker id in the line breaks the chain.
    await writeFile(file, lines[0] + '\n' + lines[1]!.replace('host-0a1b2c3d', 'host-ffffffff') + '\n');
    expect(await verifyAuditFile(file)).toMatchObject({
      ok: false,
      line: 2,
      reason: 'hash mismatch (record altered)',
    });
  });
});

describe('AuditShipper against a real table', () => {
  let cluster: PostgresCluster;
  let db: pg.Client;
  let url: string;
  const TABLE = 'fleet.audit_records';

  beforeAll(async () => {
    cluster = await startPostgresCluster();
    await cluster.admin('CREATE DATABASE audit');
    url = cluster.url({ user: cluster.superuser, password: cluster.superPassword, database: 'audit' });
    db = new pg.Client({ connectionString: url });
    await db.connect();
    for (const sql of migrationSql(TABLE, undefined)) await db.query(sql);
  }, 120_000);

  afterAll(async () => {
    await db?.end();
    await cluster?.close();
  });

  function shipper(file: string, stateDir: string, broker: string): AuditShipper {
    return new AuditShipper({
      file,
      broker,
      table: TABLE,
      stateDir,
      connection: () => Promise.resolve(url),
      log: silentLogger(),
      pollMs: 100,
    });
  }

  async function rows(broker: string): Promise<number[]> {
    const r = await db.query<{ seq: string }>(`SELECT seq FROM ${TABLE} WHERE broker = $1 ORDER BY seq`, [
      broker,
    ]);
    return r.rows.map((x) => Number(x.seq));
  }

  it('resumes from the table after a stop, reading records from rotated files, and reports lag', async () => {
    const dir = await tmp();
    const file = path.join(dir, 'audit', 'audit.jsonl');
    const stateDir = path.join(dir, 'state');
    const broker = 'host-rotate01';
    const signer = await loadOrCreateAuditSigner(stateDir);
    const log = await AuditLog.open(file, { broker });
    for (let i = 0; i < 5; i++) await log.append(entry({ call: `c${i}` }));
    const first = shipper(file, stateDir, broker);
    first.start();
    await waitFor('5 rows', async () => ((await rows(broker)).length === 5 ? true : undefined));
    await first.stop();
    expect(first.lag()).toEqual({ records: 0, seconds: 0 });

    // While no shipper runs: more records, two rotations, more records.
    for (let i = 5; i < 9; i++) await log.append(entry({ call: `c${i}` }));
    await rotateAuditFile(file, signer, { broker });
    for (let i = 9; i < 12; i++) await log.append(entry({ call: `c${i}` }));
    await rotateAuditFile(file, signer, { broker });
    await log.append(entry({ call: 'last' }));
    await log.close();
    const head = 5 + 4 + 1 + 3 + 1 + 1;
    const second = shipper(file, stateDir, broker);
    second.start();
    await waitFor('every record', async () => ((await rows(broker)).length === head ? true : undefined));
    expect(await rows(broker)).toEqual(Array.from({ length: head }, (_, i) => i + 1));
    await waitFor('no lag', () => (second.lag().records === 0 ? true : undefined));
    await second.stop();
    const status = await readShippingStatus(stateDir);
    expect(status).toMatchObject({ broker, table: TABLE, shippedSeq: head, headSeq: head, lagRecords: 0 });
    expect(status?.lastError).toBeUndefined();
    const reports = await verifyTable(db, TABLE);
    expect(reports.find((r) => r.broker === broker)).toEqual({
      broker,
      ok: true,
      count: head,
      last: { seq: head, hash: (await auditRecords(file)).at(-1)!.hash },
    });
    // The rotated files and the current one are one chain locally too.
    const rotated = (await (await import('node:fs/promises')).readdir(path.dirname(file)))
      .filter((n) => /^audit\.jsonl\.\d{8}T/.test(n))
      .sort()
      .map((n) => path.join(path.dirname(file), n));
    expect(rotated).toHaveLength(2);
    expect(await verifyAuditChain([...rotated, file])).toMatchObject({ ok: true, count: head });
  });

  it('lag counts records not yet shipped while the table is unreachable', async () => {
    const dir = await tmp();
    const file = path.join(dir, 'audit.jsonl');
    const stateDir = path.join(dir, 'state');
    const log = await AuditLog.open(file, { broker: 'host-down0001' });
    for (let i = 0; i < 3; i++) await log.append(entry({ call: `d${i}` }));
    await log.close();
    const s = new AuditShipper({
      file,
      broker: 'host-down0001',
      table: TABLE,
      stateDir,
      // A port nothing listens on: PostgreSQL is "down".
      connection: () => Promise.resolve(url.replace(`:${cluster.port}/`, ':1/')),
      log: silentLogger(),
      pollMs: 100,
    });
    s.start();
    const status = await waitFor('an error in the status file', async () => {
      const st = await readShippingStatus(stateDir);
      return st?.lastError ? st : undefined;
    });
    const lag = s.lag();
    await s.stop();
    expect(lag.records).toBe(3);
    expect(lag.seconds).toBeGreaterThan(0); // the oldest unshipped record's age
    expect(status.lastError).toMatch(/ECONNREFUSED/);
    expect(status.headSeq).toBe(3);
    expect(status.shippedSeq).toBeUndefined();
  });

  it('a table row with another hash for the same (broker, seq) is reported as a conflict', async () => {
    const dir = await tmp();
    const file = path.join(dir, 'audit.jsonl');
    const stateDir = path.join(dir, 'state');
    const broker = 'host-conflict';
    // Another chain under the same broker id already shipped seq 1 and 2.
    const otherFile = path.join(dir, 'other.jsonl');
    const other = await AuditLog.open(otherFile, { broker });
    await other.append(entry({ call: 'other-1' }));
    await other.append(entry({ call: 'other-2' }));
    await other.close();
    const a = shipper(otherFile, path.join(dir, 'other-state'), broker);
    a.start();
    await waitFor('the other chain', async () => ((await rows(broker)).length === 2 ? true : undefined));
    await a.stop();
    // This host's chain: seq 1..3; 1 and 2 differ from the table's.
    const log = await AuditLog.open(file, { broker });
    for (let i = 0; i < 3; i++) await log.append(entry({ call: `mine-${i}` }));
    await log.close();
    // Inserting this chain's seq 1..3 (as a shipper that read the table before the other
    // chain's rows arrived would): 1 and 2 are refused by the key, and reported as conflicts.
    const mine = await auditRecords(file);
    const lines = (await readFile(file, 'utf8')).trim().split('\n');
    const result = await insertRows(
      db,
      TABLE,
      broker,
      mine.map((r, i) => shipRow(r, lines[i]!)),
    );
    expect(result.inserted).toBe(1);
    expect(result.conflicts).toEqual([
      { seq: 1, local: mine[0]!.hash, table: expect.not.stringMatching(mine[0]!.hash) as unknown },
      { seq: 2, local: mine[1]!.hash, table: expect.not.stringMatching(mine[1]!.hash) as unknown },
    ]);
    // Shipping the same rows again is idempotent: nothing inserted, the same conflicts.
    expect(
      (
        await insertRows(
          db,
          TABLE,
          broker,
          mine.map((r, i) => shipRow(r, lines[i]!)),
        )
      ).inserted,
    ).toBe(0);
    // The shipper resumes after the table's max(seq) and reports nothing new to ship.
    const s = shipper(file, stateDir, broker);
    s.start();
    await waitFor('the shipper to catch up', () => (s.status().shippedSeq === 3 ? true : undefined));
    await s.stop();
    const reports = await verifyTable(db, TABLE);
    expect(reports.find((r) => r.broker === broker)).toMatchObject({
      ok: false,
      seq: 3,
      problem: expect.stringContaining('chain broken at seq 3') as unknown,
    });
  });
});
