// http_request against real upstreams on 127.0.0.1.
import http from 'node:http';
import net from 'node:net';
import zlib from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { createHttpRequestTool } from '../../servers/http/http_request.js';
import { Redactor, secretVariants } from '../../src/secrets/redact.js';
import type { ResolvedAddress } from '../../servers/http/client.js';
import {
  callTool,
  echoHandler,
  echoOf,
  parseSection,
  startSilentServer,
  startUpstream,
  toolError,
  type Upstream,
} from './context.js';

const SECRET = 'sk_live_upstream_secret_123';
const OTHER_SECRET = 'other-origin-secret-456';
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function upstream(handler: http.RequestListener): Promise<Upstream> {
  const u = await startUpstream(handler);
  cleanups.push(u.close);
  return u;
}

function entry(origin: string, extra: Record<string, unknown> = {}) {
  return { origin, methods: ['GET', 'HEAD', 'POST', 'PUT'], allowPrivateAddress: true, ...extra };
}

const bearer = { header: 'Authorization', value: 'Bearer ${secret:api-key}' };

describe('request headers', () => {
  it('passes headers named like Object.prototype members as ordinary headers', async () => {
    const echo = await upstream(echoHandler);
    const section = parseSection({ hosts: [entry(echo.origin)] });
    const result = await callTool(
      {
        method: 'GET',
        url: `${echo.origin}/v1/x`,
        headers: { constructor: 'c', __proto__x: 'p', toString: 't' },
      },
      section,
    );
    const seen = echoOf(result).headers;
    expect(seen.constructor).toBe('c');
    expect(seen.tostring).toBe('t');
    expect(seen.__proto__x).toBe('p');
  });

  it('injects the policy header and strips caller credentials and framing headers', async () => {
    const echo = await upstream(echoHandler);
    const section = parseSection({ hosts: [entry(echo.origin, { inject: bearer })] });
    const result = await callTool(
      {
        method: 'GET',
        url: `${echo.origin}/v1/thing?x=1`,
        headers: {
          AUTHORIZATION: 'Bearer agent-forged',
          Cookie: 'session=agent',
          'Proxy-Authorization': 'Basic eA==',
          'proxy-anything': 'x',
          Host: 'evil.example',
          Connection: 'close, X-Trace',
          'Transfer-Encoding': 'chunked',
          'Content-Length': '5',
          TE: 'trailers',
          Upgrade: 'websocket',
          Expect: '100-continue',
          'Keep-Alive': 'timeout=5',
          'Accept-Encoding': 'identity',
          'X-Trace': 'abc',
          Accept: 'application/json',
        },
      },
      section,
      { secrets: { 'api-key': SECRET } },
    );
    const seen = echoOf(result).headers;
    expect(seen.authorization).toBe(`Bearer ${SECRET}`);
    expect(seen.cookie).toBeUndefined();
    expect(seen['proxy-authorization']).toBeUndefined();
    expect(seen['proxy-anything']).toBeUndefined();
    expect(seen.host).toBe(`127.0.0.1:${echo.port}`);
    expect(seen['transfer-encoding']).toBeUndefined();
    expect(seen['content-length']).toBeUndefined();
    expect(seen.te).toBeUndefined();
    expect(seen.upgrade).toBeUndefined();
    expect(seen.expect).toBeUndefined();
    expect(seen['keep-alive']).toBeUndefined();
    expect(seen['accept-encoding']).toBe('gzip, deflate, br');
    expect(seen['x-trace']).toBe('abc');
    expect(seen.accept).toBe('application/json');
    expect(echoOf(result).url).toBe('/v1/thing?x=1');
    expect(result.structured.droppedRequestHeaders).toEqual(
      expect.arrayContaining(['AUTHORIZATION', 'Cookie', 'Proxy-Authorization', 'Host', 'Transfer-Encoding']),
    );
  });

  it('drops method- and URL-override headers, so an allowed POST cannot act as a DELETE elsewhere', async () => {
    const echo = await upstream(echoHandler);
    const section = parseSection({
      hosts: [entry(echo.origin, { methods: ['POST'], paths: ['/v1/notes'] })],
    });
    const overrides = {
      'X-HTTP-Method-Override': 'DELETE',
      'X-HTTP-Method': 'DELETE',
      'X-Method-Override': 'DELETE',
      'X-Original-Method': 'DELETE',
      'X-Original-URL': '/admin/users/1',
      'X-Rewrite-URL': '/admin/users/1',
    };
    const result = await callTool(
      {
        method: 'POST',
        url: `${echo.origin}/v1/notes`,
        headers: { ...overrides, 'X-Trace': 'kept' },
        body: '{}',
      },
      section,
    );
    const seen = echoOf(result).headers;
    for (const name of Object.keys(overrides)) expect(seen[name.toLowerCase()]).toBeUndefined();
    expect(seen['x-trace']).toBe('kept');
    expect(result.structured.droppedRequestHeaders).toEqual(expect.arrayContaining(Object.keys(overrides)));
  });

  it("strips the caller's copy of the entry's inject header, whatever its case", async () => {
    const echo = await upstream(echoHandler);
    const section = parseSection({
      hosts: [entry(echo.origin, { inject: { header: 'X-Api-Key', value: '${secret:api-key}' } })],
    });
    const result = await callTool(
      { method: 'GET', url: `${echo.origin}/`, headers: { 'x-API-key': 'agent-chosen' } },
      section,
      { secrets: { 'api-key': SECRET } },
    );
    expect(echoOf(result).headers['x-api-key']).toBe(SECRET);
    expect(result.structured.droppedRequestHeaders).toContain('x-api-key');
  });

  it('sends no credential when the entry has no inject', async () => {
    const echo = await upstream(echoHandler);
    const result = await callTool(
      { method: 'GET', url: `${echo.origin}/`, headers: { Authorization: 'Bearer agent' } },
      parseSection({ hosts: [entry(echo.origin)] }),
    );
    expect(echoOf(result).headers.authorization).toBeUndefined();
  });

  it.each([
    [{ 'X-A': 'ok\r\nX-Injected: 1' }, /CR, LF or NUL/],
    [{ 'X-A': 'ok\nX-Injected: 1' }, /CR, LF or NUL/],
    [{ 'X-A': 'ok\u0000' }, /CR, LF or NUL/],
    [{ 'X-A\r\nX-Injected': '1' }, /CR, LF or NUL/],
    [{ 'X A': '1' }, /not a valid header name/],
    [{ 'X-A:': '1' }, /not a valid header name/],
    [{ '': '1' }, /not a valid header name/],
    [{ 'X-A': 'bell\u0007' }, /control/],
    [{ 'X-A': 'snow\u2603' }, /non-Latin-1/],
    [{ 'x-a': '1', 'X-A': '2' }, /given twice/],
  ])('refuses header %j before anything is sent', async (headers, message) => {
    const echo = await upstream(echoHandler);
    const err = await toolError(
      callTool(
        { method: 'GET', url: `${echo.origin}/`, headers },
        parseSection({ hosts: [entry(echo.origin)] }),
      ),
    );
    expect(err.kind).toBe('invalid');
    expect(err.message).toMatch(message);
    expect(echo.requests).toHaveLength(0);
  });

  it('refuses a secret whose value would split the header, without printing it', async () => {
    const echo = await upstream(echoHandler);
    const section = parseSection({ hosts: [entry(echo.origin, { inject: bearer })] });
    const err = await toolError(
      callTool({ method: 'GET', url: `${echo.origin}/` }, section, {
        secrets: { 'api-key': 'abc\r\nX-Evil: 1' },
      }),
    );
    expect(err.message).toMatch(/api-key/);
    expect(err.message).not.toContain('X-Evil');
    expect(echo.requests).toHaveLength(0);
  });

  it('sends the request body and refuses one over 1 MiB', async () => {
    const echo = await upstream(echoHandler);
    const section = parseSection({ hosts: [entry(echo.origin)] });
    const result = await callTool({ method: 'POST', url: `${echo.origin}/`, body: '{"a":1}' }, section);
    expect(echoOf(result)).toMatchObject({ method: 'POST', body: '{"a":1}' });
    expect(echoOf(result).headers['content-length']).toBe('7');
    const err = await toolError(
      callTool({ method: 'POST', url: `${echo.origin}/`, body: 'x'.repeat(1024 * 1024 + 1) }, section),
    );
    expect(err.kind).toBe('invalid');
    expect(echo.requests).toHaveLength(1);
  });
});

describe('response', () => {
  it('returns lower-cased headers without set-cookie, and renders a text summary', async () => {
    const echo = await upstream(echoHandler);
    const result = await callTool(
      { method: 'GET', url: `${echo.origin}/hello` },
      parseSection({ hosts: [entry(echo.origin)] }),
    );
    expect(result.structured).toMatchObject({
      status: 200,
      statusText: 'OK',
      bodyEncoding: 'utf8',
      truncated: false,
      redirects: [],
    });
    expect(result.structured.url).toBe(`${echo.origin}/hello`);
    expect(result.structured.headers['x-upstream']).toBe('Echo');
    expect(result.structured.headers['set-cookie']).toBeUndefined();
    expect(Object.keys(result.structured.headers).every((k) => k === k.toLowerCase())).toBe(true);
    expect(result.text).toMatch(
      /^HTTP 200 OK \(GET http:\/\/127\.0\.0\.1:\d+\/hello\)\ncontent-type: application\/json/,
    );
    expect(result.text).toContain('"url":"/hello"');
    expect(result.text).not.toContain('upstream-session');
  });

  it('returns binary bodies as base64', async () => {
    const bytes = Buffer.from([0, 1, 2, 255, 254, 0x89, 0x50]);
    const up = await upstream((_req, res) => {
      res.setHeader('content-type', 'image/png');
      res.end(bytes);
    });
    const result = await callTool(
      { method: 'GET', url: `${up.origin}/x.png` },
      parseSection({ hosts: [entry(up.origin)] }),
    );
    expect(result.structured.bodyEncoding).toBe('base64');
    expect(Buffer.from(result.structured.body, 'base64')).toEqual(bytes);
    expect(result.text).toContain('[binary body, 7 bytes');
  });

  it.each([
    ['gzip', zlib.gzipSync],
    ['deflate', zlib.deflateSync],
    ['br', zlib.brotliCompressSync],
  ] as const)('decodes %s', async (encoding, compress) => {
    const text = JSON.stringify({ hello: 'world'.repeat(100) });
    const up = await upstream((_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.setHeader('content-encoding', encoding);
      res.end(compress(Buffer.from(text)));
    });
    const result = await callTool(
      { method: 'GET', url: `${up.origin}/` },
      parseSection({ hosts: [entry(up.origin)] }),
    );
    expect(result.structured.body).toBe(text);
    expect(result.structured.bodyEncoding).toBe('utf8');
    expect(result.structured.headers['content-encoding']).toBeUndefined();
  });

  it('caps a gzip bomb after decompression', async () => {
    const bomb = zlib.gzipSync(Buffer.alloc(64 * 1024 * 1024)); // 64 MiB of zeros, ~64 KiB on the wire
    const up = await upstream((_req, res) => {
      res.setHeader('content-type', 'text/plain');
      res.setHeader('content-encoding', 'gzip');
      res.end(bomb);
    });
    const maxResponseBytes = 256 * 1024;
    expect(bomb.length).toBeLessThan(maxResponseBytes);
    const result = await callTool(
      { method: 'GET', url: `${up.origin}/` },
      parseSection({ hosts: [entry(up.origin)], maxResponseBytes }),
    );
    expect(result.structured.truncated).toBe(true);
    expect(result.structured.body.length).toBe(maxResponseBytes);
    expect(result.text).toContain('[truncated at 262144 bytes');
  });

  it('caps the body on the wire and stops reading', async () => {
    const total = 32 * 1024 * 1024;
    let written = 0;
    let closedEarly: Promise<boolean> | undefined;
    const up = await upstream((_req, res) => {
      res.setHeader('content-type', 'text/plain');
      closedEarly = new Promise((resolve) => {
        res.on('close', () => resolve(written < total));
      });
      const chunk = Buffer.alloc(64 * 1024, 'a');
      const pump = () => {
        while (written < total && !res.destroyed) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        if (!res.destroyed) res.end();
      };
      pump();
    });
    const result = await callTool(
      { method: 'GET', url: `${up.origin}/` },
      parseSection({ hosts: [entry(up.origin)], maxResponseBytes: 100_000 }),
    );
    expect(result.structured.truncated).toBe(true);
    expect(result.structured.body).toBe('a'.repeat(100_000));
    expect(await closedEarly).toBe(true);
  });

  it('caps the body on the wire even when it decodes to nothing', async () => {
    // Empty gzip members: an endless wire body that decompresses to zero bytes.
    const emptyMember = zlib.gzipSync(Buffer.alloc(0));
    const block = Buffer.concat(Array.from({ length: 1000 }, () => emptyMember));
    const up = await upstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'gzip' });
      const pump = () => {
        while (!res.destroyed) if (!res.write(block)) return void res.once('drain', pump);
      };
      pump();
    });
    // Ended by the size cap (a result), not by the 5 s deadline (which would be an error).
    const result = await callTool(
      { method: 'GET', url: `${up.origin}/` },
      parseSection({ hosts: [entry(up.origin)], maxResponseBytes: 64 * 1024, timeoutMs: 5000 }),
    );
    expect(result.structured).toMatchObject({ truncated: true, body: '' });
  });

  it('does not hand back the start of an echoed credential that the size cap cut through', async () => {
    // An upstream that reflects the request (as debug and error endpoints do): the agent picks the
    // padding so the cap falls just before the credential's last character.
    const reflect = await upstream((req, res) => {
      const pad = new URL(req.url!, 'http://x').searchParams.get('pad') ?? '';
      res.setHeader('content-type', req.headers['x-want'] ?? 'text/plain');
      const auth = req.headers.authorization ?? '';
      const form = req.headers['x-form'];
      res.end(pad + (form === 'base64' ? Buffer.from(auth).toString('base64') : auth) + ' tail');
    });
    const maxResponseBytes = 200;
    const section = parseSection({ hosts: [entry(reflect.origin, { inject: bearer })], maxResponseBytes });
    const authValue = `Bearer ${SECRET}`;
    const cases = [
      { form: 'plain', text: authValue, type: 'text/plain' },
      { form: 'plain', text: authValue, type: 'application/octet-stream' }, // returned as base64
      { form: 'base64', text: Buffer.from(authValue).toString('base64'), type: 'text/plain' },
    ];
    // What the pipeline does to a result afterwards: it redacts whole forms only.
    const redactor = new Redactor();
    redactor.add(SECRET);
    for (const c of cases) {
      // The longest form of the secret inside the echoed text; the cap cuts one character short of its end.
      const form = secretVariants(SECRET)
        .filter((v) => c.text.includes(v))
        .sort((a, b) => b.length - a.length)[0]!;
      const padLength = maxResponseBytes - (c.text.indexOf(form) + form.length - 1);
      const result = await callTool(
        {
          method: 'GET',
          url: `${reflect.origin}/debug?pad=${'p'.repeat(padLength)}`,
          headers: { 'x-form': c.form, 'x-want': c.type },
        },
        section,
        { secrets: { 'api-key': SECRET } },
      );
      expect(result.structured.truncated).toBe(true);
      const body =
        result.structured.bodyEncoding === 'base64'
          ? Buffer.from(result.structured.body, 'base64').toString('latin1')
          : result.structured.body;
      expect(body.startsWith('p'.repeat(padLength))).toBe(true);
      expect(body.length).toBeLessThan(maxResponseBytes);
      expect(redactor.scrub(body)).not.toContain(form.slice(0, 12));
    }
  });

  it('is not truncated at exactly the cap', async () => {
    const up = await upstream((_req, res) => res.end('x'.repeat(1000)));
    const result = await callTool(
      { method: 'GET', url: `${up.origin}/` },
      parseSection({ hosts: [entry(up.origin)], maxResponseBytes: 1000 }),
    );
    expect(result.structured).toMatchObject({ truncated: false, body: 'x'.repeat(1000) });
  });
});

describe('redirects', () => {
  it('refuses a redirect to an origin the policy does not allow, naming the target', async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(302, { location: 'https://evil.example/steal' });
      res.end();
    });
    const err = await toolError(
      callTool(
        { method: 'GET', url: `${up.origin}/start` },
        parseSection({ hosts: [entry(up.origin, { inject: bearer })] }),
        {
          secrets: { 'api-key': SECRET },
        },
      ),
    );
    expect(err.kind).toBe('denied');
    expect(err.rule).toBe('http.hosts');
    expect(err.message).toContain('redirect to https://evil.example/steal refused');
    expect(err.message).toContain('no policy entry allows origin https://evil.example');
  });

  it('refuses a redirect to a path or method the policy does not allow', async () => {
    const getOnly = await upstream(echoHandler);
    const up = await upstream((req, res) => {
      req.resume();
      if (req.url === '/start') res.writeHead(302, { location: '/admin' });
      else if (req.url === '/post') res.writeHead(307, { location: `${getOnly.origin}/ok` });
      else res.writeHead(200);
      res.end();
    });
    const section = parseSection({
      hosts: [
        {
          origin: up.origin,
          methods: ['GET', 'POST'],
          paths: ['/start', '/post'],
          allowPrivateAddress: true,
        },
        { origin: getOnly.origin, methods: ['GET'], allowPrivateAddress: true },
      ],
    });
    const pathErr = await toolError(callTool({ method: 'GET', url: `${up.origin}/start` }, section));
    expect(pathErr).toMatchObject({ kind: 'denied', rule: 'http.hosts[0].paths' });
    expect(pathErr.message).toContain(`redirect to ${up.origin}/admin refused`);
    const methodErr = await toolError(
      callTool({ method: 'POST', url: `${up.origin}/post`, body: 'x' }, section),
    );
    expect(methodErr).toMatchObject({ kind: 'denied', rule: 'http.hosts[1].methods' });
    expect(methodErr.message).toContain(`redirect to ${getOnly.origin}/ok refused: POST is not allowed`);
    expect(up.requests.map((r) => r.url)).toEqual(['/start', '/post']);
    expect(getOnly.requests).toHaveLength(0);
  });

  it("never sends one origin's credential to another allowed origin", async () => {
    const second = await upstream(echoHandler);
    const third = await upstream(echoHandler);
    const first = await upstream((req, res) => {
      res.writeHead(302, {
        location: req.url === '/to-third' ? `${third.origin}/echo` : `${second.origin}/echo`,
      });
      res.end();
    });
    const section = parseSection({
      hosts: [
        entry(first.origin, { inject: bearer }),
        entry(second.origin),
        entry(third.origin, { inject: { header: 'Authorization', value: 'Token ${secret:other}' } }),
      ],
    });
    const secrets = { 'api-key': SECRET, other: OTHER_SECRET };
    const toSecond = await callTool({ method: 'GET', url: `${first.origin}/start` }, section, { secrets });
    expect(toSecond.structured.url).toBe(`${second.origin}/echo`);
    expect(toSecond.structured.redirects).toEqual([`${second.origin}/echo`]);
    expect(echoOf(toSecond).headers.authorization).toBeUndefined();
    expect(JSON.stringify(echoOf(toSecond))).not.toContain(SECRET);

    const toThird = await callTool({ method: 'GET', url: `${first.origin}/to-third` }, section, { secrets });
    expect(echoOf(toThird).headers.authorization).toBe(`Token ${OTHER_SECRET}`);
    expect(first.requests[0]!.headers.authorization).toBe(`Bearer ${SECRET}`);
  });

  it('keeps the credential on a same-origin redirect', async () => {
    const up = await upstream((req, res) => {
      if (req.url === '/start') {
        res.writeHead(301, { location: '/echo' });
        res.end();
      } else echoHandler(req, res);
    });
    const result = await callTool(
      { method: 'GET', url: `${up.origin}/start` },
      parseSection({ hosts: [entry(up.origin, { inject: bearer })] }),
      {
        secrets: { 'api-key': SECRET },
      },
    );
    expect(echoOf(result).headers.authorization).toBe(`Bearer ${SECRET}`);
  });

  it.each([
    [303, 'POST', 'GET', ''],
    [302, 'POST', 'GET', ''],
    [301, 'PUT', 'GET', ''],
    [307, 'POST', 'POST', 'payload'],
    [308, 'PUT', 'PUT', 'payload'],
    [303, 'HEAD', 'HEAD', ''],
  ])('%i after %s continues with %s', async (status, method, expectedMethod, expectedBody) => {
    const seen: { method?: string; body?: string } = {};
    const up = await upstream((req, res) => {
      if (req.url === '/start') {
        req.resume();
        res.writeHead(status, { location: '/next' });
        res.end();
        return;
      }
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.method = req.method;
        seen.body = Buffer.concat(chunks).toString();
        res.end('done');
      });
    });
    const result = await callTool(
      { method, url: `${up.origin}/start`, body: method === 'HEAD' ? undefined : 'payload' },
      parseSection({ hosts: [entry(up.origin)] }),
    );
    expect(result.structured.status).toBe(200);
    expect(seen).toEqual({ method: expectedMethod, body: expectedBody });
  });

  async function chain(hops: number): Promise<Upstream> {
    return upstream((req, res) => {
      const n = Number(req.url!.slice(1));
      if (n < hops) res.writeHead(302, { location: `/${n + 1}` });
      res.end(`hop ${n}`);
    });
  }

  it('follows at most 5 redirects', async () => {
    const five = await chain(5);
    const ok = await callTool(
      { method: 'GET', url: `${five.origin}/0` },
      parseSection({ hosts: [entry(five.origin)] }),
    );
    expect(ok.structured.body).toBe('hop 5');
    expect(ok.structured.redirects).toHaveLength(5);

    const six = await chain(6);
    const err = await toolError(
      callTool({ method: 'GET', url: `${six.origin}/0` }, parseSection({ hosts: [entry(six.origin)] })),
    );
    expect(err.message).toMatch(/too many redirects/);
    expect(six.requests).toHaveLength(6);
  });

  it('refuses a redirect to cloud metadata even with allowPrivateAddress', async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' });
      res.end();
    });
    const err = await toolError(
      callTool({ method: 'GET', url: `${up.origin}/` }, parseSection({ hosts: [entry(up.origin)] })),
    );
    expect(err).toMatchObject({ kind: 'denied', rule: 'http.hosts' });
    expect(err.message).toMatch(/metadata/);
  });
});

// Which limit ended a call is read from its error, never from a clock: a busy machine is slow.
describe('deadline', () => {
  it('stops an upstream that trickles one byte every 100 ms', async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const timer = setInterval(() => res.write('x'), 100);
      res.on('close', () => clearInterval(timer));
    });
    const err = await toolError(
      callTool(
        { method: 'GET', url: `${up.origin}/` },
        parseSection({ hosts: [entry(up.origin)], timeoutMs: 600 }),
      ),
    );
    expect(err.message).toMatch(/did not complete within 600 ms/);
  });

  it('stops an upstream that accepts and never answers', async () => {
    const silent = await startSilentServer();
    cleanups.push(silent.close);
    const err = await toolError(
      callTool(
        { method: 'GET', url: `${silent.origin}/` },
        parseSection({ hosts: [entry(silent.origin)], timeoutMs: 500 }),
      ),
    );
    expect(err.message).toMatch(/did not complete within 500 ms/);
  });

  it('ends a call whose upstream answers 101 Switching Protocols, which was never asked for', async () => {
    // Node drops such a connection without a response or an error event; the call must still end.
    const sockets = new Set<net.Socket>();
    const switcher = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.once('data', () =>
        socket.write(
          'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nraw bytes',
        ),
      );
    });
    await new Promise<void>((resolve) => switcher.listen(0, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          for (const s of sockets) s.destroy();
          switcher.close(() => resolve());
        }),
    );
    const origin = `http://127.0.0.1:${(switcher.address() as net.AddressInfo).port}`;
    const err = await toolError(
      callTool(
        { method: 'GET', url: `${origin}/` },
        parseSection({ hosts: [entry(origin)], timeoutMs: 5000 }),
      ),
    );
    expect(err.message).toMatch(/101/);
    expect(err.message).not.toMatch(/did not complete/); // refused at once, not left to the deadline
  }, 10_000);

  it('is one deadline over all redirect hops', async () => {
    const up = await upstream((req, res) => {
      const n = Number(req.url!.slice(1));
      setTimeout(() => {
        if (n < 3) res.writeHead(302, { location: `/${n + 1}` });
        res.end('done');
      }, 300);
    });
    const err = await toolError(
      callTool(
        { method: 'GET', url: `${up.origin}/0` },
        parseSection({ hosts: [entry(up.origin)], timeoutMs: 800 }),
      ),
    );
    // Every hop answers within 800 ms; only one deadline over all four runs out.
    expect(err.message).toMatch(/within 800 ms/);
  });

  it("honours the caller's abort signal", async () => {
    const silent = await startSilentServer();
    cleanups.push(silent.close);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 200);
    const err = await toolError(
      callTool({ method: 'GET', url: `${silent.origin}/` }, parseSection({ hosts: [entry(silent.origin)] }), {
        signal: controller.signal,
      }),
    );
    expect(err.message).toBe('request cancelled');
  });
});

describe('addresses and DNS', () => {
  it('refuses a name that resolves to loopback without allowPrivateAddress', async () => {
    const echo = await upstream(echoHandler);
    const origin = `http://localhost:${echo.port}`;
    const err = await toolError(
      callTool({ method: 'GET', url: `${origin}/` }, parseSection({ hosts: [{ origin, methods: ['GET'] }] })),
    );
    expect(err).toMatchObject({ kind: 'denied', rule: 'http.hosts[0].allowPrivateAddress' });
    expect(err.message).toMatch(/localhost resolves to 127\.0\.0\.1 \(loopback\)/);
    expect(echo.requests).toHaveLength(0);
  });

  it('resolves once and connects to the checked address, keeping the name as Host', async () => {
    const echo = await upstream(echoHandler);
    const lookups: string[] = [];
    // Answers 127.0.0.1 first, then a different address, as a rebinding DNS server would.
    const answers: ResolvedAddress[][] = [
      [{ address: '127.0.0.1', family: 4 }],
      [{ address: '10.9.9.9', family: 4 }],
    ];
    const tool = createHttpRequestTool({
      resolve: async (host) => {
        lookups.push(host);
        return answers[Math.min(lookups.length - 1, 1)]!;
      },
    });
    const origin = `http://upstream.invalid:${echo.port}`; // not resolvable by the system resolver
    const result = await callTool(
      { method: 'GET', url: `${origin}/` },
      parseSection({ hosts: [entry(origin)] }),
      { tool },
    );
    expect(lookups).toEqual(['upstream.invalid']);
    expect(echoOf(result).headers.host).toBe(`upstream.invalid:${echo.port}`);
    expect(echo.requests).toHaveLength(1);
  });

  it('checks every resolved address, not only the first', async () => {
    const echo = await upstream(echoHandler);
    const tool = createHttpRequestTool({
      resolve: async () => [
        { address: '93.184.216.34', family: 4 },
        { address: '::ffff:127.0.0.1', family: 6 },
      ],
    });
    const origin = `http://mixed.invalid:${echo.port}`;
    const err = await toolError(
      callTool({ method: 'GET', url: `${origin}/` }, parseSection({ hosts: [{ origin }] }), { tool }),
    );
    expect(err).toMatchObject({ kind: 'denied', rule: 'http.hosts[0].allowPrivateAddress' });
    expect(err.message).toContain('::ffff:127.0.0.1');
  });

  it('refuses a name resolving to cloud metadata even with allowPrivateAddress', async () => {
    const tool = createHttpRequestTool({ resolve: async () => [{ address: '169.254.169.254', family: 4 }] });
    const origin = 'http://innocent.invalid';
    const err = await toolError(
      callTool({ method: 'GET', url: `${origin}/` }, parseSection({ hosts: [entry(origin)] }), { tool }),
    );
    expect(err).toMatchObject({ kind: 'denied', rule: 'http.hosts' });
    expect(err.message).toMatch(/metadata/);
  });

  it('reports a connection failure without a stack', async () => {
    const silent = await startSilentServer();
    const origin = silent.origin;
    await silent.close(); // nothing listens on that port any more
    const err = await toolError(
      callTool({ method: 'GET', url: `${origin}/` }, parseSection({ hosts: [entry(origin)] })),
    );
    expect(err.kind).toBe('upstream');
    expect(err.message).toBe(`request to ${origin} failed: ECONNREFUSED`);
  });
});
