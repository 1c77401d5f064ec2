import { describe, expect, it } from 'vitest';
import { httpServer, type HttpSection } from '../../servers/http/index.js';
import { checkRequest, httpRequestTool } from '../../servers/http/http_request.js';
import { makeContext, parseSection } from './context.js';

const stripe = parseSection({
  hosts: [
    {
      origin: 'https://api.stripe.com',
      methods: ['GET'],
      paths: ['/v1/charges*'],
      inject: { header: 'Authorization', value: 'Bearer ${secret:stripe-key}' },
    },
    { origin: 'https://api.example.com', methods: ['GET', 'POST'], paths: ['/v1/**'] },
    { origin: 'https://api.example.com', methods: ['DELETE'], paths: ['/v1/items/*'] },
    { origin: 'http://127.0.0.1:8080' },
    { origin: 'http://10.0.0.5:8080', allowPrivateAddress: true },
  ],
});

function decide(method: string, url: string, section: HttpSection = stripe) {
  return httpRequestTool.authorize({ method: method as 'GET', url }, makeContext(section));
}

describe('http policy section', () => {
  it('fills documented defaults', () => {
    const s = parseSection({ hosts: [{ origin: 'https://api.example.com' }] });
    expect(s).toEqual({
      hosts: [
        { origin: 'https://api.example.com', methods: ['GET'], paths: ['/**'], allowPrivateAddress: false },
      ],
      maxResponseBytes: 1048576,
      timeoutMs: 10000,
    });
  });

  it.each([
    ['https://api.stripe.com/', /write the origin as https:\/\/api.stripe.com/],
    ['https://api.stripe.com/v1', /write the origin as/],
    ['https://api.stripe.com?x=1', /write the origin as/],
    ['https://user:pw@api.stripe.com', /user info/],
    ['https://API.stripe.com', /write the origin as https:\/\/api.stripe.com/],
    ['https://api.stripe.com:443', /write the origin as https:\/\/api.stripe.com/],
    ['ftp://files.example.com', /http: or https:/],
    ['api.stripe.com', /not a URL/],
    ['http://169.254.169.254', /metadata/],
    ['http://metadata.google.internal', /metadata/],
  ])('refuses origin %s', (origin, message) => {
    const result = httpServer.section.safeParse({ hosts: [{ origin }] });
    expect(result.success).toBe(false);
    expect(result.error!.issues[0]!.message).toMatch(message);
    expect(result.error!.issues[0]!.path).toEqual(['hosts', 0, 'origin']);
  });

  it.each([
    [{ header: 'Bad Header', value: 'x' }, /header name/],
    [{ header: 'Host', value: 'x' }, /set by the client/],
    [{ header: 'X-Key', value: '${env:HOME}' }, /only substitution/],
    [{ header: 'X-Key', value: '${secret:}' }, /only substitution/],
    [{ header: 'X-Key', value: 'a\r\nEvil: 1' }, /CR, LF or NUL/],
  ])('refuses inject %j', (inject, message) => {
    const result = httpServer.section.safeParse({ hosts: [{ origin: 'https://a.example', inject }] });
    expect(result.success).toBe(false);
    expect(result.error!.issues[0]!.message).toMatch(message);
  });

  it('refuses lower-case methods, bad globs and unknown keys', () => {
    expect(
      httpServer.section.safeParse({ hosts: [{ origin: 'https://a.example', methods: ['get'] }] }).success,
    ).toBe(false);
    expect(
      httpServer.section.safeParse({ hosts: [{ origin: 'https://a.example', methods: ['TRACE'] }] }).success,
    ).toBe(false);
    expect(
      httpServer.section.safeParse({ hosts: [{ origin: 'https://a.example', paths: ['!/x'] }] }).success,
    ).toBe(false);
    expect(httpServer.section.safeParse({ hosts: [{ origin: 'https://a.example', extra: 1 }] }).success).toBe(
      false,
    );
    expect(
      httpServer.section.safeParse({ hosts: [{ origin: 'https://a.example' }], tools: {} }).success,
    ).toBe(false);
  });

  it('lists every secret reference with its path', () => {
    const s = parseSection({
      hosts: [
        { origin: 'https://a.example' },
        {
          origin: 'https://b.example',
          inject: { header: 'X-Auth', value: '${secret:user}:${secret:pass.word}' },
        },
      ],
    });
    expect(httpServer.secretRefs(s)).toEqual([
      { name: 'user', path: ['hosts', 1, 'inject', 'value'] },
      { name: 'pass.word', path: ['hosts', 1, 'inject', 'value'] },
    ]);
    expect(httpServer.secretRefs(stripe)).toEqual([
      { name: 'stripe-key', path: ['hosts', 0, 'inject', 'value'] },
    ]);
  });

  it('declares one honest tool', () => {
    expect(httpServer.name).toBe('http');
    expect(httpServer.tools.map((t) => t.name)).toEqual(['http_request']);
    expect(httpRequestTool.annotations).toMatchObject({ readOnlyHint: false, openWorldHint: true });
  });
});

describe('http_request authorize', () => {
  it('allows a request matching origin, method and path of one entry', () => {
    expect(decide('GET', 'https://api.stripe.com/v1/charges?limit=3')).toEqual({
      allow: true,
      rule: 'http.hosts[0]',
    });
    expect(decide('GET', 'https://API.STRIPE.COM:443/v1/charges_x')).toEqual({
      allow: true,
      rule: 'http.hosts[0]',
    });
    expect(decide('DELETE', 'https://api.example.com/v1/items/7')).toEqual({
      allow: true,
      rule: 'http.hosts[2]',
    });
  });

  it('denies an unknown origin and lists the allowed ones', () => {
    expect(decide('GET', 'https://evil.example/v1/charges')).toEqual({
      allow: false,
      rule: 'http.hosts',
      reason:
        'no policy entry allows origin https://evil.example; allowed origins: https://api.stripe.com, https://api.example.com, http://127.0.0.1:8080, http://10.0.0.5:8080',
    });
    // Same host, other scheme or port: another origin.
    expect(decide('GET', 'http://api.stripe.com/v1/charges').allow).toBe(false);
    expect(decide('GET', 'https://api.stripe.com:8443/v1/charges').allow).toBe(false);
  });

  it('denies a method the entry does not list', () => {
    expect(decide('POST', 'https://api.stripe.com/v1/charges')).toEqual({
      allow: false,
      rule: 'http.hosts[0].methods',
      reason: 'POST is not allowed for https://api.stripe.com; allowed methods: GET',
    });
  });

  it('denies a path no entry with that method allows', () => {
    expect(decide('GET', 'https://api.stripe.com/v2/x')).toEqual({
      allow: false,
      rule: 'http.hosts[0].paths',
      reason: 'path /v2/x is not allowed for GET https://api.stripe.com; allowed paths: /v1/charges*',
    });
    // `*` stays within one segment.
    expect(decide('GET', 'https://api.stripe.com/v1/charges/ch_1').allow).toBe(false);
    // Dot segments are resolved by the URL parser before matching.
    expect(decide('GET', 'https://api.stripe.com/v1/charges/../../admin')).toMatchObject({
      allow: false,
      rule: 'http.hosts[0].paths',
    });
    // Entries are combined per method: DELETE only on /v1/items/*.
    expect(decide('DELETE', 'https://api.example.com/v1/other')).toMatchObject({
      allow: false,
      rule: 'http.hosts[2].paths',
    });
  });

  it.each([
    ['https://user@api.stripe.com/v1/charges'],
    ['https://user:pass@api.stripe.com/v1/charges'],
    ['https://:pass@api.stripe.com/v1/charges'],
  ])('denies user info in %s', (url) => {
    expect(decide('GET', url)).toMatchObject({
      allow: false,
      rule: 'http.hosts',
      reason: expect.stringMatching(/user info/),
    });
  });

  it.each([
    ['file:///etc/passwd'],
    ['ftp://api.stripe.com/v1/charges'],
    ['javascript:alert(1)'],
    ['data:,x'],
  ])('denies the non-http scheme of %s', (url) => {
    expect(decide('GET', url)).toMatchObject({
      allow: false,
      reason: expect.stringMatching(/only http: and https:/),
    });
  });

  it('denies a relative or unparseable URL', () => {
    expect(decide('GET', '/v1/charges')).toMatchObject({ allow: false, rule: 'http.hosts' });
  });

  it.each([
    ['/v1/charges%2F..%2F..%2Fadmin'],
    ['/v1/charges%2f'],
    ['/v1/charges%5C..'],
    ['/v1/charges%5c'],
    ['/v1/charges%2E%2E'],
    ['/v1/charges%2e'],
    ['/v1/charges%00'],
  ])('denies encoded separators in %s', (path) => {
    expect(decide('GET', `https://api.stripe.com${path}`)).toMatchObject({
      allow: false,
      rule: 'http.hosts[0].paths',
      reason: expect.stringMatching(/encoded/),
    });
  });

  it.each([
    ['http://127.0.0.1:8080/'],
    ['http://0x7f.1:8080/'],
    ['http://2130706433:8080/'],
    ['http://0177.0.0.1:8080/'],
  ])('denies the private IP literal %s without allowPrivateAddress', (url) => {
    expect(decide('GET', url)).toMatchObject({
      allow: false,
      rule: 'http.hosts[3].allowPrivateAddress',
      reason: expect.stringMatching(/127\.0\.0\.1 is a loopback address/),
    });
  });

  it('denies IPv6 literals that embed loopback', () => {
    const s = parseSection({
      hosts: [
        { origin: 'http://[::1]:8080' },
        { origin: 'http://[::ffff:7f00:1]:8080' },
        { origin: 'http://[64:ff9b::7f00:1]' },
      ],
    });
    expect(decide('GET', 'http://[::1]:8080/', s)).toMatchObject({
      allow: false,
      rule: 'http.hosts[0].allowPrivateAddress',
    });
    expect(decide('GET', 'http://[::ffff:127.0.0.1]:8080/', s)).toMatchObject({
      allow: false,
      rule: 'http.hosts[1].allowPrivateAddress',
    });
    expect(decide('GET', 'http://[64:ff9b::127.0.0.1]/', s)).toMatchObject({
      allow: false,
      rule: 'http.hosts[2].allowPrivateAddress',
    });
  });

  it('allows a private IP literal when the entry sets allowPrivateAddress', () => {
    expect(decide('GET', 'http://10.0.0.5:8080/x')).toEqual({ allow: true, rule: 'http.hosts[4]' });
  });

  it('denies cloud metadata even when a (hand-built) entry allows private addresses', () => {
    const unsafe: HttpSection = {
      hosts: [
        { origin: 'http://169.254.169.254', methods: ['GET'], paths: ['/**'], allowPrivateAddress: true },
        {
          origin: 'http://metadata.google.internal',
          methods: ['GET'],
          paths: ['/**'],
          allowPrivateAddress: true,
        },
      ],
      maxResponseBytes: 1024,
      timeoutMs: 1000,
    };
    expect(decide('GET', 'http://169.254.169.254/latest/meta-data/', unsafe)).toMatchObject({
      allow: false,
      rule: 'http.hosts',
      reason: expect.stringMatching(/metadata/),
    });
    expect(decide('GET', 'http://2852039166/latest/meta-data/', unsafe)).toMatchObject({
      allow: false,
      reason: expect.stringMatching(/metadata/),
    });
    expect(decide('GET', 'http://metadata.google.internal/computeMetadata/v1/', unsafe)).toMatchObject({
      allow: false,
      reason: expect.stringMatching(/metadata/),
    });
  });

  it('is the same check used for redirect hops', () => {
    expect(checkRequest(stripe, 'GET', 'https://api.stripe.com/v1/charges').match?.index).toBe(0);
  });
});
