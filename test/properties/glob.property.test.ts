// Properties of policy globs: what `*` and `**` must never match, whatever the segment text.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { matchGlob } from '../../src/policy/glob.js';
import { checkRequest } from '../../servers/http/http_request.js';
import { httpSectionSchema } from '../../servers/http/section.js';

/** Segment text: letters, digits and the punctuation URLs carry, but no "/" and no "%". */
const segmentChar = fc.constantFrom(..."abcxyzABC019-_.~!$&'()*+,=:@".split(''));
const segment = fc
  .string({ unit: segmentChar, minLength: 1, maxLength: 12 })
  .filter((s) => s !== '.' && s !== '..');

describe('glob properties', () => {
  it('"*" matches exactly one segment: never a "/"', () => {
    fc.assert(
      fc.property(segment, segment, (a, b) => {
        expect(matchGlob('/v1/*', `/v1/${a}`)).toBe(true);
        expect(matchGlob('/v1/*', `/v1/${a}/${b}`)).toBe(false);
        expect(matchGlob('/v1/*/x', `/v1/${a}/${b}/x`)).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it('neither "*" nor "**" matches a "." or ".." segment', () => {
    fc.assert(
      fc.property(
        fc.array(segment, { maxLength: 3 }),
        fc.constantFrom('.', '..'),
        fc.array(segment, { maxLength: 3 }),
        (before, dots, after) => {
          const value = '/' + ['v1', ...before, dots, ...after].join('/');
          expect(matchGlob('/v1/**', value)).toBe(false);
          if (before.length === 0 && after.length === 0) expect(matchGlob('/v1/*', value)).toBe(false);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('an encoded separator inside a segment never reaches a glob: the request is refused first', () => {
    const section = httpSectionSchema.parse({
      hosts: [{ origin: 'https://api.example.com', paths: ['/v1/*', '/v1/**'] }],
    });
    const encoded = fc.constantFrom('%2f', '%2F', '%5c', '%5C', '%2e', '%2E', '%00', '%252f', '%3b', ';');
    fc.assert(
      fc.property(segment, encoded, segment, (a, sep, b) => {
        const { decision } = checkRequest(section, 'GET', `https://api.example.com/v1/${a}${sep}${b}`);
        expect(decision.allow).toBe(false);
      }),
      { numRuns: 300 },
    );
  });
});
