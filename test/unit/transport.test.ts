// NdjsonTransport against a hostile peer, on in-memory streams.
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { NdjsonTransport, nestingDepth, READ_PAUSE_OUTPUT_BYTES } from '../../src/transport/ndjson.js';

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

  it('decodes a multi-byte character split across chunks, and caps frames in bytes, not characters', async () => {
    const frame = Buffer.from('{"jsonrpc":"2.0","method":"ping","id":"€😀"}\n');
    const p = pair({ maxFrameBytes: frame.length - 1 });
    await p.transport.start();
    const cut = frame.indexOf(Buffer.from('😀')) + 2; // inside the 4-byte emoji
    p.input.write(frame.subarray(0, cut));
    p.input.write(frame.subarray(cut));
    await new Promise((r) => setImmediate(r));
    expect(p.received).toEqual([{ jsonrpc: '2.0', method: 'ping', id: '€😀' }]);
    // One more 3-byte character (one UTF-16 unit) takes the frame over the byte cap.
    p.input.write(Buffer.from('{"jsonrpc":"2.0","method":"ping","id":"€€😀"}\n'));
    await new Promise((r) => setImmediate(r));
    expect(p.isClosed()).toBe(true);
    expect(p.written.join('')).toContain('exceeds');
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

  it('stops reading while its answers are not read, and resumes once they drain', async () => {
    const input = new PassThrough();
    const output = new PassThrough({ highWaterMark: 1024 });
    const transport = new NdjsonTransport(input, output);
    const received: unknown[] = [];
    transport.onmessage = (m) => received.push(m);
    await transport.start();
    const big = 'x'.repeat(READ_PAUSE_OUTPUT_BYTES + 1);
    await transport.send({ jsonrpc: '2.0', id: 1, result: { big } });
    input.write('{"jsonrpc":"2.0","method":"ping","id":2}\n');
    await new Promise((r) => setTimeout(r, 50));
    expect(received).toEqual([]);
    output.resume(); // the peer reads its answer
    await new Promise((r) => setTimeout(r, 50));
    expect(received).toEqual([{ jsonrpc: '2.0', method: 'ping', id: 2 }]);
    await transport.close();
  });

  it('sendResult writes the very frame send() would, from JSON text made beforehand', async () => {
    const p = pair();
    await p.transport.start();
    const result = {
      content: [{ type: 'text', text: 'a "quoted"\nline \u2028' }],
      structuredContent: { n: 1 },
    };
    for (const id of [7, 'req-"x"']) {
      await p.transport.send({ result, jsonrpc: '2.0', id });
      p.transport.sendResult(id, JSON.stringify(result));
    }
    await new Promise((r) => setImmediate(r));
    const frames = p.written.join('').split('\n');
    expect(frames).toHaveLength(5); // four frames, then the empty text after the last newline
    expect(frames[1]).toBe(frames[0]);
    expect(frames[3]).toBe(frames[2]);
    expect(JSON.parse(frames[3]!)).toEqual({ result, jsonrpc: '2.0', id: 'req-"x"' });
  });

  it('measures nesting outside strings only', () => {
    expect(nestingDepth('{"a":[[1]]}')).toBe(3);
    expect(nestingDepth('{"a":"[[[[[[\\"[["}')).toBe(1);
  });
});
