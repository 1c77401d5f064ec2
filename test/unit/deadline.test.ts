// withDeadline (src/tool.ts): the deadline a server puts on one call's upstream requests. It must
// come even when a garbage collection runs while the call waits: AbortSignal.any over
// AbortSignal.timeout did not on Node 20, since the combined signal holds its sources weakly.
import { describe, expect, it } from 'vitest';
import { withDeadline } from '../../src/tool.js';
import { collectGarbage } from '../helpers/gc.js';

/** Waits for the signal to abort and rejects with its reason. */
const untilAborted = (signal: AbortSignal) =>
  new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason as Error);
    else signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
  });

describe('withDeadline', () => {
  it('aborts with a TimeoutError after ms, with collections running all the while', async () => {
    const gcs = setInterval(collectGarbage, 10);
    try {
      const started = Date.now();
      const err = await withDeadline(new AbortController().signal, 200, untilAborted).catch((e: Error) => e);
      expect((err as Error).name).toBe('TimeoutError');
      expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    } finally {
      clearInterval(gcs);
    }
  });

  it("passes the parent's abort and its reason through, at once or later", async () => {
    const before = new AbortController();
    before.abort(new Error('session closed'));
    await expect(withDeadline(before.signal, 60_000, untilAborted)).rejects.toThrow('session closed');

    const later = new AbortController();
    const pending = withDeadline(later.signal, 60_000, untilAborted);
    later.abort(new Error('broker draining'));
    await expect(pending).rejects.toThrow('broker draining');
  });

  it('leaves nothing behind once fn settles: no timer, no listener on the parent', async () => {
    const parent = new AbortController();
    let inner: AbortSignal | undefined;
    const value = await withDeadline(parent.signal, 50, async (signal) => {
      inner = signal;
      return 7;
    });
    expect(value).toBe(7);
    await new Promise((r) => setTimeout(r, 120));
    expect(inner!.aborted).toBe(false);
    parent.abort();
    expect(inner!.aborted).toBe(false);
  });
});
