// Property of the audit chain: against the head an operator anchored (`airlock audit head`),
// any single-byte change, deletion, insertion or reordering anywhere in the log is detected.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog, verifyAuditChain, type ChainHead } from '../../src/audit/log.js';

let dir: string;
let original: Buffer;
let lines: string[];
let head: ChainHead;
let n = 0;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'al-prop-'));
  const file = path.join(dir, 'audit.jsonl');
  const log = await AuditLog.open(file);
  for (let i = 0; i < 12; i++) {
    const last = await log.append({
      team: 'acme',
      server: 'http',
      tool: 'http_request',
      session: 's',
      call: `c${i >> 1}`,
      phase: i % 2 ? 'result' : 'request',
      args: { url: `https://api.example.com/v1/${i}`, note: 'ünïcödé "quoted" \\ slash/' },
      decision: 'allow',
      rule: 'http.hosts[0]',
    });
    head = { seq: last.seq, hash: last.hash };
  }
  await log.close();
  original = await readFile(file);
  lines = original.toString('utf8').trimEnd().split('\n');
});
afterAll(() => rm(dir, { recursive: true, force: true }));

async function detected(bytes: Buffer): Promise<boolean> {
  const file = path.join(dir, `m${n++}.jsonl`);
  await writeFile(file, bytes);
  const result = await verifyAuditChain([file], { expectHead: head });
  await rm(file);
  return !result.ok;
}

const linesOf = (ls: string[]) => Buffer.from(ls.map((l) => l + '\n').join(''), 'utf8');

describe('audit chain properties', () => {
  it('the untouched log verifies against its head', async () => {
    expect(await detected(original)).toBe(false);
  });

  it('detects any single-byte change', async () => {
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: 1 << 30 }), fc.integer({ min: 1, max: 255 }), async (at, delta) => {
        const bytes = Buffer.from(original);
        const i = at % bytes.length;
        bytes[i] = (bytes[i]! + delta) % 256;
        expect(await detected(bytes)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('detects deleting any record, or several', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.nat({ max: lines.length - 1 }), { minLength: 1, maxLength: 4 }),
        async (drop) => {
          expect(await detected(linesOf(lines.filter((_, i) => !drop.includes(i))))).toBe(true);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('detects inserting a copy of a record, or a line of anything', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: lines.length }),
        fc.oneof(
          fc.nat({ max: lines.length - 1 }).map((i) => lines[i]!),
          fc.json(),
          fc.string(),
        ),
        async (at, inserted) => {
          const copy = [...lines];
          copy.splice(at, 0, inserted.replace(/\n/g, ' '));
          expect(await detected(linesOf(copy))).toBe(true);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('detects swapping any two records', async () => {
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: lines.length - 1 }), fc.nat({ max: lines.length - 1 }), async (a, b) => {
        fc.pre(a !== b);
        const copy = [...lines];
        [copy[a], copy[b]] = [copy[b]!, copy[a]!];
        expect(await detected(linesOf(copy))).toBe(true);
      }),
      { numRuns: 100 },
    );
  });
});
