// What the benchmarks share: a concurrent load loop, latency percentiles, broker memory from
// /proc, and a minimal JSON-RPC MCP client (handshake, then requests by id) so a bench measures
// the broker rather than the CPU an MCP SDK client spends validating responses.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

const CLI = path.resolve(import.meta.dirname, '../src/cli.js');

/**
 * `airlock serve` as its own process (as in production), once `socketPath` exists.
 * BENCH_BROKER_NODE_ARGS adds node flags (e.g. --cpu-prof).
 */
export async function startServe(configFile: string, socketPath: string): Promise<ChildProcess> {
  const broker = spawn(
    process.execPath,
    [
      ...(process.env.BENCH_BROKER_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      CLI,
      'serve',
      '--config',
      configFile,
    ],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, AIRLOCK_LOG_LEVEL: 'warn' } },
  );
  for (let i = 0; i < 200 && !existsSync(socketPath); i++) await new Promise((r) => setTimeout(r, 25));
  return broker;
}

export async function stopServe(broker: ChildProcess): Promise<void> {
  broker.kill('SIGTERM');
  await new Promise((r) => broker.once('exit', r));
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
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

export /** Resident and peak memory of a process, in MiB (Linux /proc). */
function brokerMemory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: Math.round(kib('VmRSS') / 1024), peak: Math.round(kib('VmHWM') / 1024) };
}

/** CPU time (user + system, all threads) a process has used so far, in ms (Linux /proc). */
export function processCpuMs(pid: number): number {
  // Fields after the command name, which is in parentheses and may hold spaces.
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  const ticksPerMs = 100 / 1000; // USER_HZ is 100 on Linux
  return (Number(fields[11]) + Number(fields[12])) / ticksPerMs;
}

export class RawMcpSession {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
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

  static async open(socketPath: string): Promise<RawMcpSession> {
    const socket = net.connect(socketPath);
    await new Promise((r) => socket.once('connect', r));
    const session = new RawMcpSession(socket);
    await session.request('initialize', {
      protocolVersion: '2025-06-18',
      capabilities: {},
      clientInfo: { name: 'bench', version: '0' },
    });
    socket.write(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) + '\n');
    return session;
  }

  request(method: string, params: unknown): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
