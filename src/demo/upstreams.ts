// Local stand-ins for the services the demo agent works with, on the host's loopback (which the
// sandboxed agent cannot reach): an "orders" HTTP API that checks its API key like a real one.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { timingSafeEqual } from 'node:crypto';

export interface ApiRequest {
  method: string;
  url: string;
  /** The request carried `Authorization: Bearer <the API key>`. */
  authorized: boolean;
}

/** A fake API on the host's loopback, and the requests it got. */
export interface LocalApi {
  /** e.g. http://127.0.0.1:41234 */
  origin: string;
  requests: ApiRequest[];
  close(): Promise<void>;
}

const ORDERS = [
  { id: 'ord_1001', customer: 'Ada', total: 4200, currency: 'EUR', status: 'paid' },
  { id: 'ord_1002', customer: 'Grace', total: 1999, currency: 'EUR', status: 'refunded' },
];

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

function reply(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/** Starts `server` on a free loopback port. */
async function listen(server: http.Server, requests: ApiRequest[]): Promise<LocalApi> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * An orders API: every request needs `Authorization: Bearer <apiKey>` (401 otherwise);
 * GET /v1/orders lists orders, GET /v1/orders/<id> shows one, DELETE /v1/orders/<id> "deletes".
 */
export async function startOrdersApi(apiKey: string): Promise<LocalApi> {
  const requests: ApiRequest[] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    const authorized = sameSecret(req.headers.authorization ?? '', `Bearer ${apiKey}`);
    requests.push({ method: req.method ?? '', url: req.url ?? '', authorized });
    if (!authorized) return reply(res, 401, { error: 'missing or wrong API key' });
    const url = new URL(req.url ?? '/', 'http://localhost');
    const one = /^\/v1\/orders\/([\w-]+)$/.exec(url.pathname);
    if (req.method === 'GET' && url.pathname === '/v1/orders') return reply(res, 200, { orders: ORDERS });
    if (req.method === 'GET' && one) {
      const order = ORDERS.find((o) => o.id === one[1]);
      return order ? reply(res, 200, order) : reply(res, 404, { error: 'no such order' });
    }
    if (req.method === 'DELETE' && one) return reply(res, 200, { deleted: one[1] });
    return reply(res, 404, { error: 'not found' });
  });
  return listen(server, requests);
}

/**
 * A stand-in for the Anthropic Messages API: POST /v1/messages needs `x-api-key: <apiKey>`
 * (401 otherwise) and answers with a short assistant message and its token usage.
 */
export async function startModelApi(apiKey: string): Promise<LocalApi> {
  const requests: ApiRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const key = req.headers['x-api-key'];
      const authorized = typeof key === 'string' && sameSecret(key, apiKey);
      requests.push({ method: req.method ?? '', url: req.url ?? '', authorized });
      if (!authorized) {
        return reply(res, 401, {
          type: 'error',
          error: { type: 'authentication_error', message: 'invalid x-api-key' },
        });
      }
      if (req.method !== 'POST' || req.url !== '/v1/messages') {
        return reply(res, 404, { type: 'error', error: { type: 'not_found_error', message: 'not found' } });
      }
      let model = 'claude-demo';
      try {
        model = String(
          (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { model?: string }).model ?? model,
        );
      } catch {
        return reply(res, 400, {
          type: 'error',
          error: { type: 'invalid_request_error', message: 'body is not JSON' },
        });
      }
      reply(res, 200, {
        id: 'msg_demo_01',
        type: 'message',
        role: 'assistant',
        model,
        content: [{ type: 'text', text: 'Hello from the (local, fake) model.' }],
        stop_reason: 'end_turn',
        usage: { input_tokens: 12, output_tokens: 9 },
      });
    });
  });
  return listen(server, requests);
}
