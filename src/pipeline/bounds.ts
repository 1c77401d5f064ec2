// Bounds on the work one call may cause, checked before any of that work is done. Redaction,
// audit truncation and canonical hashing all walk a call's arguments; a walk is only linear if
// the arguments are bounded first, so a hostile session cannot stall the event loop (and with
// it every other team) by sending one huge object.
import { createHash } from 'node:crypto';

/** Most JSON values (container, member or item) in one call's arguments. */
export const MAX_ARGUMENT_VALUES = 10_000;
/** Most keys in one object of a call's arguments. */
export const MAX_ARGUMENT_KEYS = 1_000;
/** Deepest nesting of a call's arguments. */
export const MAX_ARGUMENT_DEPTH = 32;

/**
 * Why `value` is over the bounds above, or undefined. Walks at most MAX_ARGUMENT_VALUES values
 * (it stops at the first bound passed), so the check itself is bounded.
 */
export function argumentBoundProblem(value: unknown): string | undefined {
  let values = 0;
  const stack: { v: unknown; depth: number }[] = [{ v: value, depth: 1 }];
  while (stack.length > 0) {
    const { v, depth } = stack.pop()!;
    if (++values > MAX_ARGUMENT_VALUES) return `arguments hold more than ${MAX_ARGUMENT_VALUES} values`;
    if (v === null || typeof v !== 'object') continue;
    if (depth > MAX_ARGUMENT_DEPTH) return `arguments nest deeper than ${MAX_ARGUMENT_DEPTH} levels`;
    if (Array.isArray(v)) {
      if (v.length > MAX_ARGUMENT_VALUES) return `arguments hold more than ${MAX_ARGUMENT_VALUES} values`;
      for (const item of v) stack.push({ v: item, depth: depth + 1 });
      continue;
    }
    let keys = 0;
    for (const key in v) {
      if (!Object.hasOwn(v, key)) continue;
      if (++keys > MAX_ARGUMENT_KEYS)
        return `an object in the arguments has more than ${MAX_ARGUMENT_KEYS} keys`;
      stack.push({ v: (v as Record<string, unknown>)[key], depth: depth + 1 });
    }
  }
  return undefined;
}

/** What an audit record keeps of arguments that were not recorded: their size and digest. */
export function unrecordedSummary(value: unknown, why: string): string {
  let json: string;
  try {
    json = JSON.stringify(value) ?? 'null';
  } catch {
    return `[not recorded: ${why}]`;
  }
  const bytes = Buffer.byteLength(json);
  const hex = createHash('sha256').update(json).digest('hex');
  return `[not recorded: ${why}; ${bytes} bytes, sha256:${hex}]`;
}
