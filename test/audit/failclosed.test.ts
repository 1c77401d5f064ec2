// Each way the log can stop being writable: the append rejects with AuditUnavailableError naming
// the file and the cause, the chain does not advance, no torn bytes remain, and once the problem
// is repaired the next append continues a chain that verifies. Runs as root (chattr, mount).
import {
  copyFileSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
  writeSync,
  closeSync,
} from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog, AuditUnavailableError, verifyAuditFile, type AuditRecord } from '../../src/audit/log.js';
import { entry, mountTmpfs, sh, tempDir } from './helpers.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

let dir: string;
beforeEach(() => {
  const t = tempDir();
  dir = t.dir;
  cleanups.push(t.cleanup);
});

/** Opens a log at `file` with `n` records; returns it and the last record. */
async function logWith(
  file: string,
  n: number,
  syncs?: number[],
): Promise<{ log: AuditLog; last: AuditRecord }> {
  const log = await AuditLog.open(file, syncs ? { onSync: (k) => syncs.push(k) } : {});
  cleanups.push(() => log.close());
  let last!: AuditRecord;
  for (let i = 0; i < n; i++) last = await log.append(entry({ call: `pre${i}` }));
  return { log, last };
}

async function expectUnavailable(
  p: Promise<unknown>,
  file: string,
  cause: RegExp,
): Promise<AuditUnavailableError> {
  const err = await p.then(
    () => {
      throw new Error('append succeeded but should have failed closed');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AuditUnavailableError);
  const message = (err as Error).message;
  expect(message).toMatch(/^audit log unavailable: /);
  expect(message).toContain(file);
  expect(message).toMatch(cause);
  return err as AuditUnavailableError;
}

/** After repair: the next record links to the last durable one and the whole file verifies. */
async function expectResumes(log: AuditLog, file: string, last: AuditRecord): Promise<void> {
  const next = await log.append(entry({ call: 'after-repair' }));
  expect(next.seq).toBe(last.seq + 1);
  expect(next.prev).toBe(last.hash);
  expect(await verifyAuditFile(file)).toEqual({ ok: true, count: next.seq });
}

describe('fail closed', () => {
  it('immutable file (chattr +i): rejects, then resumes after chattr -i', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const { log, last } = await logWith(file, 3);
    sh('chattr', '+i', file); // throws (fails the test) where chattr is not supported
    cleanups.push(() => sh('chattr', '-i', file));
    const size = statSync(file).size;
    const failed = await Promise.allSettled(Array.from({ length: 5 }, () => log.append(entry())));
    for (const r of failed) expect(r.status).toBe('rejected');
    await expectUnavailable(log.append(entry()), file, /EPERM/);
    expect(statSync(file).size).toBe(size);
    sh('chattr', '-i', file);
    await expectResumes(log, file, last);
    await log.close();
  });

  it('full disk: rejects, leaves no torn line after a partial write, resumes once space is freed', async () => {
    const fs = mountTmpfs('64k');
    cleanups.push(fs.cleanup);
    const file = path.join(fs.dir, 'audit.jsonl');
    const { log, last } = await logWith(file, 3);
    const size = statSync(file).size;
    // Fill the filesystem completely.
    const filler = path.join(fs.dir, 'filler');
    const fd = openSync(filler, 'w');
    try {
      for (const chunk of [Buffer.alloc(4096, 1), Buffer.alloc(1, 1)]) {
        for (;;) {
          try {
            writeSync(fd, chunk);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
            break;
          }
        }
      }
    } finally {
      closeSync(fd);
    }
    // A record larger than the space left in the log's last page: part of it is written
    // before ENOSPC, and must be cut off again.
    const big = entry({
      args: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, 'z'.repeat(1000)])),
    });
    await expectUnavailable(log.append(big), file, /ENOSPC/);
    expect(statSync(file).size).toBe(size);
    expect(readFileSync(file, 'utf8').endsWith('\n')).toBe(true);
    expect(await verifyAuditFile(file)).toEqual({ ok: true, count: 3 });
    await expectUnavailable(log.append(big), file, /ENOSPC/);
    unlinkSync(filler);
    await expectResumes(log, file, last);
    await log.close();
  });

  it('read-only filesystem: open refuses; after remounting read-write it continues the chain', async () => {
    const fs = mountTmpfs('1m');
    cleanups.push(fs.cleanup);
    const file = path.join(fs.dir, 'audit.jsonl');
    const { log, last } = await logWith(file, 2);
    await log.close();
    sh('mount', '-o', 'remount,ro', fs.dir);
    cleanups.push(() => sh('mount', '-o', 'remount,rw', fs.dir));
    await expectUnavailable(AuditLog.open(file), file, /EROFS/);
    sh('mount', '-o', 'remount,rw', fs.dir);
    const reopened = await AuditLog.open(file);
    cleanups.push(() => reopened.close());
    await expectResumes(reopened, file, last);
    await reopened.close();
  });

  it('containing folder deleted while open: rejects (nothing goes into the orphaned inode), resumes once restored', async () => {
    const logDir = path.join(dir, 'logs');
    const file = path.join(logDir, 'audit.jsonl');
    const syncs: number[] = [];
    const { log, last } = await logWith(file, 3, syncs);
    const backup = path.join(dir, 'backup.jsonl');
    copyFileSync(file, backup);
    rmSync(logDir, { recursive: true });
    const syncsBefore = syncs.length;
    await expectUnavailable(log.append(entry()), file, /deleted while open/);
    await expectUnavailable(log.append(entry()), file, /deleted while open/);
    expect(syncs.length).toBe(syncsBefore);
    // An unrelated empty file at the path does not continue the chain.
    mkdirSync(logDir);
    writeFileSync(file, '');
    await expectUnavailable(log.append(entry()), file, /does not continue the chain/);
    copyFileSync(backup, file);
    await expectResumes(log, file, last);
    await log.close();
  });

  it('file deleted while open: rejects; resumes when a copy of it is put back', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const { log, last } = await logWith(file, 3);
    const backup = path.join(dir, 'backup.jsonl');
    copyFileSync(file, backup);
    unlinkSync(file);
    await expectUnavailable(log.append(entry()), file, /deleted while open/);
    copyFileSync(backup, file);
    await expectResumes(log, file, last);
    await log.close();
  });

  it('file replaced while open (old inode still linked elsewhere): rejects and does not write into the old inode', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const { log, last } = await logWith(file, 3);
    const moved = path.join(dir, 'moved.jsonl');
    linkSync(file, moved); // keeps the open inode's link count above zero
    const movedSize = statSync(moved).size;
    // Replace with a copy that lacks the last record: it does not continue the chain.
    const shorter = readFileSync(file, 'utf8').split('\n').slice(0, 2).join('\n') + '\n';
    writeFileSync(path.join(dir, 'other'), shorter);
    renameSync(path.join(dir, 'other'), file);
    await expectUnavailable(log.append(entry()), file, /replaced while open.*does not continue the chain/);
    expect(statSync(moved).size).toBe(movedSize);
    expect(readFileSync(file, 'utf8')).toBe(shorter);
    // Repair: put the original back.
    renameSync(moved, file);
    await expectResumes(log, file, last);
    await log.close();
  });

  it('file replaced by a copy during a write: that batch rejects (it went to the old inode), the next continues in the copy', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const copy = path.join(dir, 'copy.jsonl');
    let replaceDuringWrite = false;
    const log = await AuditLog.open(file, {
      afterWrite: () => {
        if (!replaceDuringWrite) return;
        replaceDuringWrite = false;
        renameSync(copy, file); // a copy taken before this batch: it continues the chain
      },
    });
    cleanups.push(() => log.close());
    let last!: AuditRecord;
    for (let i = 0; i < 3; i++) last = await log.append(entry());
    copyFileSync(file, copy);
    replaceDuringWrite = true;
    await expectUnavailable(log.append(entry({ call: 'lost' })), file, /replaced during a write/);
    expect(readFileSync(file, 'utf8')).not.toContain('"lost"');
    await expectResumes(log, file, last);
  });

  it('sync failure whose clean-up also fails: the unacknowledged lines are cut before the next write', async () => {
    const file = path.join(dir, 'audit.jsonl');
    let failSync = false;
    const log = await AuditLog.open(file, {
      afterWrite: () => {
        if (!failSync) return;
        failSync = false;
        sh('chattr', '+i', file); // the truncate that undoes the batch fails too
        throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
      },
    });
    cleanups.push(() => log.close());
    cleanups.push(() => sh('chattr', '-i', file));
    let last!: AuditRecord;
    for (let i = 0; i < 2; i++) last = await log.append(entry());
    failSync = true;
    await expectUnavailable(log.append(entry({ call: 'unacknowledged' })), file, /EIO/);
    expect(readFileSync(file, 'utf8')).toContain('"unacknowledged"'); // still there: could not cut it
    await expectUnavailable(log.append(entry()), file, /EPERM/);
    sh('chattr', '-i', file);
    await expectResumes(log, file, last);
    expect(readFileSync(file, 'utf8')).not.toContain('"unacknowledged"');
  });

  it('a log someone else appended to is not written to (and not truncated)', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const { log } = await logWith(file, 2);
    const foreign = '{"forged":true}\n';
    writeFileSync(file, foreign, { flag: 'a' });
    const size = statSync(file).size;
    await expectUnavailable(log.append(entry()), file, /changed size outside Airlock/);
    expect(statSync(file).size).toBe(size);
    await log.close();
  });
});
