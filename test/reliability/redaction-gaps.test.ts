// An upstream that echoes the injected credential in a form the old scrubber did not read:
// stacked content codings, a UTF-16 charset, JSON `\/` and `\u00XX` escapes. Each comes back
// redacted, with the rest of the body intact.
import { readFile } from 'node:fs/promises';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { Broker } from '../../src/broker.js';
import {
  acmeHttpPolicy,
  connectSocketClient,
  makeInstallation,
  startEchoUpstream,
  type EchoUpstream,
  type Installation,
} from '../helpers/fixture.js';

// Slashes and an ampersand, so the JSON escapes differ from the plain value.
const SECRET = 'sk_live/Gap+Test&0123456789/xyz';

const ROUTES: Record<string, () => { headers: Record<string, string>; body: Buffer }> = {
  '/v1/gzip-gzip': () => ({
    headers: { 'content-type': 'application/json', 'content-encoding': 'gzip, gzip' },
    body: zlib.gzipSync(zlib.gzipSync(JSON.stringify({ echoed: `Bearer ${SECRET}` }))),
  }),
  '/v1/gzip-br': () => ({
    headers: { 'content-type': 'text/plain', 'content-encoding': 'gzip, br' },
    body: zlib.brotliCompressSync(zlib.gzipSync(`echoed: Bearer ${SECRET}`)),
  }),
  '/v1/utf16le': () => ({
    headers: { 'content-type': 'text/plain; charset=utf-16le' },
    body: Buffer.from(`echoed: Bearer ${SECRET}`, 'utf16le'),
  }),
  '/v1/utf16be': () => ({
    headers: { 'content-type': 'text/plain; charset="UTF-16BE"' },
    body: Buffer.from(`echoed: Bearer ${SECRET}`, 'utf16le').swap16(),
  }),
  '/v1/utf16-untyped-charset': () => ({
    // No charset: read as UTF-8, where UTF-16 is the text with a NUL after each ASCII character.
    headers: { 'content-type': 'text/plain' },
    body: Buffer.from(`echoed: Bearer ${SECRET}`, 'utf16le'),
  }),
  '/v1/utf16-binary': () => ({
    headers: { 'content-type': 'application/octet-stream' },
    body: Buffer.from(`echoed: Bearer ${SECRET}`, 'utf16le'),
  }),
  '/v1/json-slash': () => ({
    headers: { 'content-type': 'application/json' },
    body: Buffer.from(`{"echoed":"Bearer ${SECRET.replace(/\//g, '\\/')}"}`),
  }),
  '/v1/json-go': () => ({
    headers: { 'content-type': 'application/json' },
    body: Buffer.from(`{"echoed":"Bearer ${SECRET.replace(/&/g, '\\u0026')}"}`),
  }),
};

/** `raw` and everything gzip/deflate/brotli layers inside it decode to. */
function decompressions(raw: Buffer, depth = 0): Buffer[] {
  const out = [raw];
  if (depth > 3) return out;
  for (const decode of [zlib.gunzipSync, zlib.inflateSync, zlib.brotliDecompressSync]) {
    try {
      out.push(...decompressions(decode(raw), depth + 1));
    } catch {
      // not this coding
    }
  }
  return out;
}

describe('redaction of re-encoded credentials', () => {
  let inst: Installation;
  let upstream: EchoUpstream;
  let broker: Broker;
  let client: Client;

  beforeAll(async () => {
    upstream = await startEchoUpstream((req, res) => {
      const path = req.url!;
      if (path === '/v1/zstd') {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'zstd' });
        res.end(Buffer.from(SECRET));
        return true;
      }
      if (path === '/v1/utf32') {
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-32' });
        res.end(Buffer.from(SECRET));
        return true;
      }
      const route = ROUTES[path];
      if (!route) return false;
      const { headers, body } = route();
      res.writeHead(200, headers);
      res.end(body);
      return true;
    });
    inst = await makeInstallation({
      secrets: { 'api-token': SECRET },
      policies: { 'acme.yaml': acmeHttpPolicy(upstream.origin) },
    });
    const [{ Broker }, { loadConfig }, { silentLogger }] = await Promise.all([
      import('../../src/broker.js'),
      import('../../src/config/airlock-yaml.js'),
      import('../../src/log.js'),
    ]);
    broker = await Broker.start(await loadConfig(inst.configFile), { log: silentLogger() });
    ({ client } = await connectSocketClient(inst.socket('acme', 'http')));
  });

  afterAll(async () => {
    await client?.close();
    await broker?.stop(1000);
    await upstream?.close();
    await inst?.cleanup();
  });

  const get = (path: string) =>
    client.callTool({ name: 'http_request', arguments: { method: 'GET', url: `${upstream.origin}${path}` } });

  /** Every way the agent could read the secret back out of a result. */
  function assertNoSecret(result: unknown): void {
    const json = JSON.stringify(result);
    const structured = (result as { structuredContent?: { body?: string; bodyEncoding?: string } })
      .structuredContent;
    const texts = [json, JSON.parse(json) as unknown].map((t) =>
      typeof t === 'string' ? t : JSON.stringify(t),
    );
    if (structured?.bodyEncoding === 'base64') {
      // Whatever the agent could do with the bytes: decompress them, read them as UTF-16.
      for (const raw of decompressions(Buffer.from(structured.body!, 'base64')))
        texts.push(
          raw.toString('utf8'),
          raw.toString('utf16le'),
          Buffer.from(raw).swap16().toString('utf16le'),
        );
    }
    for (const t of texts) {
      expect(t).not.toContain(SECRET);
      expect(t).not.toContain(SECRET.replace(/\//g, '\\/'));
      expect(t).not.toContain(Buffer.from(SECRET, 'utf16le').toString('latin1'));
    }
  }

  it.each(Object.keys(ROUTES))('redacts the credential echoed at %s and keeps the rest', async (path) => {
    const r = await get(path);
    expect(r.isError, JSON.stringify(r)).toBeFalsy();
    assertNoSecret(r);
    const s = r.structuredContent as { body: string; bodyEncoding: string };
    if (s.bodyEncoding === 'utf8') {
      expect(s.body.replace(/\u0000/g, '')).toContain('echoed');
      expect(s.body).toContain('[redacted]');
    }
  });

  it.each([
    ['/v1/zstd', /content-encoding "zstd", which Airlock cannot decode/],
    ['/v1/utf32', /charset "utf-32", which Airlock cannot decode/],
  ])('refuses %s, whose body it cannot decode, instead of returning it unchecked', async (path, message) => {
    const r = await get(path);
    expect(r.isError).toBe(true);
    expect((r.content as Array<{ text: string }>)[0]!.text).toMatch(message);
    assertNoSecret(r);
  });

  it('leaves no form of the credential in the audit log', async () => {
    const log = await readFile(inst.auditFile, 'utf8');
    expect(log).not.toContain(SECRET);
    expect(log).not.toContain(SECRET.replace(/\//g, '\\/'));
  });
});
