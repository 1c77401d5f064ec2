import { describe, expect, it } from 'vitest';
import { Redactor, REDACTED } from '../../src/secrets/redact.js';

const secret = 'ghp_S3cr3tT0kenValue1234567890';

describe('Redactor', () => {
  const r = new Redactor();
  r.add(secret);

  it('scrubs the raw value', () => {
    expect(r.scrub(`token=${secret}; more`)).toBe(`token=${REDACTED}; more`);
  });

  it('scrubs base64 and basic-auth forms for any user name', () => {
    for (const user of ['', 'x', 'xy', 'x-access-token', 'agent']) {
      const header = Buffer.from(`${user}:${secret}`).toString('base64');
      const out = r.scrub(`Authorization: Basic ${header}`);
      expect(out).toContain(REDACTED);
      // What is left cannot be decoded back to the secret.
      const leftover = out.replace('Authorization: Basic ', '').split(REDACTED).join('');
      expect(Buffer.from(leftover, 'base64').toString('latin1')).not.toContain(secret.slice(4));
    }
    const urlSafe = Buffer.from(`?${secret}`).toString('base64url');
    expect(r.scrub(urlSafe)).toContain(REDACTED);
  });

  it('scrubs URL-encoded and hex forms', () => {
    const r2 = new Redactor();
    const odd = 'p@ss w/rd:+&=secret';
    r2.add(odd);
    expect(r2.scrub(encodeURIComponent(odd))).toBe(REDACTED);
    expect(r2.scrub(Buffer.from(odd).toString('hex'))).toBe(REDACTED);
    expect(r2.scrub(Buffer.from(odd).toString('hex').toUpperCase())).toBe(REDACTED);
    expect(r2.scrub(JSON.stringify({ v: odd }))).not.toContain('p@ss');
  });

  it('scrubs nested objects including keys', () => {
    const out = r.scrubDeep({ a: [secret, { [secret]: `x${secret}` }], n: 1 });
    expect(JSON.stringify(out)).not.toContain(secret);
    expect(out.n).toBe(1);
  });

  it('keeps a "__proto__" key as data instead of setting the prototype', () => {
    const hostile = JSON.parse(`{"__proto__": {"polluted": "${secret}"}, "a": 1}`);
    const out = r.scrubDeep(hostile) as Record<string, unknown>;
    expect(Object.keys(out)).toContain('__proto__');
    expect(JSON.stringify(out)).toContain('[redacted]');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('registers a value with a lone surrogate (no URL encoding exists) and still scrubs it', () => {
    const r4 = new Redactor();
    const odd = 'tok\ud800en-value';
    expect(r4.add(odd)).toBe(true);
    expect(r4.scrub(`x ${odd} y`)).toBe(`x ${REDACTED} y`);
    expect(r4.scrub(JSON.stringify({ v: odd }))).not.toContain('en-value');
  });

  it('refuses to register values too short to redact safely', () => {
    const r3 = new Redactor();
    expect(r3.add('abc')).toBe(false);
    expect(r3.scrub('abc')).toBe('abc');
  });
});
