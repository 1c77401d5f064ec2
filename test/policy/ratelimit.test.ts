import { describe, expect, it } from 'vitest';
import { parseRateLimit, rateLimitSchema } from '../../src/policy/ratelimit-spec.js';

describe('rateLimit', () => {
  it('parses N/period in long and short forms', () => {
    expect(rateLimitSchema.parse('10/hour')).toEqual({ count: 10, periodMs: 3_600_000, text: '10/hour' });
    expect(rateLimitSchema.parse('1/second')).toEqual({ count: 1, periodMs: 1_000, text: '1/second' });
    expect(rateLimitSchema.parse('5/minute').periodMs).toBe(60_000);
    expect(rateLimitSchema.parse('7/day').periodMs).toBe(86_400_000);
    expect(rateLimitSchema.parse('3/s').periodMs).toBe(1_000);
    expect(rateLimitSchema.parse('3/sec').periodMs).toBe(1_000);
    expect(rateLimitSchema.parse('3/min').periodMs).toBe(60_000);
    expect(rateLimitSchema.parse('3/h').periodMs).toBe(3_600_000);
    expect(rateLimitSchema.parse('3/d').periodMs).toBe(86_400_000);
    expect(rateLimitSchema.parse(' 20 / minute ')).toEqual({
      count: 20,
      periodMs: 60_000,
      text: '20 / minute',
    });
  });

  it('rejects anything else', () => {
    for (const bad of [
      '10',
      '10/m',
      '10/hours',
      '10/week',
      '0/hour',
      '-1/hour',
      '1.5/hour',
      '/hour',
      '99999999999/day',
      '10/hour/x',
    ]) {
      expect(typeof parseRateLimit(bad), bad).toBe('string');
      expect(rateLimitSchema.safeParse(bad).success, bad).toBe(false);
    }
    expect(rateLimitSchema.safeParse(10).success).toBe(false);
    expect(rateLimitSchema.safeParse({ count: 1, periodMs: 1 }).success).toBe(false);
  });
});
