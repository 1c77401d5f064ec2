// The one-pass record build (AuditLog given the broker's redactor) must write, for any entry,
// exactly the body the full path (scrub the whole entry, truncate, JSON round trip) writes.
import { lstatSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog, verifyAuditFile, type AuditEntry } from '../../src/audit/log.js';
import { Redactor } from '../../src/secrets/redact.js';
import { entry, tempDir } from './helpers.js';

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

const SECRET = 'sk-live-0123456789abcdef';

function bodies(file: string): unknown[] {
  return readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((line) => {
      const {
        v: _v,
        seq: _s,
        ts: _t,
        prev: _p,
        hash: _h,
        ...body
      } = JSON.parse(line) as Record<string, unknown>;
      return body;
    });
}

const ENTRIES: AuditEntry[] = [
  entry(),
  // A secret in a short string, a key, JSON-escaped, and nested.
  entry({ args: { token: `Bearer ${SECRET}`, [SECRET]: 1, nested: [{ q: JSON.stringify({ s: SECRET }) }] } }),
  // A long string whose cut falls inside the secret: scrubbed whole before it is cut.
  entry({ args: { body: 'x'.repeat(1020) + SECRET + 'y'.repeat(500) } }),
  // More keys than a record keeps: the digest of the cut keys must be of scrubbed values.
  entry({
    args: Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`k${i}`, i === 299 ? SECRET : i])),
  }),
  // Larger than a record may be: the cut field's digest must be of scrubbed values.
  entry({ args: { big: Array.from({ length: 200 }, (_, i) => `${SECRET}-${i}-${'z'.repeat(900)}`) } }),
  // Values JSON has no form for, or writes differently.
  entry({
    args: {
      gone: undefined,
      nan: NaN,
      list: [undefined, Infinity, -0],
      when: new Date(0),
      buf: Buffer.from(SECRET),
    },
  }),
  // Envelope keys in an entry never override the envelope.
  { ...entry(), seq: 99, prev: 'x', hash: 'y' } as unknown as AuditEntry,
];

describe('one-pass audit records', () => {
  it('write the same bodies as the full scrub path, and never a secret', async () => {
    const redactor = new Redactor();
    redactor.add(SECRET);
    const fast = await AuditLog.open(path.join(dir, 'fast.jsonl'), { redactor });
    const full = await AuditLog.open(path.join(dir, 'full.jsonl'), { scrub: (e) => redactor.scrubDeep(e) });
    for (const e of ENTRIES) {
      await fast.append(e);
      await full.append(e);
    }
    // Back-to-back batches from one tick onwards (the lock is held across them).
    await Promise.all(ENTRIES.map((e) => fast.append(e)));
    await Promise.all(ENTRIES.map((e) => full.append(e)));
    await fast.close();
    await full.close();
    const fastText = readFileSync(path.join(dir, 'fast.jsonl'), 'utf8');
    expect(fastText).not.toContain(SECRET);
    expect(fastText).toContain('[redacted]');
    expect(bodies(path.join(dir, 'fast.jsonl'))).toEqual(bodies(path.join(dir, 'full.jsonl')));
    expect(await verifyAuditFile(path.join(dir, 'fast.jsonl'))).toMatchObject({
      ok: true,
      count: 2 * ENTRIES.length,
    });
  });

  it('leaves no lock behind after back-to-back batches', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const log = await AuditLog.open(file, { maxBatch: 2 });
    await Promise.all(Array.from({ length: 9 }, (_, i) => log.append(entry({ call: `c${i}` }))));
    // (lstat: the lock is a symlink to nowhere, which existsSync reports as absent)
    expect(lstatSync(`${file}.lock`, { throwIfNoEntry: false })).toBeUndefined();
    await log.close();
    expect(await verifyAuditFile(file)).toMatchObject({ ok: true, count: 9 });
  });
});
