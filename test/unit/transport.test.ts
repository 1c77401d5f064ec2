// NdjsonTransport against a hostile peer, on in-memory streams.
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { NdjsonTransport, nestingDepth } from '../../src/transport.js';

function pair(opts: ConstructorParameters<typeof NdjsonTransport>[2] = {}) {
  const input = new PassThrough();
  const output = new PassThrough();
  const transport = new NdjsonTransport(input, output, opts);
  const received: unknown[] = [];
  const written: string[] = [];
  output.on('data', (d: Buffer) => written.push(d.toString()));
  transport.onmessage = (m) => received.push(m);
  let closed = false;
  transport.onclose = () => (closed = true);
  return { input, transport, received, written, isClosed: () => closed };
}

describe('NdjsonTransport', () => {
  it('reassembles frames split across chunks and several frames in one chunk', async () => {
    const p = pair();
    await p.transport.start();
    p.input.write('{"jsonrpc":"2.0","met');
    p.input.write('hod":"ping","id":1}\n{"jsonrpc":"2.0","method":"ping","id":2}\r\n');
    await new Promise((r) => setImmediate(r));
    expect(p.received).toEqual([
      { jsonrpc: '2.0', method: 'ping', id: 1 },
      { jsonrpc: '2.0', method: 'ping', id: 2 },
    ]);
  });

  it('closes a session whose frame is not completed in time', async () => {
    const p = pair({ frameCompletionMs: 50 });
    await p.transport.start();
    p.input.write('{"jsonrpc":"2.0","method":"pi');
    await new Promise((r) => setTimeout(r, 120));
    expect(p.isClosed()).toBe(true);
  });

  it('does not time out between complete frames', async () => {
    const p = pair({ frameCompletionMs: 50 });
    await p.transport.start();
    p.input.write('{"jsonrpc":"2.0","method":"ping","id":1}\n');
    await new Promise((r) => setTimeout(r, 120));
    expect(p.isClosed()).toBe(false);
  });

  it('closes after too many broken frames in a row', async () => {
    const p = pair();
    await p.transport.start();
    p.input.write('nope\n'.repeat(20));
    await new Promise((r) => setImmediate(r));
    expect(p.isClosed()).toBe(true);
    expect(p.written.join('')).toContain('-32700');
  });

  it('measures nesting outside strings only', () => {
    expect(nestingDepth('{"a":[[1]]}')).toBe(3);
    expect(nestingDepth('{"a":"[[[[[[\\"[["}')).toBe(1);
  });
});
