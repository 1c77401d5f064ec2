// Audit log throughput and latency: the latency of one appender's sequential appends (p50/p99,
// the per-call overhead a broker pays twice per tool call), sequential appends/s, 64 concurrent
// appenders with group commit, and the same 64 with one fsync per record (maxBatch 1), in one
// run on the same disk; and the 64 appenders split over two logs sharing the file (the lock).
// Run: npx tsc -p . && node dist/bench/audit.js [records] [parent folder] [--compare OTHER/dist/src/audit/log.js]
// (not a test). A tmpfs folder (e.g. /dev/shm), where fdatasync costs nothing, shows Airlock's own
// overhead. --compare also times another build's AuditLog (e.g. main's), single-appender latency
// in alternating rounds with this one, and prints the ratio.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { AuditLog, verifyAuditFile, type AuditEntry } from '../src/audit/log.js';

const { values: opts, positionals } = parseArgs({
  options: { compare: { type: 'string' } },
  allowPositionals: true,
});
const RECORDS = Number(positionals[0] ?? 2000);
const CONCURRENCY = 64;

function entry(i: number): AuditEntry {
  return {
    team: 'payments',
    server: 'http',
    tool: 'http_request',
    session: 'bench',
    call: `call-${i}`,
    phase: 'result',
    args: { method: 'GET', url: `https://api.example.com/v1/charges/${i}` },
    decision: 'allow',
    rule: 'http.hosts[0]',
    outcome: 'ok',
    durationMs: 1.5,
    resultBytes: 512,
  };
}

async function run(
  name: string,
  dir: string,
  records: number,
  workers: number,
  /** `logs`: AuditLogs open on the one file (as `airlock serve` and `airlock stdio` share it), the appenders split over them. */
  opts: { maxBatch?: number; logs?: number },
): Promise<void> {
  const file = path.join(dir, `${name}.jsonl`);
  let syncs = 0;
  const logs: AuditLog[] = [];
  for (let i = 0; i < (opts.logs ?? 1); i++) {
    logs.push(await AuditLog.open(file, { maxBatch: opts.maxBatch, onSync: () => syncs++ }));
  }
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      while (next < records) await logs[w % logs.length]!.append(entry(next++));
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  for (const log of logs) await log.close();
  const check = await verifyAuditFile(file);
  if (!check.ok || check.count !== records)
    throw new Error(`${name}: log does not verify: ${JSON.stringify(check)}`);
  const rate = Math.round(records / seconds);
  console.log(
    `${name.padEnd(36)} ${String(rate).padStart(8)} appends/s  ${String(records).padStart(6)} records  ${String(syncs).padStart(6)} fsyncs  ${(records / syncs).toFixed(1).padStart(6)} records/fsync`,
  );
}

/** Sequential appends from one appender, each timed alone: what one tool call's record costs. */
async function latency(
  dir: string,
  records: number,
  Log: Pick<typeof AuditLog, 'open'> = AuditLog,
  label = 'single appender latency',
): Promise<number> {
  const file = path.join(dir, `latency-${label.replace(/\W/g, '')}.jsonl`);
  const log = await Log.open(file);
  for (let i = 0; i < 50; i++) await log.append(entry(i)); // warm up (JIT, page cache, first extents)
  const micros: number[] = [];
  for (let i = 0; i < records; i++) {
    const started = performance.now();
    await log.append(entry(i));
    micros.push((performance.now() - started) * 1000);
  }
  await log.close();
  micros.sort((a, b) => a - b);
  const at = (q: number) => Math.round(micros[Math.min(micros.length - 1, Math.floor(q * micros.length))]!);
  console.log(
    `${label.padEnd(36)} p50 ${String(at(0.5)).padStart(6)} µs  p99 ${String(at(0.99)).padStart(6)} µs  ${String(records).padStart(6)} records`,
  );
  return at(0.5);
}

/** This build's and another's single-appender p50, in alternating rounds (machine load hits both). */
async function compare(dir: string, otherModule: string): Promise<void> {
  const other = (await import(pathToFileURL(path.resolve(otherModule)).href)) as {
    AuditLog: typeof AuditLog;
  };
  const mine: number[] = [];
  const theirs: number[] = [];
  for (let round = 0; round < 3; round++) {
    mine.push(await latency(dir, 500, AuditLog, `this build, round ${round + 1}`));
    theirs.push(await latency(dir, 500, other.AuditLog, `other build, round ${round + 1}`));
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[1]!;
  console.log(
    `single appender p50, median of rounds: this ${median(mine)} µs, other ${median(theirs)} µs, ×${(median(mine) / median(theirs)).toFixed(2)}`,
  );
}

const dir = mkdtempSync(path.join(positionals[1] ?? os.tmpdir(), 'airlock-bench-audit-'));
try {
  console.log(`audit log benchmark in ${dir} (${os.cpus().length} CPUs)`);
  if (opts.compare) await compare(dir, opts.compare);
  await latency(dir, Math.min(RECORDS, 1000));
  await run('sequential (1 appender)', dir, Math.min(RECORDS, 1000), 1, {});
  await run(`${CONCURRENCY} concurrent, fsync per record`, dir, RECORDS, CONCURRENCY, { maxBatch: 1 });
  await run(`${CONCURRENCY} concurrent, group commit`, dir, RECORDS, CONCURRENCY, {});
  await run(`${CONCURRENCY} concurrent, 2 logs on one file`, dir, RECORDS, CONCURRENCY, { logs: 2 });
} finally {
  rmSync(dir, { recursive: true, force: true });
}
