// Per-tool rate limits (`rateLimit: N/period` on any tool entry), one token bucket per
// team + server + tool: up to N calls in a burst, refilled at N per period. A denial says
// exactly when the next call will be allowed. With `limits: { store: postgres }` the same bucket
// lives in PostgreSQL instead, shared by every broker (src/limits/postgres-store.ts).
export interface RateLimitSpec {
  count: number;
  periodMs: number;
  text: string;
}

interface Bucket {
  tokens: number;
  updatedAt: number;
  spec: string;
}

export type RateDecision = { ok: true } | { ok: false; retryAfterMs: number };

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Takes one token for `key` if available. */
  take(key: string, spec: RateLimitSpec): RateDecision {
    const t = this.now();
    const ratePerMs = spec.count / spec.periodMs;
    let bucket = this.buckets.get(key);
    // A changed limit (policy reload) starts a fresh bucket at the new capacity.
    if (!bucket || bucket.spec !== spec.text) {
      bucket = { tokens: spec.count, updatedAt: t, spec: spec.text };
      this.buckets.set(key, bucket);
    }
    // Never refill backwards: a clock stepped back must not drive the bucket negative.
    bucket.tokens = Math.min(spec.count, bucket.tokens + Math.max(0, t - bucket.updatedAt) * ratePerMs);
    bucket.updatedAt = t;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterMs: Math.ceil((1 - bucket.tokens) / ratePerMs) };
  }

  /** Snapshot for persistence across restarts (stateDir), so a restart does not refill every bucket. */
  snapshot(): Record<string, Bucket> {
    return Object.fromEntries(this.buckets);
  }

  restore(state: Record<string, Bucket>): void {
    for (const [key, b] of Object.entries(state)) {
      if (typeof b?.tokens === 'number' && typeof b.updatedAt === 'number' && typeof b.spec === 'string') {
        this.buckets.set(key, { tokens: b.tokens, updatedAt: b.updatedAt, spec: b.spec });
      }
    }
  }
}

export function formatWait(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  const s = Math.ceil(ms / 1000);
  if (s < 120) return `${s} s`;
  const m = Math.ceil(s / 60);
  if (m < 120) return `${m} min`;
  return `${Math.ceil(m / 60)} h`;
}
