// tools/call reaches the pipeline on a direct path from the transport (src/transport/session.ts); whatever
// that path does not take goes through the MCP SDK. Both must answer alike, and cancellation,
// the handshake rule and malformed calls must behave as they do through the SDK.
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import {
  acmeHttpPolicy,
  INIT_LINE,
  makeInstallation,
  rawExchange,
  startEchoUpstream,
  type EchoUpstream,
  type Installation,
} from '../helpers/fixture.js';

const SECRET = 'sk_live_fastPathSecretValue0123456789';
const INITIALIZED = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) + '\n';
const line = (message: unknown) => JSON.stringify(message) + '\n';
const call = (id: unknown, params: unknown, extra: Record<string, unknown> = {}) =>
  line({ jsonrpc: '2.0', id, method: 'tools/call', params, ...extra });

interface Answer {
  id?: unknown;
  result?: { content: Array<{ text: string }>; structuredContent?: unknown; isError?: boolean };
  error?: { code: number; message: string };
}

let inst: Installation;
let upstream: EchoUpstream;
let broker: Broker;
let socketPath: string;
/** Requests to /v1/slow get no answer until the test releases them. */
const held: Array<() => void> = [];

beforeAll(async () => {
  const [{ Broker }, { loadConfig }, { silentLogger }] = await Promise.all([
    import('../../src/broker.js'),
    import('../../src/config/airlock-yaml.js'),
    import('../../src/log.js'),
  ]);
  upstream = await startEchoUpstream((req, res) => {
    if (!req.url!.startsWith('/v1/slow')) return false;
    held.push(() => res.end('{}'));
    return true;
  });
  inst = await makeInstallation({
    secrets: { 'api-token': SECRET },
    policies: { 'acme.yaml': acmeHttpPolicy(upstream.origin, '    timeoutMs: 20000\n') },
  });
  broker = await Broker.start(await loadConfig(inst.configFile), { log: silentLogger() });
  socketPath = inst.socket('acme', 'http');
});

afterAll(async () => {
  for (const release of held.splice(0)) release();
  await broker?.stop(1000);
  await upstream?.close();
  await inst?.cleanup();
});

/** A session that reads answers by id. */
async function session(): Promise<{
  send(text: string): void;
  answer(id: unknown, waitMs?: number): Promise<Answer | undefined>;
  close(): void;
}> {
  const socket = net.connect(socketPath);
  await new Promise((r) => socket.once('connect', r));
  const answers = new Map<unknown, Answer>();
  const waiters = new Map<unknown, (a: Answer) => void>();
  let buf = '';
  socket.on('data', (d) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const a = JSON.parse(buf.slice(0, i)) as Answer;
      buf = buf.slice(i + 1);
      answers.set(a.id, a);
      waiters.get(a.id)?.(a);
    }
  });
  return {
    send: (text) => socket.write(text),
    answer: (id, waitMs = 10_000) =>
      new Promise((resolve) => {
        if (answers.has(id)) return resolve(answers.get(id));
        const timer = setTimeout(() => resolve(undefined), waitMs);
        waiters.set(id, (a) => {
          clearTimeout(timer);
          resolve(a);
        });
      }),
    close: () => socket.destroy(),
  };
}

/** `value` with every Date header blanked: as an object key, in JSON text, as a `date:` line. */
function undated(value: unknown): unknown {
  if (typeof value === 'string')
    return value.replace(/("date"\s*:\s*")[^"]*"/gi, '$1-"').replace(/^date: .*$/gim, 'date: -');
  if (Array.isArray(value)) return value.map(undated);
  if (value && typeof value === 'object')
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, k.toLowerCase() === 'date' ? '-' : undated(v)]),
    );
  return value;
}

describe('tools/call paths', () => {
  it('a plain call and one the SDK handles (extra _meta) get the same answer, and both are audited', async () => {
    const s = await session();
    s.send(INIT_LINE + INITIALIZED);
    await s.answer(1);
    const args = { method: 'GET', url: `${upstream.origin}/v1/items?x=1` };
    s.send(call(2, { name: 'http_request', arguments: args }));
    s.send(call(3, { name: 'http_request', arguments: args, _meta: { 'example.com/trace': 'x' } }));
    const [fast, viaSdk] = [await s.answer(2), await s.answer(3)];
    s.close();
    expect(fast?.result?.isError).toBeFalsy();
    expect(fast?.result?.content[0]!.text).not.toContain(SECRET);
    // The same answer but for the upstream's Date header, which may tick between the two calls.
    expect(undated(fast?.result)).toEqual(undated(viaSdk?.result));
    const audit = await readFile(inst.auditFile, 'utf8');
    expect(audit).not.toContain(SECRET);
    expect(audit.match(/"url":"[^"]*\/v1\/items\?x=1"/g)?.length).toBe(4); // request + result, twice
  });

  it('refuses a call before initialize, and malformed calls get the SDK errors; the session carries on', async () => {
    const { lines } = await rawExchange(
      socketPath,
      call(1, { name: 'http_request', arguments: {} }) +
        INIT_LINE.replace('"id":1', '"id":2') +
        INITIALIZED +
        call(3, { name: 'http_request', arguments: [1, 2] }) +
        call(4, { name: 42 }) +
        call(5, { name: 'http_request', arguments: {} }, { extra: true }) +
        call(6, { name: 'no_such_tool', arguments: {} }),
      { expectLines: 6, waitMs: 10_000 },
    );
    const byId = new Map((lines as Answer[]).map((a) => [a.id, a]));
    expect(byId.get(1)?.error).toMatchObject({
      code: -32600,
      message: expect.stringMatching(/not initialized/),
    });
    // The SDK's answer to a request its schema refuses (an invalid-params or internal error).
    for (const id of [3, 4]) expect([-32602, -32603]).toContain(byId.get(id)?.error?.code);
    // A frame with an unknown top-level member is not a JSON-RPC request at all.
    expect(byId.get(5)?.error).toMatchObject({
      code: -32600,
      message: expect.stringMatching(/not a JSON-RPC/),
    });
    expect(byId.get(6)?.result?.content[0]!.text).toMatch(/^denied: http.tools: tool "no_such_tool"/);
  });

  it('a cancelled call gets no answer and its upstream request is aborted; the next call is answered', async () => {
    const s = await session();
    s.send(INIT_LINE + INITIALIZED);
    await s.answer(1);
    const before = held.length;
    s.send(
      call('slow-1', {
        name: 'http_request',
        arguments: { method: 'GET', url: `${upstream.origin}/v1/slow` },
      }),
    );
    for (let i = 0; i < 200 && held.length === before; i++) await new Promise((r) => setTimeout(r, 25));
    expect(held.length).toBe(before + 1);
    s.send(
      line({
        jsonrpc: '2.0',
        method: 'notifications/cancelled',
        params: { requestId: 'slow-1', reason: 'user' },
      }),
    );
    s.send(
      call(7, { name: 'http_request', arguments: { method: 'GET', url: `${upstream.origin}/v1/after` } }),
    );
    expect((await s.answer(7))?.result?.isError).toBeFalsy();
    // The cancelled call's result record says it was aborted; no answer was sent for it.
    for (let i = 0; i < 200; i++) {
      if ((await readFile(inst.auditFile, 'utf8')).includes('the call was aborted: cancelled')) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(await readFile(inst.auditFile, 'utf8')).toContain('the call was aborted: cancelled');
    expect(await s.answer('slow-1', 300)).toBeUndefined();
    s.close();
  });
});
