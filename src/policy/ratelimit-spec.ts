// `rateLimit: N/period` on a tool entry. The canonical units are second, minute, hour and day
// (as in the SPEC); the usual short forms are accepted too: s/sec, min, h/hr, d — but not `m`,
// which reads as month as easily as minute. N is a whole number from 1 to 1,000,000,000.
import { z } from 'zod';

export interface RateLimit {
  count: number;
  periodMs: number;
  /** The text as written in the policy, for messages and audit reasons. */
  text: string;
}

const PERIOD_MS: Record<string, number> = {
  second: 1_000,
  sec: 1_000,
  s: 1_000,
  minute: 60_000,
  min: 60_000,
  hour: 3_600_000,
  hr: 3_600_000,
  h: 3_600_000,
  day: 86_400_000,
  d: 86_400_000,
};

const MAX_COUNT = 1_000_000_000;
const RATE_LIMIT_RE = /^\s*([0-9]+)\s*\/\s*(second|sec|s|minute|min|hour|hr|h|day|d)\s*$/;

/** Parses `10/hour`; returns a reason string when the text is not a rate limit. */
export function parseRateLimit(text: string): RateLimit | string {
  const m = RATE_LIMIT_RE.exec(text);
  if (!m) return `bad rateLimit "${text}": expected N/second, N/minute, N/hour or N/day (e.g. "10/hour")`;
  const count = Number(m[1]);
  if (!Number.isSafeInteger(count) || count < 1 || count > MAX_COUNT) {
    return `bad rateLimit "${text}": the count must be between 1 and ${MAX_COUNT}`;
  }
  return { count, periodMs: PERIOD_MS[m[2]!]!, text: text.trim() };
}

export const rateLimitSchema = z
  .string({ error: 'rateLimit must be a string such as "10/hour"' })
  .regex(RATE_LIMIT_RE, { error: (iss) => parseRateLimitMessage(String(iss.input)) })
  .transform((text, ctx): RateLimit => {
    const parsed = parseRateLimit(text);
    if (typeof parsed === 'string') {
      ctx.addIssue({ code: 'custom', message: parsed });
      return z.NEVER;
    }
    return parsed;
  })
  .describe('Calls allowed per period for this team: N/second, N/minute, N/hour or N/day (e.g. "10/hour").');

function parseRateLimitMessage(text: string): string {
  const parsed = parseRateLimit(text);
  return typeof parsed === 'string' ? parsed : 'bad rateLimit';
}
