import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  AuditLog,
  GENESIS_PREV,
  canonicalJson,
  readAuditRecords,
  recordHash,
  truncateForAudit,
  verifyAuditFile,
  type AuditRecord,
} from '../../src/audit/log.js';
import { entry, tempDir } from './helpers.js';

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

async function writeLog(
  file: string,
  n: number,
  extra: (i: number) => object = () => ({}),
): Promise<AuditRecord[]> {
  const log = await AuditLog.open(file);
  const out: AuditRecord[] = [];
  for (let i = 0; i < n; i++) out.push(await log.append(entry({ call: `c${i}`, ...extra(i) })));
  await log.close();
  return out;
}

function lines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').slice(0, -1);
}

describe('canonicalJson', () => {
  it('sorts keys recursively and has no whitespace', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: 'x' } })).toBe(
      '{"a":{"c":"x","d":[1,{"y":2,"z":1}]},"b":1}',
    );
  });
  it('takes values as JSON.stringify does', () => {
    const v = { u: undefined, n: NaN, d: new Date(0), arr: [undefined, () => 1], s: 'é\u001b' };
    expect(canonicalJson(v)).toBe(canonicalJson(JSON.parse(JSON.stringify(v))));
    expect(canonicalJson(v)).toBe(
      '{"arr":[null,null],"d":"1970-01-01T00:00:00.000Z","n":null,"s":"é\\u001b"}',
    );
  });
});

describe('hash chain', () => {
  it('links records: seq from 1, first prev is 64 zeros, hash = sha256(prev + canonical record)', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const recs = await writeLog(file, 3);
    expect(recs.map((r) => r.seq)).toEqual([1, 2, 3]);
    expect(recs[0]!.prev).toBe(GENESIS_PREV);
    expect(recs[1]!.prev).toBe(recs[0]!.hash);
    expect(recs[2]!.prev).toBe(recs[1]!.hash);
    for (const r of recs) {
      const { hash, ...rest } = r;
      const expected = createHash('sha256')
        .update(r.prev + canonicalJson(rest))
        .digest('hex');
      expect(hash).toBe(expected);
      expect(recordHash(r.prev, rest)).toBe(expected);
      expect(new Date(r.ts).toISOString()).toBe(r.ts);
      expect(r.v).toBe(1);
    }
    // The file holds exactly the returned records, one per line.
    expect(lines(file).map((l) => JSON.parse(l))).toEqual(recs);
    const read: AuditRecord[] = [];
    for await (const r of readAuditRecords(file)) read.push(r);
    expect(read).toEqual(recs);
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 3 });
  });

  it('verifies an empty file as ok with 0 records', async () => {
    const file = path.join(dir, 'empty.jsonl');
    writeFileSync(file, '');
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 0 });
  });

  it('fails at the right line when any single byte is flipped', async () => {
    const file = path.join(dir, 'audit.jsonl');
    await writeLog(file, 3, (i) => ({ args: { note: `esc\u001b${i}`, n: i } }));
    const original = readFileSync(file);
    const lineOf = (pos: number) => original.subarray(0, pos).toString('latin1').split('\n').length;
    for (let pos = 0; pos < original.length; pos++) {
      const copy = Buffer.from(original);
      copy[pos] = copy[pos]! ^ 0x01;
      writeFileSync(file, copy);
      const res = await verifyAuditFile(file);
      expect(res.ok, `byte ${pos} flipped`).toBe(false);
      if (!res.ok) expect(res.line, `byte ${pos} flipped: ${res.reason}`).toBe(lineOf(pos));
    }
  });

  it('catches edits that parse to the same values (escape spelling, whitespace)', async () => {
    const file = path.join(dir, 'audit.jsonl');
    await writeLog(file, 2, () => ({ args: { note: 'a\u001bb' } }));
    const text = readFileSync(file, 'utf8');
    for (const edited of [
      text.replace('\\u001b', '\\u001B'),
      text.replace('"seq":2', '"seq": 2'),
      text.replace('"v":1', '"v":1.0'),
    ]) {
      expect(edited).not.toBe(text);
      writeFileSync(file, edited);
      const res = await verifyAuditFile(file);
      expect(res.ok).toBe(false);
    }
  });

  it('fails on a deleted, reordered or duplicated line', async () => {
    const file = path.join(dir, 'audit.jsonl');
    await writeLog(file, 4);
    const l = lines(file);
    const cases: [string[], number, RegExp][] = [
      [[l[0]!, l[2]!, l[3]!], 2, /seq is 3, expected 2/],
      [[l[1]!, l[2]!, l[3]!], 1, /seq is 2, expected 1/],
      [[l[0]!, l[2]!, l[1]!, l[3]!], 2, /seq/],
      [[l[0]!, l[1]!, l[1]!, l[2]!], 3, /seq/],
      [[l[0]!, l[1]!, l[2]!], -1, /./], // dropping the tail is undetectable from the file alone
    ];
    for (const [kept, line, reason] of cases) {
      writeFileSync(file, kept.join('\n') + '\n');
      const res = await verifyAuditFile(file);
      if (line === -1) expect(res).toEqual({ ok: true, count: 3 });
      else {
        expect(res.ok).toBe(false);
        if (!res.ok) {
          expect(res.line).toBe(line);
          expect(res.reason).toMatch(reason);
          expect(res.count).toBe(line - 1);
          expect(res.text).toBe(kept[line - 1]);
        }
      }
    }
  });

  it('catches a record rewritten with a recomputed hash (prev linkage)', async () => {
    const file = path.join(dir, 'audit.jsonl');
    await writeLog(file, 3);
    const l = lines(file);
    const forged = JSON.parse(l[1]!) as AuditRecord;
    forged.decision = 'deny';
    // An attacker recomputes this record's hash; the next record's prev no longer matches.
    const { hash: _h, ...rest } = forged;
    forged.hash = recordHash(forged.prev, rest);
    l[1] = JSON.stringify(forged);
    writeFileSync(file, l.join('\n') + '\n');
    const res = await verifyAuditFile(file);
    expect(res).toMatchObject({ ok: false, line: 3, reason: expect.stringMatching(/prev/) });
  });

  it('reports a torn final line (no newline)', async () => {
    const file = path.join(dir, 'audit.jsonl');
    await writeLog(file, 2);
    const text = readFileSync(file, 'utf8');
    writeFileSync(file, text.slice(0, -1)); // complete JSON, newline missing
    expect(await verifyAuditFile(file)).toMatchObject({
      ok: false,
      line: 2,
      count: 1,
      reason: expect.stringMatching(/torn/),
    });
    writeFileSync(file, text + '{"v":1,"se');
    expect(await verifyAuditFile(file)).toMatchObject({
      ok: false,
      line: 3,
      count: 2,
      reason: expect.stringMatching(/torn/),
    });
  });

  it('rejects a version other than 1 and a non-object line', async () => {
    const file = path.join(dir, 'audit.jsonl');
    writeFileSync(file, '[1,2]\n');
    expect(await verifyAuditFile(file)).toMatchObject({ ok: false, line: 1, reason: 'not a JSON object' });
    writeFileSync(file, '\n');
    expect(await verifyAuditFile(file)).toMatchObject({ ok: false, line: 1, reason: 'not valid JSON' });
    await writeLog(path.join(dir, 'b.jsonl'), 1);
    writeFileSync(file, readFileSync(path.join(dir, 'b.jsonl'), 'utf8').replace('"v":1', '"v":2'));
    expect(await verifyAuditFile(file)).toMatchObject({
      ok: false,
      line: 1,
      reason: expect.stringMatching(/version/),
    });
  });
});

describe('truncateForAudit', () => {
  it('keeps a prefix and the size and digest of the whole string, recursively, keys included', () => {
    const long = 'x'.repeat(50) + 'é';
    const sha = createHash('sha256').update(long).digest('hex');
    const out = truncateForAudit({ a: [long], [long]: 1, short: 'ok', n: 5 }, 10) as Record<string, unknown>;
    const cut = `xxxxxxxxxx…[52 bytes, sha256:${sha}]`;
    expect(out).toEqual({ a: [cut], [cut]: 1, short: 'ok', n: 5 });
  });
  it('is idempotent and does not split surrogate pairs', () => {
    const s = 'a'.repeat(9) + '😀' + 'b'.repeat(20);
    const once = truncateForAudit(s, 10) as string;
    expect(once.startsWith('a'.repeat(9) + '…[')).toBe(true);
    expect(truncateForAudit(once, 10)).toBe(once);
  });
  it('bounds arrays, nesting, and keeps "__proto__" a plain key', () => {
    const out = truncateForAudit({ list: Array.from({ length: 1000 }, (_, i) => i) }) as { list: unknown[] };
    expect(out.list).toHaveLength(257);
    expect(out.list[256]).toBe('…[744 more items]');
    let deep: unknown = 'bottom';
    for (let i = 0; i < 100; i++) deep = [deep];
    expect(JSON.stringify(truncateForAudit(deep)).length).toBeLessThan(200);
    const proto = truncateForAudit(JSON.parse('{"__proto__":{"polluted":1}}')) as object;
    expect(Object.getPrototypeOf(proto)).toBe(Object.prototype);
    expect(JSON.stringify(proto)).toBe('{"__proto__":{"polluted":1}}');
  });
});
