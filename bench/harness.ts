// What the broker benchmarks share beyond bench/common.ts (statistics, the load loop, the raw MCP
// client): `airlock serve` as a process, and its memory and CPU from /proc.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

const CLI = path.resolve(import.meta.dirname, '../src/cli.js');

/**
 * `airlock serve` as its own process (as in production), once `socketPath` exists.
 * BENCH_BROKER_NODE_ARGS adds node flags (e.g. --cpu-prof); `cli` runs another build's airlock.
 */
export async function startServe(configFile: string, socketPath: string, cli = CLI): Promise<ChildProcess> {
  const broker = spawn(
    process.execPath,
    [
      ...(process.env.BENCH_BROKER_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      cli,
      'serve',
      '--config',
      configFile,
    ],
    // Node flags such as --trace-gc print on stdout: shown when the caller asked for flags.
    {
      stdio: ['ignore', process.env.BENCH_BROKER_NODE_ARGS ? 'inherit' : 'ignore', 'inherit'],
      env: { ...process.env, AIRLOCK_LOG_LEVEL: 'warn' },
    },
  );
  for (let i = 0; i < 200 && !existsSync(socketPath); i++) await new Promise((r) => setTimeout(r, 25));
  return broker;
}

export async function stopServe(broker: ChildProcess): Promise<void> {
  broker.kill('SIGTERM');
  await new Promise((r) => broker.once('exit', r));
}

export { fdatasyncMs, load, median, percentile, RawMcpSession, stats, type Stats } from './common.js';

/** Resident and peak memory of a process, in MiB (Linux /proc). */
export function brokerMemory(pid: number): { rss: number; peak: number } {
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
