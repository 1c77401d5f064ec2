// The github server's request layer (servers/github/request.ts) in a real client against a real
// local server: answers and errors shaped as @octokit/request shapes them, which client.ts
// (describeGithubError), limits.ts (retry decisions) and the tools rely on.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGithubOctokit } from '../../servers/github/client.js';
import { createGithubFetch } from '../../servers/github/fetch.js';
import { httpErrorOf } from '../../src/secrets/github-app.js';

let server: http.Server;
let base: string;
const bodies: unknown[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (chunks.length) bodies.push(JSON.parse(Buffer.concat(chunks).toString()));
      const send = (status: number, type: string | undefined, body: string | Buffer) => {
        res.writeHead(status, type ? { 'content-type': type } : {});
        res.end(body);
      };
      if (req.url === '/json')
        send(200, 'application/json; charset=utf-8', '{"id":9007199254740991,"n":[1]}');
      else if (req.url === '/diff') send(200, 'text/plain; charset=utf-8', 'diff --git a b');
      else if (req.url === '/bytes') send(200, 'application/octet-stream', Buffer.from([0, 1, 2]));
      else if (req.url === '/empty') send(204, undefined, '');
      else if (req.url === '/not-json') send(200, 'application/json', '{oops');
      else if (req.url === '/denied')
        send(
          403,
          'application/json',
          JSON.stringify({ message: 'Resource not accessible', documentation_url: 'https://docs.example/x' }),
        );
      else if (req.url === '/invalid')
        send(
          422,
          'application/json',
          JSON.stringify({ message: 'Validation Failed', errors: [{ code: 'missing' }] }),
        );
      else if (req.url === '/echo') send(201, 'application/json', '{"ok":true}');
      else send(404, 'application/json', '{"message":"Not Found"}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const TOKEN = 'ghp_RequestLayerTest0123456789';
const client = async () => {
  const pool = createGithubFetch(base);
  return { octokit: await createGithubOctokit({ apiUrl: base, fetch: pool.fetch }), pool };
};
const auth = { headers: { authorization: `token ${TOKEN}` }, request: { retries: 0 } };

describe('the github request layer', () => {
  it('parses JSON, keeps text as text and other bytes as an ArrayBuffer; 204 has empty data', async () => {
    const { octokit, pool } = await client();
    try {
      const json = await octokit.request('GET /json', auth);
      expect(json.status).toBe(200);
      expect(json.data).toEqual({ id: 9007199254740991, n: [1] });
      expect(json.headers['content-type']).toBe('application/json; charset=utf-8');
      expect((await octokit.request('GET /diff', auth)).data).toBe('diff --git a b');
      const bytes = (await octokit.request('GET /bytes', auth)).data as ArrayBuffer;
      expect([...new Uint8Array(bytes)]).toEqual([0, 1, 2]);
      expect((await octokit.request('GET /empty', auth)).data).toBe('');
      // A JSON answer that does not parse comes back as its text, as Octokit does.
      expect((await octokit.request('GET /not-json', auth)).data).toBe('{oops');
    } finally {
      pool.close();
    }
  });

  it('sends an object body as JSON', async () => {
    const { octokit, pool } = await client();
    try {
      const r = await octokit.request('POST /echo', { ...auth, title: 'a', labels: ['x'] });
      expect(r.status).toBe(201);
      expect(bodies.at(-1)).toEqual({ title: 'a', labels: ['x'] });
    } finally {
      pool.close();
    }
  });

  it('an error answer is an HttpError with status, response and GitHub’s message; the token is redacted in it', async () => {
    const { octokit, pool } = await client();
    try {
      const denied = await octokit.request('GET /denied', auth).catch((e: unknown) => e);
      const http = httpErrorOf(denied);
      expect(http).toMatchObject({ status: 403, answered: true, method: 'GET' });
      expect((http!.data as { message: string }).message).toBe('Resource not accessible');
      expect((denied as Error).message).toBe('Resource not accessible - https://docs.example/x');
      expect(JSON.stringify((denied as { request: unknown }).request)).not.toContain(TOKEN);
      const invalid = await octokit.request('GET /invalid', auth).catch((e: unknown) => e);
      expect((invalid as Error).message).toBe('Validation Failed: {"code":"missing"}');
    } finally {
      pool.close();
    }
  });

  it('no answer: status 500 without a response, the network error kept as the cause', async () => {
    const pool = createGithubFetch('http://127.0.0.1:1');
    const octokit = await createGithubOctokit({ apiUrl: 'http://127.0.0.1:1', fetch: pool.fetch });
    try {
      const err = await octokit.request('GET /json', auth).catch((e: unknown) => e);
      expect(httpErrorOf(err)).toMatchObject({ status: 500, answered: false });
      expect((err as Error).message).toMatch(/ECONNREFUSED/);
    } finally {
      pool.close();
    }
  });
});
