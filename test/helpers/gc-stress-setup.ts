// Every test worker runs a full garbage collection every 100 ms (vitest.config.ts), so anything
// that only works while a collection has not yet run (a deadline, listener or handle held weakly,
// as AbortSignal.any holds its sources on Node 20) fails every time instead of once in a while.
// More often than that, collections take most of the CPU and slow tests fail for being slow.
import { collectGarbage } from './gc.js';

setInterval(collectGarbage, 100).unref();
