// Path spellings the WHATWG parser leaves alone but some upstream servers read as another path:
// each is refused before anything (or any credential) is sent.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { connectSocketClient, startAcmeHttpBroker, type AcmeHttpBroker } from '../helpers/fixture.js';

const TRICKS: Array<[string, RegExp]> = [
  ['/v1/..;/admin', /";" path parameter/],
  ['/v1/..;/x/../admin', /";" path parameter/],
  ['/v1/charges;jsessionid=1', /";" path parameter/],
  ['/v1/%3b/admin', /";" path parameter/],
  ['/v1/%252e%252e/admin', /double-encoded/],
  ['/v1/%252f/admin', /double-encoded/],
  ['/v1/%c0%ae%c0%ae/admin', /overlong UTF-8/],
  ['/v1/..%20/admin', /read as "\.\."/],
  ['/v1/.%09./admin', /read as "\.\."/],
];

describe('http path tricks', () => {
  let fixture: AcmeHttpBroker;
  let client: Client;

  beforeAll(async () => {
    fixture = await startAcmeHttpBroker({ secret: 'sk_path_trick_secret_0123456789' });
    ({ client } = await connectSocketClient(fixture.socketPath));
  });
  afterAll(async () => {
    await client?.close();
    await fixture?.close();
  });

  it.each(TRICKS)('refuses %s under a /v1/** rule; nothing reaches the upstream', async (path, reason) => {
    const before = fixture.upstream.requests.length;
    const r = await client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${fixture.upstream.origin}${path}` },
    });
    expect(r.isError).toBe(true);
    const text = (r.content as Array<{ text: string }>)[0]!.text;
    expect(text).toMatch(/^denied: http\.hosts\[0\]\.paths: /);
    expect(text).toMatch(reason);
    expect(fixture.upstream.requests.length).toBe(before);
  });

  it('still forwards ordinary paths, percent signs and dots inside names', async () => {
    for (const path of ['/v1/charges', '/v1/a.b/c..d', '/v1/100%25', '/v1/x%20y']) {
      const r = await client.callTool({
        name: 'http_request',
        arguments: { method: 'GET', url: `${fixture.upstream.origin}${path}` },
      });
      expect(r.isError, path).toBeFalsy();
      expect(fixture.upstream.requests.at(-1)!.url).toBe(path);
    }
  });
});
