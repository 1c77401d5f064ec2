// Anchoring and rotating the audit chain, tried as an operator would from the command line: a
// log cut off at the end, a log rewritten whole with fresh hashes, a file that starts mid-chain,
// a rotated log verified as several files, and calls interrupted before their result.
import { spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog, recordHash, type AuditEntry } from '../../src/audit/log.js';
import { loadOrCreateAuditSigner } from '../../src/audit/key.js';
import { CLI, makeInstallation, type Installation } from '../helpers/fixture.js';

let inst: Installation;
beforeEach(async () => {
  inst = await makeInstallation({ policies: {} });
});
afterEach(() => inst.cleanup());

const airlock = (...args: string[]) =>
  spawnSync('node', [CLI, ...args, '--config', inst.configFile], { encoding: 'utf8', timeout: 20_000 });

const entry = (n: number, phase: 'request' | 'result' = 'result'): AuditEntry => ({
  team: 'acme',
  server: 'http',
  tool: 'http_request',
  session: 's1',
  call: `call-${n}`,
  phase,
  args: { n },
  decision: 'allow',
  rule: 'http.hosts[0]',
});

async function writeLog(records: number, everyRecords = 5): Promise<void> {
  const signer = await loadOrCreateAuditSigner(inst.stateDir);
  const log = await AuditLog.open(inst.auditFile, { checkpoints: { signer, everyRecords } });
  for (let i = 1; i <= records; i++) await log.append(entry(i));
  await log.close();
}

const lines = async (file = inst.auditFile) => (await readFile(file, 'utf8')).trim().split('\n');

describe('anchored audit heads', () => {
  it('a log cut off at its end verifies alone, but not against the head taken before', async () => {
    await writeLog(20);
    const head = airlock('audit', 'head', '--json');
    expect(head.status, head.stderr).toBe(0);
    const signed = JSON.parse(head.stdout) as {
      seq: number;
      hash: string;
      signature: string;
      publicKey: string;
    };
    const all = await lines();
    expect(signed.seq).toBe(all.length);
    expect(signed.hash).toBe((JSON.parse(all.at(-1)!) as { hash: string }).hash);
    const headFile = path.join(inst.root, 'head.json');
    await writeFile(headFile, head.stdout);

    const cut = path.join(inst.root, 't');
    await writeFile(cut, all.slice(0, 10).join('\n') + '\n');
    // The chain alone cannot tell (this is what the issue observed)...
    expect(airlock('audit', 'verify', '--file', cut).stdout).toMatch(/^ok: 10 records, chain intact/);
    // ...the head can, given as SEQ:HASH or as the signed head file.
    for (const expectHead of [`${signed.seq}:${signed.hash}`, headFile]) {
      const r = airlock('audit', 'verify', '--file', cut, '--expect-head', expectHead);
      expect(r.status).toBe(1);
      expect(r.stdout).toMatch(
        new RegExp(
          `the chain ends before the expected head \\(seq ${signed.seq}, .*records were removed from the end`,
        ),
      );
    }
    const whole = airlock('audit', 'verify', '--expect-head', headFile);
    expect(whole.status, whole.stdout).toBe(0);
    expect(whole.stdout).toContain(`expected head ${signed.seq}:${signed.hash} is in the chain`);
    expect(whole.stdout).toMatch(/4 signed checkpoint\(s\) verified with the host key/);

    // A forged head file (another signature) is refused.
    await writeFile(headFile, JSON.stringify({ ...signed, signature: Buffer.alloc(64).toString('base64') }));
    const forged = airlock('audit', 'verify', '--expect-head', headFile);
    expect(forged.status).toBe(1);
    expect(forged.stderr).toMatch(/signature does not verify with this host's key/);
  });

  it('a log rewritten whole with fresh hashes fails on its signed checkpoints', async () => {
    await writeLog(12);
    const records = (await lines()).map((l) => JSON.parse(l) as Record<string, unknown>);
    // The attacker edits record 2, recomputes every hash after it, and fixes the checkpoints'
    // named heads, but cannot sign them.
    (records[1]!.args as { n: number }).n = 999;
    let prev = '0'.repeat(64);
    for (const r of records) {
      const cp = r.checkpoint as { hash: string } | undefined;
      if (cp) cp.hash = prev;
      delete r.hash;
      r.prev = prev;
      r.hash = recordHash(prev, r);
      prev = r.hash as string;
    }
    await writeFile(inst.auditFile, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const r = airlock('audit', 'verify');
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/broken at line 6: checkpoint signature does not verify/);
    // Without the host key only the chain is checked, and says so.
    const unkeyed = spawnSync('node', [CLI, 'audit', 'verify', '--file', inst.auditFile], {
      encoding: 'utf8',
    });
    expect(unkeyed.stdout).toMatch(/signed checkpoint\(s\) not checked/);
  });

  it('a file starting mid-chain verifies only from a given head', async () => {
    await writeLog(8, 1000);
    const all = await lines();
    const tail = path.join(inst.root, 'tail.jsonl');
    await writeFile(tail, all.slice(5).join('\n') + '\n');
    const alone = airlock('audit', 'verify', '--file', tail);
    expect(alone.status).toBe(1);
    expect(alone.stdout).toMatch(/starts mid-chain \(seq 6\).*--from SEQ:HASH/);
    const before = JSON.parse(all[4]!) as { seq: number; hash: string };
    const from = airlock('audit', 'verify', '--file', tail, '--from', `${before.seq}:${before.hash}`);
    expect(from.status, from.stdout).toBe(0);
    expect(from.stdout).toMatch(/^ok: 3 records, chain intact\nfrom seq 5 \(given\)/);
    const wrong = airlock('audit', 'verify', '--file', tail, '--from', `5:${'a'.repeat(64)}`);
    expect(wrong.status).toBe(1);
  });

  it('reports a request without its result as an interrupted call, not an error', async () => {
    const log = await AuditLog.open(inst.auditFile);
    await log.append(entry(1, 'request'));
    await log.append(entry(1, 'result'));
    await log.append(entry(2, 'request')); // the broker died here
    await log.close();
    const r = airlock('audit', 'verify');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('ok: 3 records, chain intact');
    expect(r.stdout).toContain('1 interrupted call(s) (request record without a result; not an error):');
    expect(r.stdout).toContain('  seq 3: acme http http_request call call-2');
  });
});

describe('the host key', () => {
  it('airlock serve creates it in stateDir (0600, public half 0644) and signs checkpoints with it', async () => {
    const [{ Broker }, { loadConfig }, { silentLogger }] = await Promise.all([
      import('../../src/broker.js'),
      import('../../src/config/airlock-yaml.js'),
      import('../../src/log.js'),
    ]);
    const broker = await Broker.start(await loadConfig(inst.configFile), { log: silentLogger() });
    await broker.stop(1000);
    const { stat } = await import('node:fs/promises');
    const keyFile = path.join(inst.stateDir, 'audit', 'signing-key.pem');
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
    expect((await stat(path.join(inst.stateDir, 'audit', 'signing-key.pub.pem'))).mode & 0o777).toBe(0o644);
    // A key made before is kept: the checkpoints of earlier runs still verify.
    const signer = await loadOrCreateAuditSigner(inst.stateDir);
    await writeLog(6);
    const head = JSON.parse(airlock('audit', 'head', '--json').stdout) as { keyId: string };
    expect(head.keyId).toBe(signer.keyId);
    expect(airlock('audit', 'verify').stdout).toMatch(/1 signed checkpoint\(s\) verified with the host key/);
  });
});

describe('airlock audit rotate', () => {
  it('starts a new file that continues the chain; a live writer moves on to it', async () => {
    const signer = await loadOrCreateAuditSigner(inst.stateDir);
    const log = await AuditLog.open(inst.auditFile, { checkpoints: { signer } });
    for (let i = 1; i <= 3; i++) await log.append(entry(i));
    const rotate = airlock('audit', 'rotate');
    expect(rotate.status, rotate.stderr).toBe(0);
    const rotated = /→ (\S+) \(last record seq 3/.exec(rotate.stdout)?.[1];
    expect(rotated).toBeDefined();
    expect(rotate.stdout).toContain(`${inst.auditFile} continues the chain at seq 4`);
    // The writer that was running appends to the new file, after the rotation record.
    await log.append(entry(4));
    await log.close();
    const fresh = (await lines()).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(fresh.map((r) => [r.seq, r.phase])).toEqual([
      [4, 'rotate'],
      [5, 'result'],
    ]);
    expect(await lines(rotated!)).toHaveLength(3);

    const both = airlock('audit', 'verify', '--file', rotated!, '--file', inst.auditFile);
    expect(both.status, both.stdout).toBe(0);
    expect(both.stdout).toMatch(/^ok: 5 records, chain intact/);
    // The new file alone: anchored by its signed rotation record.
    const alone = airlock('audit', 'verify', '--file', inst.auditFile);
    expect(alone.status, alone.stdout).toBe(0);
    expect(alone.stdout).toMatch(/^ok: 2 records, chain intact\nfrom seq 3 \(signed rotation record\)/);
    // Files out of order do not chain.
    expect(airlock('audit', 'verify', '--file', inst.auditFile, '--file', rotated!).status).toBe(1);
  });
});
