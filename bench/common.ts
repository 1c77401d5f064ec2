// Shared by the benchmarks: latency statistics, a load driver, and a minimal JSON-RPC MCP client
// (handshake, then requests by id): the benches measure servers, not the CPU an MCP SDK client
// spends validating responses on the same 2-core machine.
import { open, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

/** The nearest-rank median of unsorted `xs` (e.g. of rounds' figures). */
export function median(xs: number[]): number {
  return percentile(
    [...xs].sort((a, b) => a - b),
    0.5,
  );
}

/**
 * Median latency of one write + fdatasync of a small record in `dir`: the disk's price for one
 * durable audit record, the floor the durable-overhead targets are set from.
 */
export async function fdatasyncMs(dir: string, samples = 200): Promise<number> {
  const file = path.join(dir, 'fdatasync-probe');
  const fh = await open(file, 'a', 0o600);
  const line = Buffer.from('x'.repeat(400) + '\n');
  const times: number[] = [];
  try {
    for (let i = 0; i < samples; i++) {
      const t = performance.now();
      await fh.write(line);
      await fh.datasync();
      times.push(performance.now() - t);
    }
  } finally {
    await fh.close();
    await rm(file, { force: true });
  }
  return percentile(
    times.sort((a, b) => a - b),
    0.5,
  );
}

export interface Stats {
  p50: number;
  p99: number;
  perSecond: number;
}

export function stats(latencies: number[], wallMs: number): Stats {
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    perSecond: (latencies.length / wallMs) * 1000,
  };
}

/** Runs `total` calls spread over `workers` concurrent loops; returns per-call latencies. */
export async function load(
  workers: Array<() => Promise<void>>,
  total: number,
): Promise<{ latencies: number[]; wallMs: number }> {
  const latencies: number[] = [];
  let issued = 0;
  const start = performance.now();
  await Promise.all(
    workers.map(async (call) => {
      while (issued < total) {
        issued++;
        const t = performance.now();
        await call();
        latencies.push(performance.now() - t);
      }
    }),
  );
  return { latencies, wallMs: performance.now() - start };
}

export class RawMcpSession {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(
    private readonly input: NodeJS.ReadableStream,
    private readonly output: NodeJS.WritableStream,
    private readonly closeFn: () => void,
  ) {
    input.setEncoding('utf8');
    input.on('data', (chunk: string) => {
      this.buffer += chunk;
      let nl;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const msg = JSON.parse(this.buffer.slice(0, nl)) as {
          id?: number;
          result?: unknown;
          error?: { message: string };
        };
        this.buffer = this.buffer.slice(nl + 1);
        const waiter = msg.id !== undefined ? this.pending.get(msg.id) : undefined;
        if (!waiter) continue;
        this.pending.delete(msg.id!);
        if (msg.error) waiter.reject(new Error(msg.error.message));
        else waiter.resolve(msg.result);
      }
    });
  }

  /** A session on a Unix socket (Airlock). */
  static async open(socketPath: string): Promise<RawMcpSession> {
    const socket = net.connect(socketPath);
    await new Promise((r) => socket.once('connect', r));
    return RawMcpSession.over(socket, socket, () => socket.destroy());
  }

  /** A session over any pair of streams (a server's stdio), after the MCP handshake. */
  static async over(
    input: NodeJS.ReadableStream,
    output: NodeJS.WritableStream,
    close: () => void,
  ): Promise<RawMcpSession> {
    const session = new RawMcpSession(input, output, close);
    await session.request('initialize', {
      protocolVersion: '2025-06-18',
      capabilities: {},
      clientInfo: { name: 'bench', version: '0' },
    });
    output.write(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) + '\n');
    return session;
  }

  request(method: string, params: unknown): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.output.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
    });
  }

  close(): void {
    this.closeFn();
  }
}
