import {
  appendFileSync,
  openSync,
  closeSync,
  ftruncateSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  AuditLog,
  AuditUnavailableError,
  GENESIS_PREV,
  recordHash,
  verifyAuditFile,
  type AuditEntry,
  type AuditRecord,
} from '../../src/audit/log.js';
import { entry, tempDir } from './helpers.js';

/** Bytes this process has read from files so far (Linux's /proc/self/io `rchar`, all threads). */
function bytesReadByThisProcess(): number {
  return Number(/^rchar: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))![1]);
}

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

describe('AuditLog files', () => {
  it('creates the folder 0700 and the file 0600', async () => {
    const file = path.join(dir, 'nested', 'deeper', 'audit.jsonl');
    const log = await AuditLog.open(file);
    await log.append(entry());
    await log.close();
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('continues the chain after a restart', async () => {
    const file = path.join(dir, 'audit.jsonl');
    let log = await AuditLog.open(file);
    const first: AuditRecord[] = [];
    for (let i = 0; i < 5; i++) first.push(await log.append(entry({ call: `a${i}` })));
    await log.close();
    log = await AuditLog.open(file);
    expect(log.seq).toBe(5);
    const next = await log.append(entry({ call: 'b0' }));
    await log.close();
    expect(next.seq).toBe(6);
    expect(next.prev).toBe(first[4]!.hash);
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 6 });
  });

  it('reads only the tail on open (a 4 GiB sparse file opens at once)', async () => {
    const file = path.join(dir, 'big.jsonl');
    // 4 GiB of NUL bytes (sparse, costs no disk), a newline, then one self-consistent record.
    const body = { v: 1, seq: 7_000_000, ts: new Date().toISOString(), ...entry(), prev: 'a'.repeat(64) };
    const last = JSON.stringify({ ...body, hash: recordHash(body.prev, body) }) + '\n';
    const fd = openSync(file, 'w');
    ftruncateSync(fd, 4 * 1024 ** 3);
    writeSync(fd, '\n' + last, 4 * 1024 ** 3);
    closeSync(fd);
    // Opening reads the tail, not the 4 GiB: counted in bytes this process read, not in time.
    const readBefore = bytesReadByThisProcess();
    const log = await AuditLog.open(file);
    expect(bytesReadByThisProcess() - readBefore).toBeLessThan(64 * 1024 * 1024);
    const rec = await log.append(entry());
    await log.close();
    expect(rec.seq).toBe(7_000_001);
    expect(rec.prev).toBe(JSON.parse(last).hash);
  });

  it('sets a torn last line (a write a crash cut short) aside byte for byte, and continues the chain', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const log = await AuditLog.open(file);
    for (let i = 0; i < 3; i++) await log.append(entry());
    await log.close();
    const good = readFileSync(file);
    appendFileSync(file, '{"v":1,"seq":4,"ts":"2026');
    expect(await verifyAuditFile(file)).toMatchObject({ ok: false, line: 4, count: 3 });
    const reopened = await AuditLog.open(file);
    expect(reopened.tornTailSetAside?.bytes).toBe('{"v":1,"seq":4,"ts":"2026'.length);
    // Nothing dropped: the torn bytes are in a file of their own (0600), the good records untouched.
    const aside = reopened.tornTailSetAside!.file;
    expect(path.dirname(aside)).toBe(dir);
    expect(readFileSync(aside, 'utf8')).toBe('{"v":1,"seq":4,"ts":"2026');
    expect(statSync(aside).mode & 0o777).toBe(0o600);
    expect(readFileSync(file).subarray(0, good.length)).toEqual(good);
    await reopened.append(entry());
    await reopened.close();
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 4 });
  });

  it('refuses to open a log whose torn last line follows a record that does not verify, changing nothing', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const log = await AuditLog.open(file);
    for (let i = 0; i < 3; i++) await log.append(entry());
    await log.close();
    const lines = readFileSync(file, 'utf8').split('\n');
    writeFileSync(
      file,
      [lines[0], lines[1], lines[2]!.replace('"seq":3', '"seq":9'), ''].join('\n') + '{"v":1,"se',
    );
    const before = readFileSync(file);
    await expect(AuditLog.open(file)).rejects.toThrow(AuditUnavailableError);
    expect(readFileSync(file)).toEqual(before);
    expect(readdirSync(dir).filter((f) => f.includes('.torn-'))).toEqual([]);
  });

  it('refuses to open a log whose last line is complete but altered or not JSON', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const log = await AuditLog.open(file);
    for (let i = 0; i < 3; i++) await log.append(entry());
    await log.close();
    const good = readFileSync(file, 'utf8');
    writeFileSync(file, good.replace(/"tool":"git_push"(?=[^\n]*\n$)/, '"tool":"git_pull"'));
    await expect(AuditLog.open(file)).rejects.toThrow(/line 3: last record does not verify: hash mismatch/);
    writeFileSync(file, good + 'garbage\n');
    await expect(AuditLog.open(file)).rejects.toThrow(/line 4: last line is not valid JSON/);
  });

  it('fails (does not hang) when the folder cannot be created', async () => {
    writeFileSync(path.join(dir, 'plain'), '');
    await expect(AuditLog.open(path.join(dir, 'plain', 'sub', 'audit.jsonl'))).rejects.toThrow(
      /audit log unavailable: ENOTDIR .* creating /,
    );
    // Node's own recursive mkdir never settles here.
    await expect(AuditLog.open('/proc/airlock-no-such/audit.jsonl')).rejects.toThrow(
      /audit log unavailable: ENOENT/,
    );
  });

  it('refuses a path that is not a regular file', async () => {
    await expect(AuditLog.open(dir)).rejects.toThrow(AuditUnavailableError);
  });
});

describe('AuditLog records', () => {
  it('scrubs before hashing and writing, then truncates long strings', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const secret = 'ghp_TopSecretValue123';
    const scrub = (e: AuditEntry): AuditEntry =>
      JSON.parse(JSON.stringify(e).split(secret).join('[redacted]'));
    const log = await AuditLog.open(file, { scrub, maxString: 100 });
    const rec = await log.append(
      entry({ args: { token: secret, body: secret + 'y'.repeat(500) }, error: `bad ${secret}` }),
    );
    await log.close();
    const text = readFileSync(file, 'utf8');
    expect(text).not.toContain(secret);
    expect(rec.args).toMatchObject({ token: '[redacted]' });
    expect((rec.args as { body: string }).body).toMatch(
      /^\[redacted\]y{90}…\[510 bytes, sha256:[0-9a-f]{64}\]$/,
    );
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 1 });
  });

  it('does not let an entry set the envelope fields', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const log = await AuditLog.open(file);
    const rec = await log.append(
      entry({ seq: 99, prev: 'f'.repeat(64), hash: 'x', v: 7, ts: 'yesterday' } as object),
    );
    await log.close();
    expect(rec).toMatchObject({ seq: 1, prev: GENESIS_PREV, v: 1 });
    expect(rec.ts).not.toBe('yesterday');
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 1 });
  });

  it('rejects only the entry that has no JSON form', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const log = await AuditLog.open(file);
    const results = await Promise.allSettled([
      log.append(entry({ call: 'a' })),
      log.append(entry({ args: { n: 1n } })),
      log.append(entry({ call: 'c' })),
    ]);
    await log.close();
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 2 });
  });

  it('close waits for pending appends; appends after close reject', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const log = await AuditLog.open(file);
    const pending = Array.from({ length: 20 }, (_, i) => log.append(entry({ call: `c${i}` })));
    await log.close();
    expect((await Promise.all(pending)).map((r) => r.seq)).toEqual(
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    await expect(log.append(entry())).rejects.toThrow(AuditUnavailableError);
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 20 });
  });
});

describe('queueing', () => {
  it('an append made at any point while the previous batch winds down is not stranded', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const log = await AuditLog.open(file);
    const settled = (p: Promise<unknown>) =>
      Promise.race([
        p,
        new Promise((_, reject) => setTimeout(() => reject(new Error('append never settled')), 2000)),
      ]);
    for (let hops = 0; hops < 12; hops++) {
      await settled(log.append(entry()));
      for (let k = 0; k < hops; k++) await null; // land in each microtask gap of the drain loop
      await settled(log.append(entry()));
    }
    await log.close();
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 24 });
  });
});

describe('group commit', () => {
  it('64 concurrent appends share a few syncs, chained in arrival order', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const syncs: number[] = [];
    const log = await AuditLog.open(file, { onSync: (n) => syncs.push(n) });
    const recs = await Promise.all(
      Array.from({ length: 64 }, (_, i) => log.append(entry({ call: `c${i}` }))),
    );
    await log.close();
    expect(recs.map((r) => r.call)).toEqual(Array.from({ length: 64 }, (_, i) => `c${i}`));
    expect(recs.map((r) => r.seq)).toEqual(Array.from({ length: 64 }, (_, i) => i + 1));
    expect(syncs.reduce((a, b) => a + b, 0)).toBe(64);
    expect(syncs.length).toBeLessThanOrEqual(2);
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 64 });
  });

  it('appends that arrive while a batch is syncing wait for the next batch', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const syncs: number[] = [];
    const log = await AuditLog.open(file, { onSync: (n) => syncs.push(n) });
    const first = log.append(entry({ call: 'first' }));
    // The first batch has formed (and is writing) by the time these arrive.
    const later = await new Promise<Promise<AuditRecord>[]>((resolve) =>
      setImmediate(() => resolve(Array.from({ length: 63 }, (_, i) => log.append(entry({ call: `c${i}` }))))),
    );
    const recs = await Promise.all([first, ...later]);
    await log.close();
    expect(syncs[0]).toBe(1);
    expect(syncs.length).toBeLessThanOrEqual(3);
    expect(recs.map((r) => r.seq)).toEqual(Array.from({ length: 64 }, (_, i) => i + 1));
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 64 });
  });

  it('maxBatch 1 syncs once per record (the counter counts real syncs)', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const syncs: number[] = [];
    const log = await AuditLog.open(file, { maxBatch: 1, onSync: (n) => syncs.push(n) });
    await Promise.all(Array.from({ length: 64 }, (_, i) => log.append(entry({ call: `c${i}` }))));
    await log.close();
    expect(syncs).toEqual(Array(64).fill(1));
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 64 });
  });
});
