// A prompt-injected agent speaking raw JSON-RPC to a team socket: protocol order, a peer that
// never reads, and arguments shaped to slip past the audit record.
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  INIT_LINE,
  rawExchange,
  startAcmeHttpBroker,
  type AcmeHttpBroker,
  type EchoUpstream,
  type Installation,
} from '../helpers/fixture.js';

const line = (o: unknown) => JSON.stringify(o) + '\n';
const INITIALIZED = line({ jsonrpc: '2.0', method: 'notifications/initialized' });

describe('hostile MCP sessions', () => {
  let fixture: AcmeHttpBroker | undefined;
  let inst: Installation;
  let upstream: EchoUpstream;
  let socketPath: string;

  beforeAll(async () => {
    fixture = await startAcmeHttpBroker({ secret: 'sk_hostile_session_secret_0123456789' });
    ({ inst, upstream, socketPath } = fixture);
  });

  afterAll(() => fixture?.close());

  const records = async () =>
    (await readFile(inst.auditFile, 'utf8').catch(() => ''))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  it('refuses tools/call and tools/list before initialize; nothing reaches the upstream', async () => {
    const before = upstream.requests.length;
    const call = line({
      jsonrpc: '2.0',
      id: 7,
      method: 'tools/call',
      params: { name: 'http_request', arguments: { method: 'GET', url: `${upstream.origin}/v1/x` } },
    });
    const list = line({ jsonrpc: '2.0', id: 8, method: 'tools/list' });
    const ping = line({ jsonrpc: '2.0', id: 9, method: 'ping' });
    const { lines } = await rawExchange(socketPath, call + list + ping, { expectLines: 3, waitMs: 15_000 });
    const byId = new Map(lines.map((l) => [(l as { id: number }).id, l as Record<string, unknown>]));
    expect(byId.get(7)).toMatchObject({
      error: { code: -32600, message: expect.stringMatching(/initialize/) },
    });
    expect(byId.get(8)).toMatchObject({ error: { code: -32600 } });
    expect(byId.get(9)).toMatchObject({ result: {} });
    expect(upstream.requests.length).toBe(before);
  });

  it('keeps a "__proto__" argument in the audit record as data', async () => {
    // Written by hand: JSON.stringify cannot produce an own "__proto__" key.
    const frame =
      `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"http_request","arguments":` +
      `{"method":"GET","url":"${upstream.origin}/v1/proto","headers":{"__proto__":{"X-Smuggled":"hidden-from-audit"}}}}}\n`;
    await rawExchange(socketPath, INIT_LINE + INITIALIZED + frame, { expectLines: 2, waitMs: 15_000 });
    const mine = (await records()).filter((r) => JSON.stringify(r.args).includes('/v1/proto'));
    expect(mine.length).toBeGreaterThan(0);
    for (const r of mine) expect(JSON.stringify(r.args)).toContain('hidden-from-audit');
  });

  it('stops reading from a peer that does not read its answers, and other sessions carry on', async () => {
    // The peer floods requests and never reads: the broker must not buffer answers without bound.
    const flooder = net.connect(socketPath);
    await new Promise<void>((resolve) => flooder.once('connect', resolve));
    flooder.on('error', () => undefined);
    flooder.pause();
    // tools/list: a 50-byte request whose answer is a few kB, so answers pile up fast.
    const list = line({ jsonrpc: '2.0', id: 1, method: 'tools/list' });
    flooder.write(INIT_LINE + INITIALIZED);
    let written = 0;
    const chunk = list.repeat(1000);
    // Keep writing while the broker keeps reading; once it stops, our writes back up. Sized by
    // bytes, not by a clock: a broker that never stops reading takes all 64 MB, however slow the
    // machine. A write that does not drain within 5 s means the broker stopped reading.
    while (written < 64 * 1024 * 1024) {
      if (!flooder.write(chunk)) {
        const drained = await Promise.race([
          new Promise<boolean>((r) => flooder.once('drain', () => r(true))),
          new Promise<boolean>((r) => setTimeout(() => r(false), 5000)),
        ]);
        if (!drained) break;
      }
      written += chunk.length;
    }
    // The broker stopped reading after a few MB (its answers queue, then it pauses), instead of
    // turning 64 MB of requests into gigabytes of queued answers.
    expect(written).toBeLessThan(16 * 1024 * 1024);
    const other = await rawExchange(
      socketPath,
      INIT_LINE + INITIALIZED + line({ jsonrpc: '2.0', id: 5, method: 'ping' }),
      { expectLines: 2, waitMs: 15_000 },
    );
    expect(other.lines.find((l) => (l as { id?: number }).id === 5)).toMatchObject({ result: {} });
    flooder.destroy();
  });
});
