// untilAborted gives up on work when the call is aborted; the work's own failure, which nobody
// waits for any more, must never become an unhandled rejection: in the broker that ends the
// process for every team (found by CI: a cancelled http_request whose upstream then failed).
import { afterEach, describe, expect, it } from 'vitest';
import { untilAborted } from '../../src/pipeline/abort.js';

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => void unhandled.push(reason);
process.on('unhandledRejection', onUnhandled);
afterEach(() => {
  unhandled.length = 0;
});

/** Lets rejections settle: Node reports unhandled ones after the microtask queue drains. */
const settle = () => new Promise((r) => setTimeout(r, 20));

describe('untilAborted', () => {
  it('an already aborted signal: rejects with its reason, and the work failing later is handled', async () => {
    const controller = new AbortController();
    controller.abort(new Error('cancelled'));
    let fail!: (err: Error) => void;
    const work = new Promise<never>((_, reject) => (fail = reject));
    await expect(untilAborted(work, controller.signal)).rejects.toThrow('cancelled');
    fail(new Error('upstream failed after the cancel'));
    await settle();
    expect(unhandled).toEqual([]);
  });

  it('aborted while waiting: rejects with the reason, and the work failing afterwards is handled', async () => {
    const controller = new AbortController();
    let fail!: (err: Error) => void;
    const work = new Promise<never>((_, reject) => (fail = reject));
    const waiting = untilAborted(work, controller.signal);
    controller.abort(new Error('cancelled'));
    await expect(waiting).rejects.toThrow('cancelled');
    fail(new Error('late'));
    await settle();
    expect(unhandled).toEqual([]);
  });

  it('not aborted: the work decides', async () => {
    const controller = new AbortController();
    await expect(untilAborted(Promise.resolve(7), controller.signal)).resolves.toBe(7);
    await expect(untilAborted(Promise.reject(new Error('no')), controller.signal)).rejects.toThrow('no');
  });
});
