// The model proxy under concurrency and slow uploads: the token budget cannot be overshot by
// racing requests, a request abandoned before its first byte is still charged, and request
// bodies buffered across connections are bounded.
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/audit/log.js';
import {
  API_KEY,
  deferred,
  messagesBody,
  openRequest,
  send,
  startProxy,
  TEAM,
  type ProxyHarness,
} from '../model/harness.js';
import { startScriptedApi, type ScriptedApi, type ScriptedReply } from '../model/scripted-api.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(opts: {
  section?: Record<string, unknown>;
  fallback?: ScriptedReply;
  limits?: Parameters<typeof startProxy>[0]['limits'];
}): Promise<{ api: ScriptedApi; h: ProxyHarness }> {
  const api = await startScriptedApi({
    apiKey: API_KEY,
    ...(opts.fallback ? { fallback: opts.fallback } : {}),
  });
  cleanups.push(() => api.close());
  const h = await startProxy({
    section: { upstream: api.url, credential: 'anthropic-key', ...opts.section },
    allowPrivate: true,
    ...(opts.limits ? { limits: opts.limits } : {}),
  });
  cleanups.push(() => h.close());
  return { api, h };
}

async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await condition()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const usageFile = (h: ProxyHarness) => path.join(h.stateDir, 'model', TEAM, 'usage.json');
const totalTokens = (u: Record<string, number>) =>
  u.input_tokens! + u.output_tokens! + u.cache_creation_input_tokens! + u.cache_read_input_tokens!;

describe('model proxy bounds', () => {
  it('20 concurrent requests against a 1,000-token budget overshoot it by at most one request', async () => {
    const gate = deferred();
    // Each request really costs 110 tokens; all are held at the upstream until every one was decided.
    const { api, h } = await setup({
      section: { dailyTokenBudget: 1000 },
      fallback: {
        text: 'ok',
        usage: { input_tokens: 10, output_tokens: 100 },
        beforeLastEvent: gate.promise,
      },
    });
    let refused = 0;
    const sends = Array.from({ length: 20 }, () =>
      send(h.socketPath, { body: messagesBody({ stream: true, max_tokens: 100 }) }).then((r) => {
        if (r.status === 429) refused++;
        return r;
      }),
    );
    await until(() => api.requests.length + refused === 20, 'every request to be forwarded or refused');
    gate.resolve();
    const results = await Promise.all(sends);
    const ok = results.filter((r) => r.status === 200).length;
    expect(ok + refused).toBe(20);
    expect(refused).toBeGreaterThan(0);
    expect(api.requests.length).toBe(ok);
    const usage = JSON.parse(await readFile(usageFile(h), 'utf8')) as Record<string, number>;
    expect(totalTokens(usage)).toBe(ok * 110);
    expect(totalTokens(usage)).toBeLessThanOrEqual(1000 + 110);
    const denial = results.find((r) => r.status === 429)!;
    expect(denial.json().error.message).toMatch(/reserved by requests in flight/);
  });

  it('charges a request the upstream received but the client abandoned before the first byte', async () => {
    const { api, h } = await setup({ section: { dailyTokenBudget: 1_000_000 }, fallback: { hang: true } });
    const body = messagesBody({ max_tokens: 500 });
    const { req, response } = openRequest(h.socketPath, { body });
    response.catch(() => undefined);
    await until(() => api.requests.length === 1, 'the upstream to receive the request');
    req.destroy();
    let records: AuditRecord[] = [];
    await until(async () => (records = await h.records()).length >= 2, 'the result record');
    const estimate = Math.ceil(Buffer.byteLength(JSON.stringify(body)) / 4);
    expect(records[1]).toMatchObject({
      phase: 'result',
      usage: { input_tokens: estimate, output_tokens: 500 },
      usageEstimated: true,
    });
    const usage = JSON.parse(await readFile(usageFile(h), 'utf8')) as Record<string, number>;
    expect(usage).toMatchObject({ input_tokens: estimate, output_tokens: 500 });
  });

  it('refuses request bodies past the bytes buffered across all connections, and recovers', async () => {
    const MiB = 1024 * 1024;
    const { h } = await setup({ limits: { maxRequestBytes: MiB, maxBufferedBytes: 2 * MiB } });
    // Slow uploads: each declares 1 MiB, sends 700 kB, then stalls.
    const answers: string[] = [];
    const uploads = await Promise.all(
      Array.from({ length: 4 }, async (_, i) => {
        const socket = net.connect(h.socketPath);
        await new Promise<void>((r) => socket.once('connect', r));
        socket.on('error', () => undefined);
        socket.on('data', (d) => (answers[i] = (answers[i] ?? '') + d.toString()));
        socket.write(
          `POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\nContent-Length: ${MiB}\r\n\r\n`,
        );
        await new Promise<void>((r) => socket.write(Buffer.alloc(700 * 1024, 0x20), () => r()));
        return socket;
      }),
    );
    // 2 MiB hold at most two 700 kB bodies: at least two uploads are refused.
    const refusedAnswers = () => answers.filter((a) => a?.startsWith('HTTP/1.1 503'));
    await until(() => refusedAnswers().length >= 2, 'two 503s');
    for (const a of refusedAnswers()) expect(a).toMatch(/overloaded_error/);
    for (const s of uploads) s.destroy();
    // Once the stalled uploads are gone, their bytes are free again.
    await until(async () => (await send(h.socketPath, { body: messagesBody() })).status === 200, 'a 200');
    const refusals = (await h.records()).filter((r) => r.rule === 'model.maxBufferedBytes');
    // Exactly two: a refused body's bytes are freed at once, so the other two fit.
    expect(refusals).toHaveLength(2);
  });
});
