// Rate limits and retries for the github server's Octokit: one request hook instead of
// @octokit/plugin-throttling and @octokit/plugin-retry. Both plugins schedule every request through
// Bottleneck, whose datastore yields to the event loop with setTimeout(0) at each step; that cost
// ~5 ms (retry) and ~10 ms (throttling) per request against a loopback API, on requests that were
// never rate limited (bench/github.ts, README "GitHub"). This hook keeps their behaviour and waits
// only when there is something to wait for:
// - at most MAX_CONCURRENT requests in flight per client (the throttling plugin's global group);
// - writes start at least WRITE_SPACING_MS apart, and writes that notify people (issues, comments,
//   pull requests) NOTIFY_SPACING_MS apart, as GitHub asks of integrations;
// - a primary rate limit (x-ratelimit-remaining: 0, wait until x-ratelimit-reset) or a secondary one
//   (403/429 saying so, or carrying Retry-After; wait Retry-After, else a minute) is retried at most
//   `rateLimitRetries` times, and only when the wait is at most `maxRateLimitWaitS`; otherwise the
//   error goes to the caller at once, which turns it into a message saying when to retry;
// - a 5xx or a network failure is retried `retries` times (per request `request.retries`), after
//   1 s, 4 s, …; a 4xx is not (it would fail the same way again);
// - every wait ends when the request's signal aborts (the session closed or the deadline passed).
import type { Octokit } from '@octokit/rest';

export const MAX_CONCURRENT = 10;
export const WRITE_SPACING_MS = 1000;
export const NOTIFY_SPACING_MS = 3000;
/** A secondary rate limit without Retry-After: GitHub says to wait at least a minute. */
const SECONDARY_FALLBACK_S = 60;

export interface GithubLimitsOptions {
  /** Retries after a 5xx or network failure (a request's `request.retries` overrides it). */
  retries: number;
  /** Retries after a rate limit. */
  rateLimitRetries: number;
  /** A rate-limit wait longer than this is not waited for. */
  maxRateLimitWaitS: number;
}

interface RequestOptions {
  method: string;
  url: string;
  request?: { signal?: AbortSignal; retries?: number };
}

interface ErrorLike {
  status?: number;
  message?: string;
  response?: { headers?: Record<string, unknown>; data?: unknown };
}

/**
 * Writes that notify people (create an issue, comment, open or review a pull request), by path:
 * Octokit passes the route template (`{owner}`), a URL has the values; either matches.
 */
const NOTIFYING =
  /^\/repos\/[^/]+\/[^/]+\/(issues|issues\/[^/]+\/comments|pulls|pulls\/[^/]+\/(comments|reviews|requested_reviewers|merge))$/;

/** What to do after a failed try: wait this many seconds and retry, or give up. */
export function retryDecision(
  err: unknown,
  counts: { server: number; rateLimit: number },
  retries: number,
  opts: GithubLimitsOptions,
  nowMs = Date.now(),
): { waitS: number; kind: 'server' | 'rateLimit' } | undefined {
  const e = err as ErrorLike;
  const status = e?.status;
  if (typeof status !== 'number') return undefined;
  const headers = e.response?.headers ?? {};
  const header = (name: string) => {
    const v = headers[name];
    return typeof v === 'string' || typeof v === 'number' ? String(v) : undefined;
  };
  if (status === 403 || status === 429) {
    let waitS: number | undefined;
    const said = `${e.message ?? ''} ${(e.response?.data as { message?: unknown })?.message ?? ''}`;
    if (header('x-ratelimit-remaining') === '0') {
      // One second past the reset, as GitHub advises.
      const reset = Number(header('x-ratelimit-reset'));
      waitS = Number.isFinite(reset) ? Math.max(0, Math.ceil(reset - nowMs / 1000) + 1) : undefined;
    } else if (/\bsecondary rate\b/i.test(said) || header('retry-after') !== undefined || status === 429) {
      const after = Number(header('retry-after'));
      waitS = Number.isFinite(after) && after > 0 ? after : SECONDARY_FALLBACK_S;
    }
    if (waitS === undefined) return undefined;
    return counts.rateLimit < opts.rateLimitRetries && waitS <= opts.maxRateLimitWaitS
      ? { waitS, kind: 'rateLimit' }
      : undefined;
  }
  if (status >= 500 && counts.server < retries) return { waitS: (counts.server + 1) ** 2, kind: 'server' };
  return undefined;
}

/** A counting semaphore: at most `max` holders, the rest wait in order. */
class Semaphore {
  private held = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly max: number) {}

  async acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.held >= this.max) {
      await new Promise<void>((resolve, reject) => {
        const wake = () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = () => {
          const i = this.waiting.indexOf(wake);
          if (i >= 0) this.waiting.splice(i, 1);
          reject(signal!.reason as Error);
        };
        signal?.addEventListener('abort', onAbort, { once: true });
        this.waiting.push(wake);
      });
    } else this.held++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      // The slot passes straight to the next waiter.
      if (next) next();
      else this.held--;
    };
  }
}

/** Resolves after `ms`, or rejects when the signal aborts first. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Installs the hook on one Octokit: its limits are that client's (one per team). */
export function installGithubLimits(octokit: Octokit, opts: GithubLimitsOptions): void {
  const inFlight = new Semaphore(MAX_CONCURRENT);
  let nextWriteAt = 0;
  let nextNotifyAt = 0;

  /** Reserves the start time of a write now (no race between concurrent writes), then waits for it. */
  async function writeSlot(url: string, signal?: AbortSignal): Promise<void> {
    const notifies = NOTIFYING.test(url.split('?')[0]!);
    const slot = Math.max(Date.now(), nextWriteAt, notifies ? nextNotifyAt : 0);
    nextWriteAt = slot + WRITE_SPACING_MS;
    if (notifies) nextNotifyAt = slot + NOTIFY_SPACING_MS;
    await sleep(slot - Date.now(), signal);
  }

  octokit.hook.wrap('request', async (request, options) => {
    const o = options as unknown as RequestOptions;
    const signal = o.request?.signal;
    const write = o.method !== 'GET' && o.method !== 'HEAD';
    const retries = o.request?.retries ?? opts.retries;
    const counts = { server: 0, rateLimit: 0 };
    for (;;) {
      if (write) await writeSlot(o.url, signal);
      const release = await inFlight.acquire(signal);
      try {
        return await request(options);
      } catch (err) {
        if (signal?.aborted) throw err;
        const next = retryDecision(err, counts, retries, opts);
        if (!next) throw err;
        counts[next.kind]++;
        release();
        await sleep(next.waitS * 1000, signal);
      } finally {
        release();
      }
    }
  });
}
