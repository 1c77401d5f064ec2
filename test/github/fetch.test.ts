// The github server's fetch (servers/github/fetch.ts) against a real local HTTP server: only the
// policy's API origin, no redirects, compressed answers decoded, the signal ends a request
// mid-body, and a pooled connection the server dropped is retried for reads only.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REDIRECT_REFUSED } from '../../servers/github/client.js';
import { createGithubFetch, type GithubFetch } from '../../servers/github/fetch.js';

let server: http.Server;
/** Connections the server has open. */
const open = new Set<object>();
let base: string;
const seen: string[] = [];
/** Requests seen per connection, to drop the second request on a reused one. */
const perSocket = new WeakMap<object, number>();

beforeAll(async () => {
  server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const n = (perSocket.get(req.socket) ?? 0) + 1;
    perSocket.set(req.socket, n);
    if (req.url === '/json') {
      res.writeHead(200, { 'content-type': 'application/json', 'x-two': ['a', 'b'] });
      res.end('{"ok":true}');
    } else if (req.url === '/gzip') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      res.end(gzipSync('{"zipped":"yes"}'));
    } else if (req.url === '/redirect') {
      res.writeHead(301, { location: 'https://elsewhere.example/steal' });
      res.end();
    } else if (req.url === '/slow-body') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"partial":');
      // never ends
    } else if (req.url === '/slow') {
      setTimeout(() => res.end('done'), 300);
    } else if (req.url?.startsWith('/drop-reused')) {
      // The server drops a kept-alive connection as the client reuses it.
      if (n > 1) req.socket.destroy();
      else res.end('first');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  server.on('connection', (socket) => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

async function withFetch<T>(fn: (f: GithubFetch) => Promise<T>): Promise<T> {
  const f = createGithubFetch(base);
  try {
    return await fn(f);
  } finally {
    f.close();
  }
}

describe('the github server fetch', () => {
  it('answers with status, headers (repeated ones joined) and body as Octokit reads them', async () => {
    await withFetch(async ({ fetch }) => {
      const res = await fetch(`${base}/json`, { method: 'GET', headers: { accept: 'application/json' } });
      expect(res.status).toBe(200);
      expect(res.headers.get('Content-Type')).toBe('application/json');
      expect(Object.fromEntries(res.headers)['x-two']).toBe('a, b');
      expect(await res.text()).toBe('{"ok":true}');
    });
  });

  it('refuses any origin but the API’s: nothing is sent there', async () => {
    await withFetch(async ({ fetch }) => {
      const before = seen.length;
      const other = base.replace('127.0.0.1', 'localhost');
      await expect(fetch(`${other}/json`, { headers: { authorization: 'token t' } })).rejects.toMatchObject({
        cause: { message: expect.stringMatching(/is not the policy's GitHub API/) },
      });
      expect(seen.length).toBe(before);
    });
  });

  it('a redirect is not followed: a 400 naming the target instead', async () => {
    await withFetch(async ({ fetch }) => {
      const before = seen.length;
      const res = await fetch(`${base}/redirect`);
      expect(res.status).toBe(400);
      expect(res.headers.get(REDIRECT_REFUSED)).toBe('https://elsewhere.example/steal');
      expect(seen.slice(before)).toEqual(['GET /redirect']);
    });
  });

  it('decodes a gzip answer', async () => {
    await withFetch(async ({ fetch }) => {
      expect(await (await fetch(`${base}/gzip`)).text()).toBe('{"zipped":"yes"}');
    });
  });

  it('the signal ends a request whose body never completes, with the signal’s reason', async () => {
    await withFetch(async ({ fetch }) => {
      const started = Date.now();
      await expect(fetch(`${base}/slow-body`, { signal: AbortSignal.timeout(200) })).rejects.toMatchObject({
        name: 'TimeoutError',
      });
      expect(Date.now() - started).toBeLessThan(5_000);
    });
  });

  it('a read on a pooled connection the server dropped is sent again on a new one; a write is not', async () => {
    await withFetch(async ({ fetch }) => {
      expect(await (await fetch(`${base}/drop-reused?1`)).text()).toBe('first');
      // Same pooled connection: dropped, then sent again on a fresh one.
      expect(await (await fetch(`${base}/drop-reused?2`)).text()).toBe('first');
      const before = seen.length;
      await expect(fetch(`${base}/drop-reused?3`, { method: 'POST', body: '{}' })).rejects.toMatchObject({
        cause: { code: 'ECONNRESET' },
      });
      expect(seen.slice(before)).toEqual(['POST /drop-reused?3']);
    });
  });

  it('close() (a policy change) closes idle connections at once, lets a write in flight finish, then leaves none open', async () => {
    const { fetch, close } = createGithubFetch(base);
    // Two pooled connections: one stays idle, the other carries the slow write.
    await Promise.all([fetch(`${base}/json`), fetch(`${base}/json`)]);
    // A write: it must not be cut off (and would never be sent again).
    const slow = fetch(`${base}/slow`, { method: 'POST', body: '{}' });
    await new Promise((r) => setTimeout(r, 50));
    expect(open.size).toBe(2);
    close();
    // The idle one closes at once, while the slow answer is still on its way.
    await expect.poll(() => open.size, { timeout: 250 }).toBe(1);
    expect(await (await slow).text()).toBe('done');
    await expect.poll(() => open.size, { timeout: 5_000 }).toBe(0);
  });
});
