// The model proxy over a real Unix socket, against the scripted Messages API on loopback, with
// the real audit log, secret store and redactor.
import { readFile, mkdir, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/audit/log.js';
import {
  API_KEY,
  containsKey,
  deferred,
  messagesBody,
  openRequest,
  send,
  startProxy,
  TEAM,
  type ProxyHarness,
} from './harness.js';
import { startScriptedApi, type ScriptedApi } from './scripted-api.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(
  opts: {
    section?: Record<string, unknown>;
    key?: string;
    allowPrivate?: boolean;
    limits?: Parameters<typeof startProxy>[0]['limits'];
    apiOptions?: Partial<Parameters<typeof startScriptedApi>[0]>;
  } = {},
): Promise<{ api: ScriptedApi; h: ProxyHarness }> {
  const api = await startScriptedApi({ apiKey: opts.key ?? API_KEY, ...opts.apiOptions });
  cleanups.push(() => api.close());
  const h = await startProxy({
    section: { upstream: api.url, credential: 'anthropic-key', ...opts.section },
    ...(opts.key ? { key: opts.key } : {}),
    ...(opts.allowPrivate !== undefined ? { allowPrivate: opts.allowPrivate } : {}),
    ...(opts.limits ? { limits: opts.limits } : {}),
  });
  cleanups.push(() => h.close());
  return { api, h };
}

/** The key must not appear anywhere the agent or an auditor can read. */
async function expectNoKeyLeak(h: ProxyHarness, ...texts: string[]): Promise<void> {
  const audit = await readFile(h.auditFile, 'utf8').catch(() => '');
  expect(containsKey(audit)).toBe(false);
  for (const t of texts) expect(containsKey(t)).toBe(false);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- SSE payloads are checked field by field
function parseSse(text: string): { event: string; data: any }[] {
  return text
    .split('\n\n')
    .filter((block) => block.trim())
    .map((block) => {
      const event = /^event: (.*)$/m.exec(block)?.[1] ?? '';
      const data = block
        .split('\n')
        .filter((l) => l.startsWith('data: '))
        .map((l) => l.slice(6))
        .join('\n');
      return { event, data: JSON.parse(data) };
    });
}

// A bound on the wait, generous so a busy machine does not fail it.
async function waitFor(cond: () => boolean, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('forwarding', () => {
  it('injects the key, strips the client credentials and relays the JSON answer unchanged', async () => {
    const { api, h } = await setup();
    api.enqueue({ text: 'Hello!', usage: { input_tokens: 12, output_tokens: 3 } });
    const res = await send(h.socketPath, {
      path: '/v1/messages?beta=true',
      headers: {
        'x-api-key': 'sk-ant-agent-own-key-0000',
        authorization: 'Bearer agent-token-1111',
        'proxy-authorization': 'Basic Zm9vOmJhcg==',
        cookie: 'session=abc',
        'anthropic-api-key': 'sk-ant-smuggled-2222',
        'x-forwarded-for': '10.0.0.1',
        'anthropic-beta': 'interleaved-thinking-2025-05-14',
        'user-agent': 'claude-cli/2.1.0',
        'accept-encoding': 'gzip, br',
      },
      body: messagesBody(),
    });
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({
      type: 'message',
      role: 'assistant',
      content: [{ type: 'text', text: 'Hello!' }],
    });
    expect(res.body.equals(api.requests[0]!.responseBody)).toBe(true);

    expect(api.requests).toHaveLength(1);
    const got = api.requests[0]!;
    expect(got.url).toBe('/v1/messages?beta=true');
    expect(got.headers['x-api-key']).toBe(API_KEY);
    expect(got.headers.authorization).toBeUndefined();
    expect(got.headers['proxy-authorization']).toBeUndefined();
    expect(got.headers.cookie).toBeUndefined();
    expect(got.headers['anthropic-api-key']).toBeUndefined();
    expect(got.headers['x-forwarded-for']).toBeUndefined();
    expect(got.headers['anthropic-version']).toBe('2023-06-01');
    expect(got.headers['anthropic-beta']).toBe('interleaved-thinking-2025-05-14');
    expect(got.headers['user-agent']).toBe('claude-cli/2.1.0');
    expect(got.headers['content-type']).toBe('application/json');
    expect(got.headers['accept-encoding']).toBe('identity');
    expect(got.body).toEqual(messagesBody());

    const records = await h.records();
    expect(records.map((r) => [r.phase, r.decision])).toEqual([
      ['request', 'allow'],
      ['result', 'allow'],
    ]);
    const [request, result] = records as [AuditRecord, AuditRecord];
    expect(request).toMatchObject({
      team: TEAM,
      server: 'model',
      tool: 'messages',
      rule: 'model.paths[0]',
      model: 'claude-sonnet-4-5',
    });
    expect(request.args).toMatchObject({
      method: 'POST',
      path: '/v1/messages?beta=true',
      model: 'claude-sonnet-4-5',
      stream: false,
    });
    expect(result).toMatchObject({
      call: request.call,
      outcome: 'ok',
      status: 200,
      model: 'claude-sonnet-4-5',
      usage: {
        input_tokens: 12,
        output_tokens: 3,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
      },
    });
    expect(result.durationMs).toBeTypeOf('number');
    expect(result.resultBytes).toBe(res.body.length);
    await expectNoKeyLeak(h, res.text);
  });

  it('reuses a pooled upstream connection after the idle timeout of an earlier request would have passed', async () => {
    const { api, h } = await setup({ limits: { idleTimeoutMs: 200 } });
    expect((await send(h.socketPath, { body: messagesBody({ stream: true }) })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 400));
    const second = await send(h.socketPath, { body: messagesBody({ stream: true }) });
    expect(second.status).toBe(200);
    expect(parseSse(second.text).at(-1)!.event).toBe('message_stop');
    const results = (await h.records()).filter((r) => r.phase === 'result');
    expect(results.map((r) => r.outcome)).toEqual(['ok', 'ok']);
    expect(api.requests).toHaveLength(2);
  });

  it('sends an OAuth token as Authorization: Bearer instead of x-api-key', async () => {
    const oauth = 'sk-ant-oat01-' + 'Qw3rTy7uIo9pAs1dFg5hJk2lZx4cVb6nM8' + '-BBBB';
    const { api, h } = await setup({ key: oauth });
    const res = await send(h.socketPath, { body: messagesBody() });
    expect(res.status).toBe(200);
    expect(api.requests[0]!.headers.authorization).toBe(`Bearer ${oauth}`);
    expect(api.requests[0]!.headers['x-api-key']).toBeUndefined();
    await expectNoKeyLeak(h, res.text);
  });

  it('forwards count_tokens', async () => {
    const { api, h } = await setup();
    const res = await send(h.socketPath, { path: '/v1/messages/count_tokens', body: messagesBody() });
    expect(res.status).toBe(200);
    expect(res.json()).toEqual({ input_tokens: expect.any(Number) });
    expect(api.requests[0]!.url).toBe('/v1/messages/count_tokens');
    const [, result] = await h.records();
    expect(result).toMatchObject({
      tool: '/v1/messages/count_tokens',
      rule: 'model.paths[1]',
      outcome: 'ok',
      status: 200,
    });
  });

  it('keeps the path prefix of the upstream URL', async () => {
    const { api, h } = await setup();
    h.setSection({
      upstream: `${api.url}/gateway/anthropic`,
      credential: 'anthropic-key',
      paths: ['/v1/messages'],
    });
    const res = await send(h.socketPath, { body: messagesBody() });
    expect(res.status).toBe(404); // the scripted API only serves /v1/…; what matters is where it went
    expect(api.requests[0]!.url).toBe('/gateway/anthropic/v1/messages');
  });

  it('relays an upstream API error with its status and audits it as an error', async () => {
    const { api, h } = await setup();
    api.enqueue({ error: { status: 529, type: 'overloaded_error', message: 'Overloaded' } });
    const res = await send(h.socketPath, { body: messagesBody() });
    expect(res.status).toBe(529);
    expect(res.json()).toMatchObject({
      type: 'error',
      error: { type: 'overloaded_error', message: 'Overloaded' },
    });
    const [, result] = await h.records();
    expect(result).toMatchObject({
      outcome: 'error',
      status: 529,
      error: expect.stringContaining('overloaded_error: Overloaded'),
    });
  });

  it('decodes a gzip answer the upstream sends despite accept-encoding: identity', async () => {
    const { api, h } = await setup();
    api.enqueue({ text: 'zipped', gzip: true, usage: { input_tokens: 7, output_tokens: 2 } });
    const res = await send(h.socketPath, { body: messagesBody() });
    expect(res.status).toBe(200);
    expect(res.headers['content-encoding']).toBeUndefined();
    expect(res.json().content[0].text).toBe('zipped');
    const [, result] = await h.records();
    expect(result).toMatchObject({ usage: { input_tokens: 7, output_tokens: 2 } });
  });
});

describe('streaming', () => {
  it('relays SSE event by event, byte for byte, before the upstream has finished', async () => {
    const { api, h } = await setup();
    const gate = deferred();
    api.enqueue({
      text: 'Hello there, streaming world.',
      beforeLastEvent: gate.promise,
      usage: { input_tokens: 40, output_tokens: 9, cache_read_input_tokens: 100 },
    });
    const res = await openRequest(h.socketPath, { body: messagesBody({ stream: true }) }).response;
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
    const chunks: Buffer[] = [];
    let sawFirstEventEarly = false;
    for await (const chunk of res as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      if (!sawFirstEventEarly && Buffer.concat(chunks).includes('event: message_start\ndata: ')) {
        // The upstream is still holding its last event: the proxy did not wait for the end.
        expect(api.requests[0]!.responseBody.includes('message_stop')).toBe(false);
        sawFirstEventEarly = true;
        gate.resolve();
      }
    }
    expect(sawFirstEventEarly).toBe(true);
    const body = Buffer.concat(chunks);
    expect(body.equals(api.requests[0]!.responseBody)).toBe(true);

    const events = parseSse(body.toString('utf8'));
    expect(events.map((e) => e.event)).toEqual([
      'message_start',
      'content_block_start',
      'ping',
      ...Array(4).fill('content_block_delta'),
      'content_block_stop',
      'message_delta',
      'message_stop',
    ]);
    expect(
      events
        .filter((e) => e.event === 'content_block_delta')
        .map((e) => e.data.delta.text)
        .join(''),
    ).toBe('Hello there, streaming world.');

    const [request, result] = await h.records();
    expect(request).toMatchObject({ phase: 'request', args: { stream: true } });
    expect(result).toMatchObject({
      phase: 'result',
      outcome: 'ok',
      status: 200,
      model: 'claude-sonnet-4-5',
      usage: {
        input_tokens: 40,
        output_tokens: 9,
        cache_read_input_tokens: 100,
        cache_creation_input_tokens: 0,
      },
      resultBytes: body.length,
    });
    await expectNoKeyLeak(h, body.toString('utf8'));
  }, 15_000);

  it('streams a tool_use block whose input_json_delta pieces rebuild the input', async () => {
    const { api, h } = await setup();
    const input = { workspace: 'api', message: 'fix: handle "quotes" and ünïcode' };
    api.enqueue({ text: 'Let me commit.', toolUse: { name: 'mcp__git__git_commit', input } });
    const res = await send(h.socketPath, { body: messagesBody({ stream: true }) });
    const events = parseSse(res.text);
    const toolStart = events.find(
      (e) => e.event === 'content_block_start' && e.data.content_block.type === 'tool_use',
    )!;
    expect(toolStart.data.content_block).toMatchObject({
      name: 'mcp__git__git_commit',
      input: {},
      id: expect.stringMatching(/^toolu_/),
    });
    const json = events
      .filter((e) => e.event === 'content_block_delta' && e.data.index === toolStart.data.index)
      .map((e) => e.data.delta.partial_json)
      .join('');
    expect(JSON.parse(json)).toEqual(input);
    expect(events.find((e) => e.event === 'message_delta')!.data.delta.stop_reason).toBe('tool_use');
    expect(res.body.equals(api.requests[0]!.responseBody)).toBe(true);
  });

  it('decodes a gzip SSE stream and still taps its usage', async () => {
    const { api, h } = await setup();
    api.enqueue({ text: 'compressed stream', gzip: true, usage: { input_tokens: 5, output_tokens: 4 } });
    const res = await send(h.socketPath, { body: messagesBody({ stream: true }) });
    expect(res.headers['content-encoding']).toBeUndefined();
    expect(parseSse(res.text).at(-1)!.event).toBe('message_stop');
    const [, result] = await h.records();
    expect(result).toMatchObject({ outcome: 'ok', usage: { input_tokens: 5, output_tokens: 4 } });
  });

  it('aborts the upstream request when the client disconnects mid-stream', async () => {
    const { api, h } = await setup();
    api.enqueue({ text: 'never finished', stallAfterEvents: 3 });
    const { req, response } = openRequest(h.socketPath, { body: messagesBody({ stream: true }) });
    const res = await response;
    await new Promise<void>((resolve) => res.once('data', () => resolve()));
    req.destroy();
    await waitFor(() => api.requests[0]?.abortedByClient === true);
    let records: AuditRecord[] = [];
    for (let i = 0; i < 100 && records.length < 2; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 20));
      records = await h.records();
    }
    expect(records[1]).toMatchObject({ phase: 'result', outcome: 'error', error: 'the client disconnected' });
  });
});

describe('policy', () => {
  it('denies a path the policy does not list with 403 in the API error shape, and audits it', async () => {
    const { api, h } = await setup();
    const res = await send(h.socketPath, { method: 'GET', path: '/v1/models' });
    expect(res.status).toBe(403);
    expect(res.json()).toEqual({
      type: 'error',
      error: {
        type: 'permission_error',
        message:
          'denied: model.paths: GET /v1/models is not an allowed path; allowed paths: /v1/messages, /v1/messages/count_tokens',
      },
    });
    expect(api.requests).toHaveLength(0);
    const records = await h.records();
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      phase: 'result',
      decision: 'deny',
      outcome: 'denied',
      rule: 'model.paths',
      tool: '/v1/models',
      status: 403,
    });
  });

  it('matches the normalized path, so dot segments and encoded slashes do not escape the globs', async () => {
    const { api, h } = await setup({ section: { paths: ['/v1/messages', '/v1/messages/*'] } });
    const dots = await send(h.socketPath, { path: '/v1/messages/../models', body: messagesBody() });
    expect(dots.status).toBe(403);
    expect(dots.json().error.message).toContain('POST /v1/models is not an allowed path');
    const encodedDots = await send(h.socketPath, { path: '/v1/messages/%2e%2e/files', body: messagesBody() });
    expect(encodedDots.status).toBe(403);
    const encodedSlash = await send(h.socketPath, {
      path: '/v1/messages/..%2f..%2fadmin',
      body: messagesBody(),
    });
    expect(encodedSlash.status).toBe(403);
    expect(encodedSlash.json().error.message).toContain('encoded "/"');
    expect(api.requests).toHaveLength(0);
  });

  it('forwards GET only on a listed path and refuses other methods', async () => {
    const { api, h } = await setup({ section: { paths: ['/v1/messages', '/v1/models'] } });
    const get = await send(h.socketPath, { method: 'GET', path: '/v1/models' });
    expect(get.status).toBe(404); // forwarded (the scripted API has no /v1/models)
    expect(api.requests.map((r) => `${r.method} ${r.url}`)).toEqual(['GET /v1/models']);
    const del = await send(h.socketPath, { method: 'DELETE', path: '/v1/messages' });
    expect(del.status).toBe(403);
    expect(del.json().error.message).toContain('method DELETE is not forwarded');
    expect(api.requests).toHaveLength(1);
  });

  it('refuses everything once a policy reload removes the model section', async () => {
    const { api, h } = await setup();
    h.setSection(undefined);
    const res = await send(h.socketPath, { body: messagesBody() });
    expect(res.status).toBe(403);
    expect(res.json().error.message).toBe(`denied: model: the model API is not enabled for team "${TEAM}"`);
    expect(api.requests).toHaveLength(0);
  });

  it('refuses a body over the limit before sending anything (declared or chunked)', async () => {
    const { api, h } = await setup({ limits: { maxRequestBytes: 2000 } });
    const big = messagesBody({ messages: [{ role: 'user', content: 'x'.repeat(3000) }] });
    const declared = await send(h.socketPath, { body: big });
    expect(declared.status).toBe(413);
    expect(declared.json().error.type).toBe('request_too_large');

    // Chunked: no content-length to check up front, so the count while reading must catch it.
    const { req, response } = (() => {
      const r = http.request({
        socketPath: h.socketPath,
        method: 'POST',
        path: '/v1/messages',
        headers: {
          'content-type': 'application/json',
          'anthropic-version': '2023-06-01',
          'transfer-encoding': 'chunked',
        },
        agent: false,
      });
      return {
        req: r,
        response: new Promise<http.IncomingMessage>((res, rej) => r.on('response', res).on('error', rej)),
      };
    })();
    for (let i = 0; i < 5; i++) req.write('y'.repeat(1000));
    req.end();
    const chunked = await response;
    expect(chunked.statusCode).toBe(413);
    chunked.resume();
    expect(api.requests).toHaveLength(0);
    const records = await h.records();
    expect(records.map((r) => [r.decision, r.rule])).toEqual([
      ['deny', 'model.maxRequestBytes'],
      ['deny', 'model.maxRequestBytes'],
    ]);
  });

  it('sends nothing when the request record cannot be written', async () => {
    const { api, h } = await setup();
    await h.audit.close(); // later appends reject, as on a full or failed disk
    const res = await send(h.socketPath, { body: messagesBody() });
    expect(res.status).toBe(503);
    expect(res.json().error.message).toMatch(/^refused: the audit log is unavailable, so nothing was sent/);
    expect(api.requests).toHaveLength(0);
  });
});

describe('request targets (path differentials)', () => {
  /** Writes one raw request on a fresh connection and returns what came back until it closed. */
  // waitMs bounds the wait; a complete response or a close ends it sooner.
  function rawExchange(socketPath: string, request: string, waitMs = 15_000): Promise<string> {
    return new Promise((resolve) => {
      const socket = net.connect(socketPath);
      let out = '';
      const done = () => {
        clearTimeout(timer);
        socket.destroy();
        resolve(out);
      };
      const timer = setTimeout(done, waitMs);
      socket.on('data', (d: Buffer) => {
        out += d.toString('latin1');
        // One response is enough: stop at the end of a chunked or sized body.
        if (/\r\n0\r\n\r\n$/.test(out) || /content-length: \d+\r\n[\s\S]*\r\n\r\n\{[\s\S]*\}$/i.test(out))
          done();
      });
      socket.on('error', done);
      socket.on('close', done);
      socket.write(request);
    });
  }

  it('never lets a path that starts with "//" name another host for the key', async () => {
    // A host the key must never reach (the attacker's), on loopback.
    const stolen: http.IncomingHttpHeaders[] = [];
    const attacker = http.createServer((req, res) => {
      stolen.push(req.headers);
      res.end('{}');
    });
    await new Promise<void>((r) => attacker.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => attacker.close(() => r())));
    const attackerHost = `127.0.0.1:${(attacker.address() as net.AddressInfo).port}`;

    const { api, h } = await setup({ section: { paths: ['/**'] } });
    // WHATWG keeps "//host/…" as the path of /.//host/…; resolved against the upstream as a
    // relative reference, that would be a protocol-relative URL to host.
    for (const target of [`/.//${attackerHost}/v1/messages`, `/x/..//${attackerHost}/v1/messages`]) {
      const res = await send(h.socketPath, { path: target, body: messagesBody() });
      // The scripted API (which itself reads "//host/x" as "/x") answered, not the attacker.
      expect(res.json().type).toBe('message');
      await expectNoKeyLeak(h, res.text);
    }
    expect(stolen).toHaveLength(0);
    expect(api.requests.map((r) => r.url)).toEqual([
      `//${attackerHost}/v1/messages`,
      `//${attackerHost}/v1/messages`,
    ]);
  });

  it('refuses an absolute-form target whose path the upstream would read differently', async () => {
    const { api, h } = await setup({ section: { paths: ['/v1/messages', '/v1/messages/**'] } });
    // In a non-special URL ("foo:") a backslash is an ordinary character, so the glob would see
    // one segment under /v1/messages/; under the upstream's https: it is a "/" and ".." climbs.
    const out = await rawExchange(
      h.socketPath,
      'POST foo://x/v1/messages/x\\..\\..\\models HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n',
    );
    expect(out).toMatch(/^HTTP\/1\.1 403 /);
    expect(out).toContain('permission_error');
    expect(api.requests).toHaveLength(0);
    const records = await h.records();
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ decision: 'deny', rule: 'model.paths' });
  });

  it('still forwards an absolute-form http target by its path only', async () => {
    const { api, h } = await setup();
    const body = JSON.stringify(messagesBody());
    const out = await rawExchange(
      h.socketPath,
      `POST http://evil.example/v1/messages HTTP/1.1\r\nHost: evil.example\r\ncontent-type: application/json\r\n` +
        `anthropic-version: 2023-06-01\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    expect(out).toMatch(/^HTTP\/1\.1 200 /);
    expect(api.requests.map((r) => r.url)).toEqual(['/v1/messages']);
  });
});

describe('daily token budget', () => {
  it('charges max_tokens for a stream the client abandons before its output usage arrives', async () => {
    const { api, h } = await setup({ section: { dailyTokenBudget: 1_000_000 } });
    api.enqueue({ text: 'abandoned', stallAfterEvents: 2, usage: { input_tokens: 30 } });
    const { req, response } = openRequest(h.socketPath, {
      body: messagesBody({ stream: true, max_tokens: 4096 }),
    });
    const res = await response;
    await new Promise<void>((resolve) => res.once('data', () => resolve()));
    req.destroy();
    await waitFor(() => api.requests[0]!.abortedByClient);
    let records: AuditRecord[] = [];
    for (let i = 0; i < 100 && records.length < 2; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 20));
      records = await h.records();
    }
    expect(records[1]).toMatchObject({
      usage: { input_tokens: 30, output_tokens: 4096 },
      usageEstimated: true,
    });
    const usage = JSON.parse(await readFile(path.join(h.stateDir, 'model', TEAM, 'usage.json'), 'utf8'));
    expect(usage).toMatchObject({ input_tokens: 30, output_tokens: 4096 });
  });

  it('answers 429 once the budget is used up, forwards nothing, and survives a restart', async () => {
    const { api, h } = await setup({ section: { dailyTokenBudget: 100 } });
    api.enqueue({ text: 'first', usage: { input_tokens: 60, output_tokens: 20 } });
    api.enqueue({ text: 'second', usage: { input_tokens: 10, output_tokens: 15 } });
    expect((await send(h.socketPath, { body: messagesBody() })).status).toBe(200); // 80 used
    expect((await send(h.socketPath, { body: messagesBody({ stream: true }) })).status).toBe(200); // 105 used
    const denied = await send(h.socketPath, { body: messagesBody() });
    expect(denied.status).toBe(429);
    expect(denied.json().error.type).toBe('rate_limit_error');
    expect(denied.json().error.message).toMatch(
      /^denied: model\.dailyTokenBudget: daily token budget of 100 tokens for team "payments" is used up \(105 used today\); resets at 00:00 UTC \(in \d+h \d+m\)$/,
    );
    const retryAfter = Number(denied.headers['retry-after']);
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(86_400);
    expect(api.requests).toHaveLength(2);
    const records = await h.records();
    expect(records.at(-1)).toMatchObject({
      decision: 'deny',
      rule: 'model.dailyTokenBudget',
      status: 429,
      args: { model: 'claude-sonnet-4-5' },
    });

    const usage = JSON.parse(await readFile(path.join(h.stateDir, 'model', TEAM, 'usage.json'), 'utf8'));
    expect(usage).toMatchObject({
      input_tokens: 70,
      output_tokens: 35,
      requests: 2,
      day: new Date().toISOString().slice(0, 10),
    });

    // A restart reads the persisted usage: still over budget.
    await h.stop();
    const again = await startProxy({
      dir: h.dir,
      section: { upstream: api.url, credential: 'anthropic-key', dailyTokenBudget: 100 },
    });
    cleanups.push(() => again.stop());
    expect((await send(again.socketPath, { body: messagesBody() })).status).toBe(429);
    expect(api.requests).toHaveLength(2);
  });

  it('counts cached input tokens and starts a new UTC day from zero', async () => {
    const { api, h } = await setup({ section: { dailyTokenBudget: 1000 } });
    const usageFile = path.join(h.stateDir, 'model', TEAM, 'usage.json');
    await mkdir(path.dirname(usageFile), { recursive: true });
    await writeFile(
      usageFile,
      JSON.stringify({ day: '2000-01-01', input_tokens: 999_999, output_tokens: 0, requests: 1 }),
    );
    api.enqueue({
      text: 'cached',
      usage: {
        input_tokens: 1,
        cache_read_input_tokens: 990,
        cache_creation_input_tokens: 5,
        output_tokens: 4,
      },
    });
    expect((await send(h.socketPath, { body: messagesBody() })).status).toBe(200);
    expect((await send(h.socketPath, { body: messagesBody() })).status).toBe(429);
    expect(api.requests).toHaveLength(1);
  });
});

describe('redaction', () => {
  it('scrubs the key from an upstream body even when it is split across chunks', async () => {
    const { api, h } = await setup();
    const echoed = JSON.stringify({
      type: 'error',
      error: {
        type: 'authentication_error',
        message: `invalid key ${API_KEY} (b64 ${Buffer.from(API_KEY).toString('base64')})`,
      },
    });
    const cut = echoed.indexOf(API_KEY) + 17;
    api.enqueue({
      raw: {
        status: 401,
        headers: { 'content-type': 'application/json', 'x-echo': `key=${API_KEY}` },
        chunks: [echoed.slice(0, cut), echoed.slice(cut)],
        delayMs: 50,
      },
    });
    const res = await send(h.socketPath, { body: messagesBody() });
    expect(res.status).toBe(401);
    expect(res.text).toContain('[redacted]');
    expect(res.headers['x-echo']).toBe('key=[redacted]');
    await expectNoKeyLeak(h, res.text, JSON.stringify(res.headers));
  });

  it('scrubs a key split across SSE chunks without holding back complete events', async () => {
    const { api, h } = await setup();
    const first = `event: message_start\ndata: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":1,"output_tokens":1}}}\n\n`;
    const leak = `event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"key ${API_KEY}"}}\n\n`;
    const cut = leak.indexOf(API_KEY) + 10;
    api.enqueue({
      raw: {
        headers: { 'content-type': 'text/event-stream' },
        chunks: [
          first,
          leak.slice(0, cut),
          leak.slice(cut),
          `event: message_stop\ndata: {"type":"message_stop"}\n\n`,
        ],
        delayMs: 100,
      },
    });
    const res = await openRequest(h.socketPath, { body: messagesBody({ stream: true }) }).response;
    const chunks: Buffer[] = [];
    let firstSeenBeforeLeakSent = false;
    for await (const c of res as AsyncIterable<Buffer>) {
      chunks.push(c);
      if (chunks.length === 1)
        firstSeenBeforeLeakSent =
          !api.requests[0]!.responseBody.includes('message_stop') &&
          Buffer.concat(chunks).toString() === first;
    }
    const text = Buffer.concat(chunks).toString('utf8');
    expect(firstSeenBeforeLeakSent).toBe(true);
    expect(text).toContain('"text":"key [redacted]"');
    await expectNoKeyLeak(h, text);
  });
});

describe('upstream failures', () => {
  it('answers 502 when the upstream is unreachable, without the key in the error', async () => {
    const { api, h } = await setup();
    await api.close();
    const res = await send(h.socketPath, { body: messagesBody() });
    expect(res.status).toBe(502);
    expect(res.json().error).toMatchObject({
      type: 'api_error',
      message: expect.stringMatching(/could not be reached: ECONNREFUSED/),
    });
    const [request, result] = await h.records();
    expect(request!.phase).toBe('request');
    expect(result).toMatchObject({
      outcome: 'error',
      status: 502,
      error: expect.stringContaining('ECONNREFUSED'),
    });
    await expectNoKeyLeak(h, res.text);
  });

  it('bounds an upstream that never answers (idle timeout)', async () => {
    const { api, h } = await setup({ limits: { idleTimeoutMs: 300 } });
    api.enqueue({ hang: true });
    const res = await send(h.socketPath, { body: messagesBody() });
    expect(res.status).toBe(502);
    expect(res.json().error.message).toContain('sent nothing for 300 ms');
    const [, result] = await h.records();
    expect(result).toMatchObject({ outcome: 'error', status: 502 });
    await expectNoKeyLeak(h, res.text);
  });

  it('ends a stalled stream with an SSE error event (idle timeout mid-stream)', async () => {
    const { api, h } = await setup({ limits: { idleTimeoutMs: 300 } });
    api.enqueue({ text: 'stalls', stallAfterEvents: 2, usage: { input_tokens: 30 } });
    const res = await send(h.socketPath, { body: messagesBody({ stream: true }) });
    expect(res.status).toBe(200);
    const events = parseSse(res.text);
    expect(events.map((e) => e.event)).toEqual(['message_start', 'content_block_start', 'error']);
    expect(events[2]!.data).toMatchObject({
      type: 'error',
      error: { type: 'api_error', message: expect.stringContaining('sent nothing for 300 ms') },
    });
    const [, result] = await h.records();
    expect(result).toMatchObject({ outcome: 'error', usage: { input_tokens: 30 } });
    await waitFor(() => api.requests[0]!.abortedByClient);
  });

  it('bounds a stream that trickles forever (total timeout)', async () => {
    const { api, h } = await setup({
      limits: { totalTimeoutMs: 600, idleTimeoutMs: 10_000 },
      apiOptions: { eventDelayMs: 100 },
    });
    api.enqueue({ text: Array(40).fill('word').join(' ') });
    const res = await send(h.socketPath, { body: messagesBody({ stream: true }) });
    const events = parseSse(res.text);
    // Cut short by the total timeout: the upstream's own end of the stream never arrived.
    expect(events.map((e) => e.event)).not.toContain('message_stop');
    expect(events.at(-1)).toMatchObject({
      event: 'error',
      data: { error: { message: expect.stringContaining('did not finish within 600 ms') } },
    });
  });

  it('answers 502 at once when the upstream switches protocols (101) unasked', async () => {
    const sockets = new Set<net.Socket>();
    const switcher = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.once('data', () =>
        socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n'),
      );
    });
    await new Promise<void>((r) => switcher.listen(0, '127.0.0.1', r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          switcher.close(() => r());
        }),
    );
    const { h } = await setup({ limits: { totalTimeoutMs: 4000 } });
    h.setSection({
      upstream: `http://127.0.0.1:${(switcher.address() as net.AddressInfo).port}`,
      credential: 'anthropic-key',
      paths: ['/v1/messages'],
    });
    const res = await send(h.socketPath, { body: messagesBody() });
    expect(res.status).toBe(502);
    expect(res.json().error.message).toContain('101');
    // Answered on the 101 itself, not when the 4 s total timeout ran out.
    expect(res.json().error.message).not.toContain('did not finish');
    const [, result] = await h.records();
    expect(result).toMatchObject({ outcome: 'error', status: 502 });
  }, 15_000);

  it('refuses a private upstream unless allowed, for IP literals and DNS names alike', async () => {
    const { api, h } = await setup({ allowPrivate: false });
    const literal = await send(h.socketPath, { body: messagesBody() });
    expect(literal.status).toBe(502);
    expect(literal.json().error.message).toContain('upstream 127.0.0.1 is a non-public address (loopback)');

    h.setSection({
      upstream: `http://localhost:${api.port}`,
      credential: 'anthropic-key',
      paths: ['/v1/messages'],
    });
    const named = await send(h.socketPath, { body: messagesBody() });
    expect(named.status).toBe(502);
    expect(named.json().error.message).toMatch(/localhost \((127\.0\.0\.1|::1)\) is a non-public address/);
    expect(api.requests).toHaveLength(0);
  });

  it('never connects to a cloud metadata address, even with private upstreams allowed', async () => {
    const { h } = await setup({ allowPrivate: true });
    h.setSection({
      upstream: 'http://169.254.169.254',
      credential: 'anthropic-key',
      paths: ['/v1/messages'],
    });
    const res = await send(h.socketPath, { body: messagesBody() });
    expect(res.status).toBe(502);
    // Refused by address before any connection (a connect attempt would end in a timeout error).
    expect(res.json().error.message).toContain('cloud metadata endpoint');
  });
});
