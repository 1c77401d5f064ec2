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

describe('Redactor.remove', () => {
  const encodings = (value: string) => [
    value,
    Buffer.from(value).toString('base64'),
    Buffer.from(value).toString('hex'),
    Buffer.from(`x-access-token:${value}`).toString('base64'),
  ];

  it('stops redacting the removed value in every form and keeps redacting the others', () => {
    const gone = 'ghs_ExpiredInstallationToken000000001';
    const kept = 'ghs_LiveInstallationToken0000000000002';
    const r = new Redactor();
    r.add(kept);
    r.add(gone);
    r.remove(gone);
    expect(r.size).toBe(1);
    for (const text of encodings(gone)) expect(r.scrub(`a ${text} b`)).toBe(`a ${text} b`);
    for (const text of encodings(kept)) {
      const out = r.scrub(`a ${text} b`);
      expect(out).toContain(REDACTED);
      expect(out).not.toContain(text);
    }
    // Long texts take the scan instead of the alternation: the same there.
    const long = 'x'.repeat(4000);
    expect(r.scrub(`${long}${gone}${long}${kept}`)).toBe(`${long}${gone}${long}${REDACTED}`);
    expect(r.contains(gone)).toBe(false);
    expect(r.contains(kept)).toBe(true);
  });

  it('keeps a form another registered value also has, and removing twice or an unknown value changes nothing', () => {
    // The second value is the first's base64: that form belongs to both.
    const first = 'ghs_SharedFormOwnerToken00000000000003';
    const second = Buffer.from(first).toString('base64');
    const r = new Redactor();
    r.add(first);
    r.add(second);
    r.remove(first);
    r.remove(first);
    r.remove('never-registered-value-0000000');
    expect(r.scrub(`a ${second} b`)).toBe(`a ${REDACTED} b`);
    expect(r.scrub(`a ${first} b`)).toBe(`a ${first} b`);
    // And the other way round: removing the value whose form it is leaves the owner's.
    const r2 = new Redactor();
    r2.add(first);
    r2.add(second);
    r2.remove(second);
    expect(r2.scrub(`a ${second} b`)).toContain(REDACTED);
    expect(r2.scrub(`a ${second} b`)).not.toContain(second);
  });

  it('with every value removed, nothing is redacted and adding again works', () => {
    const value = 'ghs_AddRemoveAddToken00000000000000004';
    const r = new Redactor();
    r.add(value);
    r.remove(value);
    expect(r.size).toBe(0);
    expect(r.scrub(`a ${value} b`)).toBe(`a ${value} b`);
    r.add(value);
    expect(r.scrub(`a ${value} b`)).toBe(`a ${REDACTED} b`);
  });

  it('stays exact with many values added and half removed (scan and buckets, no alternation)', () => {
    const values = Array.from({ length: 300 }, (_, i) => `ghs_ManyTokens${String(i).padStart(24, '0')}`);
    const r = new Redactor();
    for (const v of values) r.add(v);
    for (const v of values.filter((_, i) => i % 2 === 0)) r.remove(v);
    values.forEach((v, i) => {
      expect(r.scrub(`<${v}>`)).toBe(i % 2 === 0 ? `<${v}>` : `<${REDACTED}>`);
    });
  });
});
