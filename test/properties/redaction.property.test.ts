// Properties of redaction: a secret embedded in random text, in JSON, in base64, hex or URL
// encoding, or split across stream chunks, is always removed, and nothing else changes.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { REDACTED, Redactor, secretVariants } from '../../src/secrets/redact.js';
import { StreamScrubber } from '../../src/model/proxy.js';

const secretArb = fc.string({
  unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-'.split('')),
  minLength: 12,
  maxLength: 40,
});
/** Text that cannot itself form (part of) any encoding of an alphanumeric secret. */
const filler = fc.string({ unit: fc.constantFrom(...' \n\t,;:!?()[]{}#|'.split('')), maxLength: 30 });

const redactorFor = (secret: string) => {
  const r = new Redactor();
  r.add(secret);
  return r;
};

/** Every base64 window of `text` decoded, at each of the four offsets. */
function base64Readings(text: string): string[] {
  const out: string[] = [];
  for (const run of text.split(/[^A-Za-z0-9+/=_-]+/)) {
    for (let i = 0; i < 4; i++) {
      const std = run.slice(i).replace(/-/g, '+').replace(/_/g, '/');
      out.push(Buffer.from(std, 'base64').toString('latin1'));
    }
  }
  return out;
}

describe('redaction properties', () => {
  it('removes the secret from random text and changes nothing else', () => {
    fc.assert(
      fc.property(
        secretArb,
        filler,
        filler,
        fc.integer({ min: 1, max: 3 }),
        (secret, before, after, times) => {
          const text = before + Array.from({ length: times }, () => secret).join(after) + after;
          const expected = before + Array.from({ length: times }, () => REDACTED).join(after) + after;
          expect(redactorFor(secret).scrub(text)).toBe(expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('never leaves the secret in arbitrary surrounding text', () => {
    fc.assert(
      fc.property(secretArb, fc.string(), fc.string(), (secret, before, after) => {
        expect(redactorFor(secret).scrub(before + secret + after)).not.toContain(secret);
      }),
      { numRuns: 300 },
    );
  });

  it('removes it from JSON, however deep, keys included, and keeps the rest', () => {
    fc.assert(
      fc.property(secretArb, fc.jsonValue({ maxDepth: 3 }), (secret, other) => {
        const value = { a: [other, `x ${secret} y`], [`k-${secret}`]: { b: secret } };
        const scrubbed = redactorFor(secret).scrubDeep(value);
        expect(JSON.stringify(scrubbed)).not.toContain(secret);
        expect(scrubbed).toEqual({ a: [other, `x ${REDACTED} y`], [`k-${REDACTED}`]: { b: REDACTED } });
        // And in the serialized text, with slashes escaped as some encoders write them.
        expect(redactorFor(secret).scrub(JSON.stringify(value).replace(/\//g, '\\/'))).not.toContain(secret);
      }),
      { numRuns: 200 },
    );
  });

  it('removes base64 (standard and URL-safe, any alignment), hex and URL-encoded forms', () => {
    fc.assert(
      fc.property(
        secretArb,
        fc.string({ maxLength: 12 }),
        fc.string({ maxLength: 12 }),
        (secret, before, after) => {
          const r = redactorFor(secret);
          const bytes = Buffer.from(before + secret + after, 'utf8');
          for (const encoded of [bytes.toString('base64'), bytes.toString('base64url')]) {
            for (const reading of base64Readings(r.scrub(encoded))) expect(reading).not.toContain(secret);
          }
          expect(r.scrub(bytes.toString('hex'))).not.toContain(Buffer.from(secret).toString('hex'));
          expect(r.scrub(Buffer.from(secret).toString('hex').toUpperCase())).toBe(REDACTED);
          expect(
            decodeURIComponent(
              r.scrub(encodeURIComponent(before + secret + after)).replace(/%(?![0-9A-F]{2})/g, '%25'),
            ),
          ).not.toContain(secret);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('a stream scrubber removes a secret split across any chunk boundaries and passes other bytes unchanged', () => {
    fc.assert(
      fc.property(
        secretArb,
        fc.string({ maxLength: 200 }),
        fc.string({ maxLength: 200 }),
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }),
        (secret, before, after, cuts) => {
          const r = redactorFor(secret);
          const body = Buffer.from(`${before}${secret}${after}`, 'latin1');
          const clean = Buffer.from(`${before}${after}`.replace(/[^\x20-\x7e]/g, ''), 'latin1');
          for (const input of [body, clean]) {
            const scrubber = new StreamScrubber(r, secret);
            const out: Buffer[] = [];
            let at = 0;
            for (const n of cuts) {
              if (at >= input.length) break;
              out.push(scrubber.push(input.subarray(at, at + n)));
              at += n;
            }
            if (at < input.length) out.push(scrubber.push(input.subarray(at)));
            out.push(scrubber.flush());
            const text = Buffer.concat(out).toString('latin1');
            expect(text).not.toContain(secret);
            if (input === clean && !r.contains(clean.toString('latin1')))
              expect(text).toBe(clean.toString('latin1'));
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  // The scrubber picks, per call, a RegExp alternation of every form (small sets, short texts) or
  // a scan by four-unit prefix (large sets, long texts). Both must give exactly what the plain
  // alternation (longest form first, leftmost match) gives, whichever is taken.
  it('gives what one alternation of every form gives, for any number of secrets and any text', () => {
    const reference = (secrets: string[], text: string) => {
      const forms = [...new Set(secrets.flatMap((v) => secretVariants(v)))].sort(
        (a, b) => b.length - a.length,
      );
      const escaped = forms.map((f) => f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
      return text.replace(new RegExp(escaped.join('|'), 'g'), REDACTED);
    };
    const anyUnit = fc.oneof(
      fc.constantFrom(...'ab01+/=_-%"\\ \n\u00e9\u00ff'.split('')),
      fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)),
    );
    fc.assert(
      fc.property(
        fc.array(fc.oneof(secretArb, fc.string({ unit: anyUnit, minLength: 4, maxLength: 24 })), {
          minLength: 1,
          maxLength: 40,
        }),
        fc.array(
          fc.tuple(fc.string({ unit: anyUnit, maxLength: 60 }), fc.nat(), fc.nat(), fc.nat({ max: 4 })),
          {
            maxLength: 40,
          },
        ),
        (secrets, pieces) => {
          const r = new Redactor();
          for (const v of secrets) r.add(v);
          // Text: random units with forms of the secrets (whole, cut or doubled) among them.
          let text = '';
          for (const [noise, which, form, how] of pieces) {
            const forms = secretVariants(secrets[which % secrets.length]!);
            const f = forms[form % forms.length] ?? '';
            text += noise + (how === 0 ? f.slice(1) : how === 1 ? f + f : how === 2 ? f.slice(0, -1) : f);
          }
          // Short and long texts both (the scan takes texts past 512 units when the set is large).
          for (const t of [text, text.repeat(Math.ceil(600 / Math.max(1, text.length)))]) {
            const expected = reference(secrets, t);
            expect(r.scrub(t)).toBe(expected);
            expect(r.contains(t)).toBe(expected !== t);
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});
