// Policy globs: `*` matches within one segment, `**` across segments, `?` one character.
// picomatch is the small, well-kept matcher behind most Node tooling; we only pin its options
// (no dotfile magic, no brace/extglob surprises in a security policy) and validate patterns:
// a brace list is refused with a message rather than matched literally.
import picomatch from 'picomatch';
import { z } from 'zod';

const OPTIONS: picomatch.PicomatchOptions = {
  dot: true,
  nobrace: true,
  noextglob: true,
  nonegate: true,
  strictBrackets: true,
  strictSlashes: true,
};

const cache = new Map<string, picomatch.Matcher>();

function matcher(pattern: string): picomatch.Matcher {
  let m = cache.get(pattern);
  if (!m) {
    m = picomatch(pattern, OPTIONS);
    cache.set(pattern, m);
  }
  return m;
}

/** Returns why `pattern` is not a usable glob, or undefined when it is. */
export function globProblem(pattern: string): string | undefined {
  if (pattern.length === 0) return 'empty glob';
  if (/[\0\r\n]/.test(pattern)) return 'glob contains a control character';
  if (/\*\*\*/.test(pattern)) return `bad glob "${pattern}": "***" is not a pattern (use "*" or "**")`;
  if (pattern.startsWith('!'))
    return `bad glob "${pattern}": negation is not supported; list what is allowed`;
  // Braces are matched literally (nobrace), so `{a,b}` would silently match nothing the author meant.
  if (/\{[^{}]*(,|\.\.)[^{}]*\}/.test(pattern))
    return `bad glob "${pattern}": braces ({a,b}) are not supported; list each pattern separately`;
  try {
    picomatch.makeRe(pattern, OPTIONS);
  } catch (err) {
    return `bad glob "${pattern}": ${(err as Error).message}`;
  }
  let depth = 0;
  for (const ch of pattern) {
    if (ch === '[') depth++;
    else if (ch === ']') depth--;
    if (depth < 0 || depth > 1) return `bad glob "${pattern}": unbalanced brackets`;
  }
  if (depth !== 0) return `bad glob "${pattern}": unbalanced brackets`;
  return undefined;
}

export function matchGlob(pattern: string, value: string): boolean {
  return matcher(pattern)(value);
}

export function matchAny(patterns: readonly string[], value: string): string | undefined {
  return patterns.find((p) => matchGlob(p, value));
}

/** A zod string that must be a valid glob (reported at the glob's own position by policy check). */
export const globSchema = z.string().superRefine((value, ctx) => {
  const problem = globProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});
