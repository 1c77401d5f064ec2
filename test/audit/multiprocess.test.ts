// Several Airlock processes (`airlock serve`, one `airlock stdio` per server) append to one audit
// file. Each batch runs under the lock `<file>.lock`, adopts what the others appended only if it
// continues the chain, and the result is one chain that verifies. Foreign bytes still fail closed.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHook } from 'node:async_hooks';
import {
  appendFileSync,
  lstatSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  AuditLog,
  AuditUnavailableError,
  LOCK_IDLE_HOLD_MS,
  verifyAuditFile,
  type AuditRecord,
} from '../../src/audit/log.js';
import { entry, sh, tempDir } from './helpers.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

let dir: string;
let file: string;
beforeEach(() => {
  const t = tempDir();
  dir = t.dir;
  file = path.join(dir, 'audit.jsonl');
  cleanups.push(t.cleanup);
});

async function openLog(opts: Parameters<typeof AuditLog.open>[1] = {}): Promise<AuditLog> {
  const log = await AuditLog.open(file, opts);
  cleanups.push(() => log.close());
  return log;
}

function fileRecords(): AuditRecord[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .slice(0, -1)
    .map((l) => JSON.parse(l) as AuditRecord);
}

/** The whole file verifies, seqs run 1..n without gaps, and it holds exactly `calls`. */
async function expectOneChain(calls: string[]): Promise<AuditRecord[]> {
  expect(await verifyAuditFile(file)).toEqual({ ok: true, count: calls.length });
  const recs = fileRecords();
  expect(recs.map((r) => r.seq)).toEqual(Array.from({ length: calls.length }, (_, i) => i + 1));
  expect(recs.map((r) => r.call).sort()).toEqual([...calls].sort());
  return recs;
}

const lockPath = (): string => file + '.lock';
/** The lock is a symlink to nowhere: existsSync follows it and always says false. */
const linkExists = (at: string): boolean => lstatSync(at, { throwIfNoEntry: false }) !== undefined;
const PID_NAMESPACE = /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'))?.[1] ?? '';
const lockTarget = (pid: number, since = Date.now()): string =>
  `airlock:${PID_NAMESPACE}:${pid}:${since}:test`;

/** A live process that is not an Airlock process (its pid holds a planted lock). */
function liveProcess(): ChildProcess {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  cleanups.push(() => child.kill('SIGKILL'));
  return child;
}

async function deadPid(): Promise<number> {
  const child = spawn('true', { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

describe('two AuditLogs in one process on one file', () => {
  it('alternating appends form one chain', async () => {
    const a = await openLog();
    const b = await openLog();
    const calls: string[] = [];
    for (let i = 0; i < 10; i++) {
      const ra = await a.append(entry({ call: `a${i}` }));
      const rb = await b.append(entry({ call: `b${i}` }));
      expect(rb.seq).toBe(ra.seq + 1);
      expect(rb.prev).toBe(ra.hash);
      calls.push(`a${i}`, `b${i}`);
    }
    await expectOneChain(calls);
    expect(linkExists(lockPath())).toBe(false); // released after every batch
  });

  it('with idleHoldMs a log keeps the lock briefly after a batch, lets go when idle, and at once when closed', async () => {
    const a = await openLog({ idleHoldMs: LOCK_IDLE_HOLD_MS });
    await a.append(entry({ call: 'a0' }));
    expect(linkExists(lockPath())).toBe(true); // the next batch need not take it again
    await new Promise((r) => setTimeout(r, LOCK_IDLE_HOLD_MS + 20));
    expect(linkExists(lockPath())).toBe(false);
    await a.append(entry({ call: 'a1' }));
    expect(linkExists(lockPath())).toBe(true);
    await a.close();
    expect(linkExists(lockPath())).toBe(false);
    await expectOneChain(['a0', 'a1']);
  });

  it('with idleHoldWatchedMs the idle hold outlasts idleHoldMs, and a waiter gets the lock as it asks', async () => {
    const a = await openLog({ idleHoldMs: LOCK_IDLE_HOLD_MS, idleHoldWatchedMs: 60_000 });
    await a.append(entry({ call: 'a0' }));
    await new Promise((r) => setTimeout(r, 50));
    expect(linkExists(lockPath())).toBe(true); // still held, well past idleHoldMs
    // Another writer reserves the next turn: a's watch sees it and lets go, long before its 60 s
    // hold (or b's lock timeout, which would fail b's open or append) is up.
    const b = await openLog({ lockTimeoutMs: 5000 });
    await b.append(entry({ call: 'b0' }));
    await a.append(entry({ call: 'a1' }));
    await expectOneChain(['a0', 'b0', 'a1']);
    await a.close();
    await b.close();
    expect(linkExists(lockPath())).toBe(false);
  });

  it('concurrent appends form one chain with every record', async () => {
    const a = await openLog();
    const b = await openLog();
    const calls: string[] = [];
    const pending: Promise<AuditRecord>[] = [];
    for (let round = 0; round < 20; round++) {
      for (let k = 0; k < 5; k++) {
        calls.push(`a${round}.${k}`, `b${round}.${k}`);
        pending.push(
          a.append(entry({ call: `a${round}.${k}` })),
          b.append(entry({ call: `b${round}.${k}` })),
        );
      }
      if (round % 3 === 0) await new Promise((r) => setImmediate(r));
    }
    const returned = await Promise.all(pending);
    const recs = await expectOneChain(calls);
    // What each append resolved with is exactly the record in the file at its seq.
    for (const r of returned) expect(recs[r.seq - 1]).toEqual(r);
  });

  it('reopening continues after records written by the other log', async () => {
    const a = await openLog();
    const b = await openLog();
    await a.append(entry({ call: 'a0' }));
    await b.append(entry({ call: 'b0' }));
    await b.append(entry({ call: 'b1' }));
    expect(a.seq).toBe(1); // a has not looked since
    const next = await a.append(entry({ call: 'a1' }));
    expect(next.seq).toBe(4);
    await expectOneChain(['a0', 'b0', 'b1', 'a1']);
  });
});

describe('another process appending concurrently', () => {
  /** The current source as a module a plain `node` child can import (it only uses Node builtins). */
  function buildChildModule(): string {
    const src = fileURLToPath(new URL('../../src/audit/log.ts', import.meta.url));
    const out = ts.transpileModule(readFileSync(src, 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    });
    writeFileSync(path.join(dir, 'audit.mjs'), out.outputText);
    const child = path.join(dir, 'appender.mjs');
    writeFileSync(
      child,
      `import { AuditLog } from './audit.mjs';
const [file, tag, count, width, ending] = process.argv.slice(2);
const log = await AuditLog.open(file, ending === 'exit-without-close' ? { idleHoldMs: 60_000 } : {});
process.stdout.write('ready\\n');
await new Promise((resolve) => process.stdin.once('data', resolve));
const seqs = [];
let next = 0;
await Promise.all(Array.from({ length: Number(width) }, async () => {
  while (next < Number(count)) {
    const i = next++;
    const rec = await log.append({ team: 't', server: 'git', tool: 'git_push', session: tag, call: tag + i,
      phase: 'result', decision: 'allow', rule: 'r' });
    seqs.push(rec.seq);
  }
}));
if (ending === 'exit-without-close') {
  process.stdout.write(JSON.stringify(seqs) + '\\n', () => process.exit(0));
} else {
  await log.close();
  process.stdout.write(JSON.stringify(seqs) + '\\n');
}
`,
    );
    return child;
  }

  it('a process that exits without closing its log, holding the lock while idle, leaves no lock behind', async () => {
    const script = buildChildModule();
    const child = spawn(process.execPath, [script, file, 'quick', '3', '1', 'exit-without-close'], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    cleanups.push(() => child.kill('SIGKILL'));
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    child.stdin!.end('go\n');
    expect(await exited).toBe(0);
    expect(JSON.parse(out.split('\n')[1]!)).toEqual([1, 2, 3]);
    // It exited within its idle hold (60 s), still owning the lock: its exit handler removed it.
    expect(linkExists(lockPath())).toBe(false);
    expect(linkExists(lockPath() + '.next')).toBe(false);
    await expectOneChain(['quick0', 'quick1', 'quick2']);
  });

  it('a child process and this one, appending at once, produce one valid chain', async () => {
    const script = buildChildModule();
    const COUNT = 300;
    const child = spawn(process.execPath, [script, file, 'child', String(COUNT), '4'], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    cleanups.push(() => child.kill('SIGKILL'));
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    while (!out.includes('ready\n')) {
      if (child.exitCode !== null) throw new Error(`child exited early: ${out}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    const log = await openLog();
    child.stdin!.end('go\n');
    let next = 0;
    const mine: AuditRecord[] = [];
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < COUNT) mine.push(await log.append(entry({ call: `parent${next++}` })));
      }),
    );
    expect(await exited).toBe(0);
    const childSeqs = JSON.parse(out.split('\n')[1]!) as number[];
    expect(childSeqs).toHaveLength(COUNT);

    const calls = [
      ...Array.from({ length: COUNT }, (_, i) => `parent${i}`),
      ...Array.from({ length: COUNT }, (_, i) => `child${i}`),
    ];
    const recs = await expectOneChain(calls);
    for (const r of mine) expect(recs[r.seq - 1]).toEqual(r);
    for (const seq of childSeqs) expect(recs[seq - 1]!.call).toMatch(/^child/);
    // The two really interleaved (otherwise this test would prove nothing about concurrency).
    const switches = recs.filter((r, i) => i > 0 && r.session !== recs[i - 1]!.session).length;
    expect(switches).toBeGreaterThan(2);
  });
});

describe('what other writers append', () => {
  it('garbage, a torn line, or a record that breaks the chain is refused and not truncated', async () => {
    const a = await openLog();
    const b = await openLog();
    await a.append(entry({ call: 'a0' }));
    await b.append(entry({ call: 'b0' })); // a must accept this one…
    await a.append(entry({ call: 'a1' }));
    const good = readFileSync(file, 'utf8');
    const lines = good.split('\n').slice(0, -1);
    const cases: [string, RegExp][] = [
      ['{"forged":true}\n', /line 4 does not continue the chain \(unsupported record version/],
      [lines[2]!.slice(0, 40), /line 4 does not continue the chain \(torn last line/],
      [lines[2]! + '\n', /line 4 does not continue the chain \(seq is 3, expected 4/], // a replayed record
      [
        lines[2]!.replace('"seq":3', '"seq":4') + '\n',
        /line 4 does not continue the chain \(prev does not match/,
      ],
    ];
    for (const [foreign, why] of cases) {
      writeFileSync(file, good + foreign);
      const size = statSync(file).size;
      const err = await a.append(entry()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AuditUnavailableError);
      expect((err as Error).message).toMatch(/changed size outside Airlock/);
      expect((err as Error).message).toMatch(why);
      expect((err as Error).message).toContain(file);
      expect(statSync(file).size).toBe(size);
      expect(linkExists(lockPath())).toBe(false); // a refusal releases the lock too
    }
    // Repaired: both continue one chain.
    writeFileSync(file, good);
    await a.append(entry({ call: 'a2' }));
    await b.append(entry({ call: 'b1' }));
    await expectOneChain(['a0', 'b0', 'a1', 'a2', 'b1']);
  });

  it('valid records followed by garbage: refused, naming the first bad line', async () => {
    const a = await openLog();
    const b = await openLog();
    await a.append(entry({ call: 'a0' }));
    for (let i = 0; i < 3; i++) await b.append(entry({ call: `b${i}` }));
    appendFileSync(file, 'not json\n');
    await expect(a.append(entry())).rejects.toThrow(/line 5 does not continue the chain \(not valid JSON\)/);
    expect(a.seq).toBe(1); // nothing adopted from a span that does not verify as a whole
  });

  it('a file that shrank is refused', async () => {
    const a = await openLog();
    for (let i = 0; i < 3; i++) await a.append(entry());
    const size = statSync(file).size;
    truncateSync(file, size - 10);
    await expect(a.append(entry())).rejects.toThrow(/changed size outside Airlock \(\d+ → \d+ bytes\)/);
    expect(statSync(file).size).toBe(size - 10);
  });
});

describe('writers that ignore the lock', () => {
  it('bytes appended during our write: the batch fails and nothing of theirs is cut', async () => {
    let intrude = false;
    const log = await openLog({
      afterWrite: () => {
        if (!intrude) return;
        intrude = false;
        appendFileSync(file, 'intruder\n'); // a writer that does not take the lock
      },
    });
    await log.append(entry({ call: 'a0' }));
    intrude = true;
    await expect(log.append(entry({ call: 'a1' }))).rejects.toThrow(
      /appended to by another writer during this write/,
    );
    const text = readFileSync(file, 'utf8');
    expect(text).toContain('"a1"'); // ours cannot be cut without cutting theirs
    expect(text.endsWith('intruder\n')).toBe(true);
    await expect(log.append(entry())).rejects.toThrow(/line 3 does not continue the chain/);
    expect(readFileSync(file, 'utf8')).toBe(text);
  });
});

describe('a restored file', () => {
  it('is adopted if other processes extended the chain since this one last wrote', async () => {
    const a = await openLog();
    const b = await openLog();
    await a.append(entry({ call: 'a0' }));
    await b.append(entry({ call: 'b0' }));
    const backup = path.join(dir, 'backup.jsonl');
    writeFileSync(backup, readFileSync(file));
    unlinkSync(file);
    await expect(b.append(entry())).rejects.toThrow(/deleted while open/);
    writeFileSync(file, readFileSync(backup)); // the operator puts it back
    await b.append(entry({ call: 'b1' })); // b follows it (its own last record is the last line)…
    await a.append(entry({ call: 'a1' })); // …and so does a (its last record ends where it left off)
    await expectOneChain(['a0', 'b0', 'b1', 'a1']);
  });

  it('is not adopted if the record where this log left off is not its own', async () => {
    const a = await openLog();
    await a.append(entry({ call: 'a0' }));
    const other = path.join(dir, 'other.jsonl');
    const stranger = await AuditLog.open(other);
    for (let i = 0; i < 3; i++) await stranger.append(entry({ call: `s${i}` }));
    await stranger.close();
    unlinkSync(file);
    writeFileSync(file, readFileSync(other)); // longer, valid, but a different chain
    await expect(a.append(entry())).rejects.toThrow(
      /was replaced while open and the file there now does not continue the chain/,
    );
    expect(readFileSync(file, 'utf8')).toBe(readFileSync(other, 'utf8'));
  });
});

describe('the lock', () => {
  it('a lock left by a dead process is broken', async () => {
    const log = await openLog({ lockTimeoutMs: 2000 });
    await log.append(entry());
    symlinkSync(lockTarget(await deadPid()), lockPath());
    // Broken, not waited out: waiting would end in AuditUnavailableError after lockTimeoutMs.
    const rec = await log.append(entry());
    expect(rec.seq).toBe(2);
    expect(linkExists(lockPath())).toBe(false);
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 2 });
  });

  it('a lock naming this process that no log here holds (left from an earlier process) is broken', async () => {
    const log = await openLog({ lockTimeoutMs: 2000 });
    symlinkSync(lockTarget(process.pid), lockPath());
    expect((await log.append(entry())).seq).toBe(1);
  });

  it('a lock older than staleLockMs is broken even if its owner is alive', async () => {
    const owner = liveProcess();
    const log = await openLog({ lockTimeoutMs: 2000 });
    symlinkSync(lockTarget(owner.pid!, Date.now() - 31_000), lockPath());
    expect((await log.append(entry())).seq).toBe(1);
  });

  it('a lock held by a live process past the timeout: clear error, nothing written; then it proceeds', async () => {
    const owner = liveProcess();
    const log = await openLog({ lockTimeoutMs: 300 });
    await log.append(entry({ call: 'before' }));
    const planted = lockTarget(owner.pid!);
    symlinkSync(planted, lockPath());
    const size = statSync(file).size;
    const err = await log.append(entry({ call: 'blocked' })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuditUnavailableError);
    expect((err as Error).message).toMatch(
      new RegExp(
        `^audit log unavailable: ${file} is locked by another Airlock process \\(${lockPath()}: pid ${owner.pid}, held for \\d+ ms\\); gave up after 300 ms`,
      ),
    );
    expect(statSync(file).size).toBe(size);
    expect(readlinkSync(lockPath())).toBe(planted); // a live owner's lock is left alone
    // The owner releases it (here: dies): the next append goes through.
    owner.kill('SIGKILL');
    await new Promise((resolve) => owner.once('exit', resolve));
    const rec = await log.append(entry({ call: 'after' }));
    expect(rec.seq).toBe(2);
    await expectOneChain(['before', 'after']);
  });

  it('a busy writer does not starve another (the waiter reserves the next turn)', async () => {
    const busy = await openLog();
    // A timeout far beyond any wait here: starving shows as a count of records, not as a clock.
    const other = await openLog({ lockTimeoutMs: 60_000 });
    const WRITERS = 32;
    let stop = false;
    let lastBusySeq = 0;
    const hammering = Promise.all(
      Array.from({ length: WRITERS }, async () => {
        while (!stop) lastBusySeq = Math.max(lastBusySeq, (await busy.append(entry({ call: 'busy' }))).seq);
      }),
    );
    await busy.append(entry({ call: 'busy' }));
    // How many busy records went in while each of the other's appends waited.
    const overtaken: number[] = [];
    try {
      for (let i = 0; i < 10; i++) {
        const before = lastBusySeq;
        const rec = await other.append(entry({ call: `other${i}` }));
        overtaken.push(rec.seq - before - 1);
      }
    } finally {
      stop = true;
      await hammering;
    }
    // Each waits for at most the appends already in flight and the batch in progress, not for the
    // busy writer to go idle (it never does while hammering).
    expect(Math.max(...overtaken), JSON.stringify(overtaken)).toBeLessThanOrEqual(4 * WRITERS);
    expect(await verifyAuditFile(file)).toMatchObject({ ok: true });
    expect(linkExists(lockPath() + '.next')).toBe(false);
  });

  it('a waiting append proceeds once the lock is released, before its own timeout', async () => {
    const owner = liveProcess();
    // Generous, so a busy machine does not fail it; the lock's owner stays alive all along, so
    // only the release lets the append through.
    const log = await openLog({ lockTimeoutMs: 30_000 });
    symlinkSync(lockTarget(owner.pid!), lockPath());
    setTimeout(() => unlinkSync(lockPath()), 100);
    expect((await log.append(entry())).seq).toBe(1);
    expect(owner.exitCode).toBeNull();
  });

  it('something that is not an Airlock lock at the lock path is never removed', async () => {
    const log = await openLog({ lockTimeoutMs: 200 });
    writeFileSync(lockPath(), 'mine\n');
    await expect(log.append(entry())).rejects.toThrow(/is locked .*not an Airlock lock; remove it/);
    expect(readFileSync(lockPath(), 'utf8')).toBe('mine\n');
  });

  it('open waits for the lock too (it never reads a batch half-written)', async () => {
    const owner = liveProcess();
    symlinkSync(lockTarget(owner.pid!), lockPath());
    await expect(AuditLog.open(file, { lockTimeoutMs: 200 })).rejects.toThrow(
      /is locked by another Airlock process/,
    );
  });

  it('unacknowledged bytes that could not be cut keep the lock until they are cut', async () => {
    let failSync = false;
    const a = await openLog({
      lockTimeoutMs: 200,
      afterWrite: () => {
        if (!failSync) return;
        failSync = false;
        sh('chattr', '+i', file); // the truncate that undoes the batch fails too
        throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
      },
    });
    cleanups.push(() => sh('chattr', '-i', file));
    const b = await openLog({ lockTimeoutMs: 200 });
    await a.append(entry({ call: 'a0' }));
    failSync = true;
    await expect(a.append(entry({ call: 'unacknowledged' }))).rejects.toThrow(/EIO/);
    sh('chattr', '-i', file);
    // b must not take the unacknowledged record for part of the chain.
    await expect(b.append(entry({ call: 'b0' }))).rejects.toThrow(/is locked by another Airlock process/);
    await a.append(entry({ call: 'a1' })); // cuts them, then releases
    await b.append(entry({ call: 'b1' }));
    await expectOneChain(['a0', 'a1', 'b1']);
  });
});

/** The threadpool requests (fs operations) one append makes. */
async function fsRequestsOf(append: () => Promise<unknown>): Promise<string[]> {
  const fsRequests: string[] = [];
  const hook = createHook({
    init(_id, type) {
      if (type.startsWith('FSREQ') || type === 'FILEHANDLE' || type === 'STATWATCHER') fsRequests.push(type);
    },
  });
  hook.enable();
  try {
    await append();
  } finally {
    hook.disable();
  }
  return fsRequests;
}

describe('latency', () => {
  it('an uncontended batch makes one threadpool request (the fdatasync)', async () => {
    const log = await openLog();
    await log.append(entry()); // warm up
    expect(await fsRequestsOf(() => log.append(entry()))).toHaveLength(1);
  });

  it('syncInline: a lone batch syncs on the calling thread once a sync proved fast, and not when told otherwise', async () => {
    let alone = true;
    const synced: number[] = [];
    // maxMs is generous here so that a busy test machine cannot make the first sync look slow.
    const log = await openLog({
      syncInline: { when: () => alone, maxMs: 10_000 },
      onFsync: (s) => synced.push(s),
    });
    // The first batch has no measured sync yet: the threadpool.
    expect(await fsRequestsOf(() => log.append(entry({ call: 'first' })))).toHaveLength(1);
    expect(await fsRequestsOf(() => log.append(entry({ call: 'inline' })))).toEqual([]);
    alone = false;
    expect(await fsRequestsOf(() => log.append(entry({ call: 'busy' })))).toHaveLength(1);
    expect(synced).toHaveLength(3); // every sync is still reported
    // Durable and chained the same either way.
    expect(fileRecords().map((r) => r.call)).toEqual(['first', 'inline', 'busy']);
    expect((await verifyAuditFile(file)).ok).toBe(true);
  });

  it('syncInline: a sync slower than maxMs sends the next one back to the threadpool', async () => {
    const log = await openLog({ syncInline: { when: () => true, maxMs: 0 } });
    await log.append(entry());
    // Every sync takes more than 0 ms: never inline.
    expect(await fsRequestsOf(() => log.append(entry()))).toHaveLength(1);
  });
});
