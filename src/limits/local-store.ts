// Local rateLimit counters (`limits: { store: local }`, the default), shared by every Airlock
// process on the host: `serve`, each `stdio` and each `call` use the same state folder, so each
// check reads `<stateDir>/ratelimits.json`, takes its token and writes the file back, all under
// the inter-process lock the audit log uses (src/audit/log.ts). One bucket per team + server +
// tool for the host, whichever process the call comes through; a restart keeps the counters.
//
// The file is rewritten in place with synchronous calls (about 30 µs), not replaced by rename:
// on ext4 a rename over a file, or a truncate-and-write, waits for the data blocks (ms under
// load). A crash in the middle of the write leaves a file that does not parse, which reads as
// full buckets, as a first start does; the text is padded with spaces rather than truncated,
// so a crash between the write and a truncate cannot leave a valid prefix with a stale tail.
import { closeSync, constants, fstatSync, mkdirSync, openSync, readSync, writeSync } from 'node:fs';
import path from 'node:path';
import { InterProcessLock } from '../audit/log.js';
import { RateLimiter, type RateDecision, type RateLimitSpec } from '../policy/ratelimit.js';
import type { SharedRateLimiter } from './fleet.js';

/** Longest wait for another process's turn; past it the call is refused (fail closed). */
const LOCK_TIMEOUT_MS = 5000;
/** A lock older than this was left by a hung or dead process and is broken. */
const STALE_LOCK_MS = 30_000;

type SavedBucket = { tokens: number; updatedAt: number; spec: string };

export class HostRateLimiter implements SharedRateLimiter {
  readonly scope = 'host';
  readonly file: string;
  private readonly lock: InterProcessLock;
  /** Checks of this process run one at a time (the lock is not re-entrant). */
  private turn: Promise<unknown> = Promise.resolve();

  constructor(
    stateDir: string,
    private readonly now: () => number = Date.now,
  ) {
    this.file = path.join(stateDir, 'ratelimits.json');
    this.lock = new InterProcessLock(`${this.file}.lock`, this.file, LOCK_TIMEOUT_MS, STALE_LOCK_MS);
  }

  take(team: string, key: string, spec: RateLimitSpec): Promise<RateDecision> {
    const run = this.turn.then(() => this.takeLocked(`${team}/${key}`, spec));
    this.turn = run.catch(() => undefined);
    return run;
  }

  private async takeLocked(key: string, spec: RateLimitSpec): Promise<RateDecision> {
    try {
      // The lock lives beside the file: the folder must exist first.
      mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
      await this.lock.acquire();
    } catch (err) {
      throw new Error(
        `rate-limit counters unavailable: ${(err as Error).message.replace(/^audit log unavailable: /, '')}`,
      );
    }
    try {
      const fd = this.openState();
      try {
        const old = readAll(fd);
        const limiter = new RateLimiter(this.now);
        limiter.restore(sanitizeRateState(parse(old), this.now()));
        const decision = limiter.take(key, spec);
        const text = JSON.stringify(limiter.snapshot());
        writeSync(fd, text.padEnd(old.length, ' '), 0, 'utf8');
        return decision;
      } finally {
        closeSync(fd);
      }
    } finally {
      this.lock.release();
    }
  }

  private openState(): number {
    return openSync(this.file, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  }
}

function readAll(fd: number): string {
  const buf = Buffer.alloc(fstatSync(fd).size);
  let length = 0;
  while (length < buf.length) {
    const n = readSync(fd, buf, length, buf.length - length, length);
    if (n === 0) break;
    length += n;
  }
  return buf.subarray(0, length).toString('utf8');
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    // None yet (first call), unreadable, or cut by a crash: full buckets, as after a first start.
    return {};
  }
}

/**
 * Saved rate-limit counters, as far as they can be trusted: a clock that went back since they
 * were saved, or a hand-edited file, must not lock a team out for longer than one period.
 */
export function sanitizeRateState(raw: unknown, now: number): Record<string, SavedBucket> {
  const out: Record<string, SavedBucket> = {};
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return out;
  for (const [key, value] of Object.entries(raw)) {
    const b = value as Partial<SavedBucket> | null;
    if (typeof b?.tokens !== 'number' || typeof b.updatedAt !== 'number' || typeof b.spec !== 'string')
      continue;
    if (!Number.isFinite(b.tokens) || !Number.isFinite(b.updatedAt)) continue;
    Object.defineProperty(out, key, {
      value: { tokens: Math.max(0, b.tokens), updatedAt: Math.min(b.updatedAt, now), spec: b.spec },
      enumerable: true,
    });
  }
  return out;
}
