// An http upstream that refuses, resets, hangs, answers garbage or a truncated body: the calling
// session gets a clear error naming what happened (and no credential), the broker stays up, and
// another team's session calling a healthy upstream is answered throughout (latency printed).
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { baseline, startFaultBroker, victimDuringFault, type FaultBroker } from './faults.js';

const SECRET = 'sk_fault_upstream_secret_5b1f0c9e';
type Mode = 'reset' | 'hang' | 'garbage' | 'truncated' | 'half-headers';

/** A TCP server that speaks just enough HTTP to fail in the way `mode` says. */
async function startFaultyUpstream(): Promise<{ origin: string; mode: Mode; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const state = { mode: 'reset' as Mode };
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.once('data', () => {
      switch (state.mode) {
        case 'reset':
          socket.resetAndDestroy();
          break;
        case 'hang':
          break; // read the request, never answer
        case 'garbage':
          socket.end(Buffer.from('\x00\xff\x13garbage that is not HTTP at all\r\n\r\n\x7f'));
          break;
        case 'truncated':
          socket.end(
            'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n{"part',
          );
          break;
        case 'half-headers':
          socket.end('HTTP/1.1 200 OK\r\ncontent-type: appl');
          break;
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    get mode() {
      return state.mode;
    },
    set mode(m: Mode) {
      state.mode = m;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A loopback port with nothing listening on it. */
async function refusedOrigin(): Promise<string> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return `http://127.0.0.1:${port}`;
}

describe('http upstream faults', () => {
  let fb: FaultBroker;
  let faulty: Awaited<ReturnType<typeof startFaultyUpstream>>;
  let refused: string;
  let acme: Client;
  let baselineMs: number[];
  const texts: string[] = [];
  const victim = () => fb.victim();

  beforeAll(async () => {
    faulty = await startFaultyUpstream();
    refused = await refusedOrigin();
    // acme reaches the faulty upstream and the refusing port; beta (the fixture's) a healthy one.
    const acmePolicy = `team: acme
servers:
  http:
    timeoutMs: 1500
    hosts:
      - origin: ${faulty.origin}
        methods: [GET]
        inject: { header: Authorization, value: "Bearer \${secret:acme-token}" }
        allowPrivateAddress: true
      - origin: ${refused}
        methods: [GET]
        inject: { header: Authorization, value: "Bearer \${secret:acme-token}" }
        allowPrivateAddress: true
    tools:
      http_request: {}
`;
    fb = await startFaultBroker({ secrets: { 'acme-token': SECRET }, policies: { 'acme.yaml': acmePolicy } });
    acme = await fb.client('acme', 'http');
    baselineMs = await baseline(victim);
  });

  afterAll(async () => {
    await fb?.close();
    await faulty?.close();
  });

  /** `n` calls of acme's to `origin`, one after another; returns their error texts. */
  const faultyCalls = (origin: string, n: number) => async () => {
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      const r = (await acme.callTool({
        name: 'http_request',
        arguments: { method: 'GET', url: `${origin}/v1/thing/${i}` },
      })) as CallToolResult;
      expect(r.isError).toBe(true);
      const text = (r.content[0] as { text: string }).text;
      texts.push(text);
      out.push(text);
    }
    return out;
  };

  it('a refused connection: "request to … failed: ECONNREFUSED"', async () => {
    const { value } = await victimDuringFault('http refused', faultyCalls(refused, 20), victim, baselineMs);
    for (const t of value) expect(t).toBe(`error: request to ${refused} failed: ECONNREFUSED`);
  });

  it('a reset connection: "… failed: ECONNRESET"', async () => {
    faulty.mode = 'reset';
    const { value } = await victimDuringFault(
      'http reset',
      faultyCalls(faulty.origin, 20),
      victim,
      baselineMs,
    );
    for (const t of value) expect(t).toBe(`error: request to ${faulty.origin} failed: ECONNRESET`);
  });

  it('an upstream that never answers: the policy timeout, while the other team is answered', async () => {
    faulty.mode = 'hang';
    const { value } = await victimDuringFault('http hang', faultyCalls(faulty.origin, 2), victim, baselineMs);
    for (const t of value) expect(t).toBe('error: upstream did not complete within 1500 ms (http.timeoutMs)');
  });

  it('garbage instead of HTTP: a parse error, not a crash', async () => {
    faulty.mode = 'garbage';
    const { value } = await victimDuringFault(
      'http garbage',
      faultyCalls(faulty.origin, 20),
      victim,
      baselineMs,
    );
    for (const t of value) expect(t).toMatch(new RegExp(`^error: request to ${faulty.origin} failed: HPE_`));
  });

  it('a body cut short of its content-length, or headers cut off: the call fails, saying so', async () => {
    const expected = {
      truncated: `error: request to ${faulty.origin} failed: upstream closed the connection mid-response`,
      // Node's parser reports a connection closed inside the headers as a reset.
      'half-headers': `error: request to ${faulty.origin} failed: ECONNRESET`,
    };
    for (const mode of ['truncated', 'half-headers'] as const) {
      faulty.mode = mode;
      const { value } = await victimDuringFault(
        `http ${mode}`,
        faultyCalls(faulty.origin, 20),
        victim,
        baselineMs,
      );
      for (const t of value) expect(t).toBe(expected[mode]);
    }
  });

  it('after every fault: the broker still answers both teams, and no error carried the credential', async () => {
    faulty.mode = 'reset';
    await victim();
    expect(fb.broker.sessionCount()).toBe(2);
    expect(texts.length).toBeGreaterThan(80);
    const all = texts.join('\n');
    expect(all).not.toContain(SECRET);
    expect(all).not.toContain(Buffer.from(SECRET).toString('base64'));
  });
});
