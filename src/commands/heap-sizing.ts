// V8's heap sizing in the long-running broker. Under the 64-session load V8 doubles the new space
// whenever a scavenge finds it busy (up to 16 MiB a semi-space, 32 MiB in all on 64-bit), and lets
// the old space grow up to 4× its live size before the next full collection; a long-running
// process keeps what it grew. With the new space kept at its initial size and the old space
// allowed to double, the broker's peak RSS under that load fell from 138–146 MiB to 85–93 MiB,
// for a few per cent more CPU a call (bench:http, README "Speed"). `--max-semi-space-size` and
// friends would do it too, but only on Node's command line, which also makes V8 refuse the
// bundle's code cache; these two are read each time V8 sizes the heap, so setting them at run
// time takes effect (test/reliability/heap-sizing.test.ts).
import { setFlagsFromString } from 'node:v8';

/** Each flag and the pattern by which an operator's own setting of it is recognised. */
const SETTINGS = [
  { flag: '--semi-space-growth-factor=1', given: /--(max-|min-)?semi-space/ },
  { flag: '--heap-growing-percent=100', given: /--heap-growing-percent/ },
];

/** Sets what the operator did not set on Node's command line; returns the flags it set. */
export function sizeBrokerHeap(): string[] {
  const given = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].join(' ');
  const set = SETTINGS.filter((s) => !s.given.test(given)).map((s) => s.flag);
  for (const flag of set) setFlagsFromString(flag);
  return set;
}
