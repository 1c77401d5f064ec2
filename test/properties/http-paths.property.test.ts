// Property of the http server's path decisions: however a path is spelled (percent-encoded
// characters, dot segments, backslashes, path parameters), a spelling is only ever allowed if
// the path it means is allowed, and it reaches the upstream as that path.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkRequest } from '../../servers/http/http_request.js';
import { httpSectionSchema } from '../../servers/http/section.js';

const ORIGIN = 'https://api.example.com';
const section = httpSectionSchema.parse({
  hosts: [{ origin: ORIGIN, methods: ['GET'], paths: ['/v1/public/**', '/v1/items/*'] }],
});

const name = fc.string({
  unit: fc.constantFrom(...'abcdeipmnstu019-_'.split('')),
  minLength: 1,
  maxLength: 8,
});
/** Paths as segments, biased towards the allowed prefixes and the names around them. */
const segments = fc
  .tuple(
    fc.constantFrom(['v1', 'public'], ['v1', 'items'], ['v1', 'admin'], ['v1'], ['v2', 'public']),
    fc.array(fc.oneof(name, fc.constantFrom('public', 'items', 'admin')), { maxLength: 3 }),
  )
  .map(([head, tail]) => [...head, ...tail]);

/** One way of writing a segment sequence that a server would read as the same path. */
const spelling = (segs: string[]) =>
  fc
    .array(
      fc.oneof(
        { arbitrary: fc.constant('plain'), weight: 8 },
        {
          arbitrary: fc.constantFrom(
            'pct-lower',
            'pct-upper',
            'dot',
            'dotdot',
            'pct-dot',
            'backslash',
            'param',
          ),
          weight: 2,
        },
      ),
      {
        minLength: segs.length,
        maxLength: segs.length,
      },
    )
    .map((ways) => {
      let out = '';
      segs.forEach((seg, i) => {
        const sep = ways[i] === 'backslash' ? '\\' : '/';
        switch (ways[i]) {
          case 'pct-lower':
          case 'pct-upper': {
            const k = seg.length - 1;
            const hex = seg.charCodeAt(k).toString(16);
            out += `${sep}${seg.slice(0, k)}%${ways[i] === 'pct-upper' ? hex.toUpperCase() : hex}`;
            break;
          }
          case 'dot':
            out += `/.${sep}${seg}`;
            break;
          case 'dotdot':
            out += `/zz/..${sep}${seg}`;
            break;
          case 'pct-dot':
            out += `/zz/%2e%2e/${seg}`;
            break;
          case 'param':
            out += `${sep}${seg};x=1`;
            break;
          default:
            out += `${sep}${seg}`;
        }
      });
      return out;
    });

const decodeUnreserved = (p: string) =>
  p.replace(/%([0-9a-f]{2})/gi, (m, h: string) => {
    const c = String.fromCharCode(parseInt(h, 16));
    return /[A-Za-z0-9._~-]/.test(c) ? c : m;
  });

describe('http path properties', () => {
  it('a spelling is allowed only if the path it means is, and is forwarded as that path', () => {
    let allowed = 0;
    fc.assert(
      fc.property(
        segments.chain((segs) => fc.tuple(fc.constant(segs), spelling(segs))),
        ([segs, spelled]) => {
          const canonical = '/' + segs.join('/');
          const meant = checkRequest(section, 'GET', `${ORIGIN}${canonical}`);
          const asSpelled = checkRequest(section, 'GET', `${ORIGIN}${spelled}`);
          if (asSpelled.decision.allow) {
            allowed++;
            expect(meant.decision.allow).toBe(true);
            expect(asSpelled.decision.rule).toBe(meant.decision.rule);
            // What goes upstream is the checked path, decoding to the meant one.
            expect(decodeUnreserved(asSpelled.url!.pathname)).toBe(canonical);
          }
        },
      ),
      { numRuns: 500 },
    );
    // Not vacuous: many spellings were allowed (and checked above).
    expect(allowed).toBeGreaterThan(50);
  });
});
