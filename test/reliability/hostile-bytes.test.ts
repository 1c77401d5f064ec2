// Hostile bytes on a real broker socket, each on its own connection while another team keeps
// calling (latency printed): random bytes, half JSON, a 100 MiB line, JSON-RPC batches, unknown
// methods, wrong `jsonrpc` versions, ids of every JSON type, a frame sent one byte at a time.
// Each gets a JSON-RPC error (or is closed), the broker stays up, the other team's every call is
// answered, and the process's open file descriptors return to where they were.
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INIT_LINE, rawExchange } from '../helpers/fixture.js';
import { baseline, startFaultBroker, victimDuringFault, type FaultBroker } from './faults.js';

const openFds = () => readdirSync('/proc/self/fd').length;

describe('hostile bytes on the socket', () => {
  let fb: FaultBroker;
  let socket: string;
  let baselineMs: number[];
  let fdsBefore: number;
  const victim = () => fb.victim();

  beforeAll(async () => {
    fb = await startFaultBroker({ policies: {} });
    socket = fb.inst.socket('beta', 'http');
    baselineMs = await baseline(victim);
    fdsBefore = openFds();
  });

  afterAll(async () => {
    await fb?.close();
  });

  type Answer = { id?: unknown; error?: { code: number; message: string }; result?: unknown };
  const exchange = async (payload: string | Buffer, expectLines: number) =>
    (await rawExchange(socket, payload, { expectLines, waitMs: 10_000 })) as {
      lines: Answer[];
      closed: boolean;
    };

  it('answers every malformed frame with a JSON-RPC error and carries on', async () => {
    const { value } = await victimDuringFault(
      'hostile frames',
      async () => {
        const ids = [0, -1, 1.5, 'x', '', null, true, false, {}, [], 2 ** 53];
        return {
          random: await exchange(
            Buffer.concat([randomBytes(4096).filter((b) => b !== 0x0a), Buffer.from('\n')]),
            1,
          ),
          half: await exchange('{"jsonrpc":"2.0","id":7,"method":"ping"\n', 1),
          batch: await exchange(
            INIT_LINE +
              JSON.stringify([
                { jsonrpc: '2.0', id: 2, method: 'ping' },
                { jsonrpc: '2.0', id: 3, method: 'tools/list' },
              ]) +
              '\n',
            2,
          ),
          unknown: await exchange(
            INIT_LINE + JSON.stringify({ jsonrpc: '2.0', id: 4, method: 'no/such' }) + '\n',
            2,
          ),
          versions: await exchange(
            ['1.0', '3.0', 2, null]
              .map((v, i) => JSON.stringify({ jsonrpc: v, id: 10 + i, method: 'ping' }) + '\n')
              .join(''),
            4,
          ),
          ids: await exchange(
            INIT_LINE +
              ids.map((id) => JSON.stringify({ jsonrpc: '2.0', id, method: 'ping' }) + '\n').join(''),
            1 + ids.length,
          ),
        };
      },
      victim,
      baselineMs,
    );
    expect(value.random.lines).toEqual([
      { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error: frame is not valid JSON' } },
    ]);
    expect(value.half.lines).toEqual(value.random.lines);
    // A batch is not MCP (2025-06-18 removed it): one Invalid Request, and none of its members runs.
    expect(value.batch.lines.filter((l) => l.error)).toEqual([
      {
        jsonrpc: '2.0',
        id: null,
        error: { code: -32600, message: 'Invalid Request: frame is not a JSON-RPC 2.0 message' },
      },
    ]);
    expect(value.batch.lines.some((l) => l.id === 2 || l.id === 3)).toBe(false);
    expect(value.unknown.lines).toContainEqual({
      jsonrpc: '2.0',
      id: 4,
      error: { code: -32601, message: 'Method not found' },
    });
    expect(value.versions.lines.map((l) => [l.id, l.error?.code])).toEqual([
      [10, -32600],
      [11, -32600],
      [12, -32600],
      [13, -32600],
    ]);
    // Strings and safe integers are ids: answered with the same id. Anything else is an Invalid Request.
    const answers = value.ids.lines.filter((l) => l.id !== 1);
    expect(answers).toHaveLength(11);
    expect(answers.filter((a) => a.result).map((a) => a.id)).toEqual(
      expect.arrayContaining([0, -1, 'x', '']),
    );
    expect(answers.filter((a) => a.error?.code === -32600)).toHaveLength(7);
  });

  it('closes a 100 MiB line after its first 4 MiB without buffering the rest', async () => {
    const { value } = await victimDuringFault(
      '100 MiB line',
      () =>
        new Promise<{ sent: number; answer: string }>((resolve) => {
          const s = net.connect(socket);
          let sent = 0;
          let answer = '';
          const chunk = Buffer.alloc(1024 * 1024, 'a');
          s.on('data', (d: Buffer) => (answer += d.toString()));
          s.on('error', () => undefined);
          s.on('close', () => resolve({ sent, answer }));
          const pump = () => {
            while (sent < 100 * 1024 * 1024 && !s.destroyed) {
              sent += chunk.length;
              if (!s.write(chunk)) return void s.once('drain', pump);
            }
            s.end();
          };
          s.on('connect', pump);
        }),
      victim,
      baselineMs,
    );
    expect(JSON.parse(value.answer.split('\n')[0]!)).toMatchObject({
      error: { code: -32600, message: expect.stringContaining('frame exceeds') },
    });
    expect(value.sent).toBeLessThan(100 * 1024 * 1024);
  });

  it('answers a frame sent one byte at a time (100 ms apart) once it is complete', async () => {
    const frame = INIT_LINE;
    const { value } = await victimDuringFault(
      'one byte at a time',
      () =>
        new Promise<string>((resolve, reject) => {
          const s = net.connect(socket);
          let answer = '';
          s.on('data', (d: Buffer) => {
            answer += d.toString();
            if (answer.includes('\n')) {
              s.destroy();
              resolve(answer);
            }
          });
          s.on('error', reject);
          s.on('connect', async () => {
            // The first 40 bytes slowly, then the rest: bounded, but every read sees one byte.
            for (let i = 0; i < 40; i++) {
              s.write(frame[i]!);
              await new Promise((r) => setTimeout(r, 100));
            }
            s.write(frame.slice(40));
          });
        }),
      victim,
      baselineMs,
    );
    expect(JSON.parse(value)).toMatchObject({ id: 1, result: { serverInfo: expect.anything() } });
  });

  it('leaves no file descriptor behind once the hostile connections are gone', async () => {
    const deadline = Date.now() + 5000;
    while (openFds() > fdsBefore && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(openFds()).toBeLessThanOrEqual(fdsBefore);
    await victim(); // and the broker still answers
  });
});
