// Postgres `query` through Airlock (socket → broker process → parse, READ ONLY transaction, two
// durable audit records) against the reference @modelcontextprotocol/server-postgres (over
// stdio, one process per session as a client starts it) and against pg directly, on the same
// throwaway database in one run: SELECT of 1 row and of 1,000 rows, 1 session and 16 sessions.
// The fsync latency of the audit disk is measured in the same run, since two of them are the
// floor of Airlock's per-call overhead.
//
//   npm run bench:postgres [-- --calls 2000 --sequential 500 --sessions 16 --audit-dir /dev/shm]
//     [--baseline-cli /other/checkout/dist/src/cli.js]   (also measures another build, same run)
//     [--rounds 5]   (every case that many times, paths alternating; medians and ranges printed)
//     [--paths airlock]   (only these of direct,reference,airlock,baseline: e.g. to profile the broker)
//     [--queries 1]   (only the 1-row case, or 1000)
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { startPostgresCluster } from '../src/demo/postgres-cluster.js';
import { fdatasyncMs, load, median, processCpuMs, RawMcpSession, stats, type Stats } from './harness.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '2000' },
    sequential: { type: 'string', default: '500' },
    sessions: { type: 'string', default: '16' },
    'audit-dir': { type: 'string' },
    'baseline-cli': { type: 'string' },
    rounds: { type: 'string', default: '1' },
    paths: { type: 'string' },
    queries: { type: 'string' },
  },
});
const CALLS = Number(values.calls);
const SEQUENTIAL = Number(values.sequential);
const SESSIONS = Number(values.sessions);
/** Rounds of every case, the paths taken in turn within each (old and new build alternate). */
const ROUNDS = Math.max(1, Number(values.rounds));
const CLI = path.resolve(import.meta.dirname, '../src/cli.js');
const BASELINE_CLI = values['baseline-cli'] ? path.resolve(values['baseline-cli']) : undefined;
const REFERENCE = createRequire(import.meta.url).resolve(
  '@modelcontextprotocol/server-postgres/dist/index.js',
);

const READER = 'bench_reader';
const READER_PASSWORD = 'bench-reader-Pw-9dK2mQ';
const ALL_QUERIES = {
  '1 row': 'SELECT id, name, price, created FROM items WHERE id = 42',
  '1000 rows': 'SELECT id, name, price, created FROM items',
} as const;
/** --queries 1 or 1000: only that case (e.g. to profile it alone). */
const QUERIES = Object.fromEntries(
  Object.entries(ALL_QUERIES).filter(
    ([label]) => !values.queries || values.queries.split(',').includes(label.split(' ')[0]!),
  ),
);

/** CPU seconds (user + system) a process has used; 0 once it is gone. */
function cpuSeconds(pid: number | undefined): number {
  try {
    return pid ? processCpuMs(pid) / 1000 : 0;
  } catch {
    return 0;
  }
}

/** CPU seconds this process (the direct client and the load generator) has used. */
function ownCpuSeconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

/** The PostgreSQL server's backends: the postmaster's children (from its postmaster.pid). */
function backendPids(dataDir: string): number[] {
  let postmaster: number;
  try {
    postmaster = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return [];
  }
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === postmaster)
        pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

async function main(): Promise<void> {
  const cluster = await startPostgresCluster();
  const root = await mkdtemp(path.join(os.tmpdir(), 'al-pgbench-'));
  const auditDir = values['audit-dir']
    ? await mkdtemp(path.join(values['audit-dir'], 'al-pgbench-audit-'))
    : `${root}/audit`;
  await mkdir(auditDir, { recursive: true });
  const children: ChildProcess[] = [];
  const sessions: RawMcpSession[] = [];
  let direct: pg.Pool | undefined;
  try {
    await cluster.admin('CREATE DATABASE bench');
    await cluster.admin(
      `CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), created timestamptz);
       INSERT INTO items SELECT g, 'item ' || g, g * 1.25, timestamptz '2026-01-01' + g * interval '1 minute'
         FROM generate_series(1, 1000) g;
       CREATE ROLE ${READER} LOGIN PASSWORD '${READER_PASSWORD}';
       GRANT SELECT ON items TO ${READER};`,
      'bench',
    );
    const url = cluster.url({ user: READER, password: READER_PASSWORD, database: 'bench' });

    await mkdir(path.join(root, 'policies'), { recursive: true });
    await writeFile(path.join(root, 'pg-url'), url + '\n', { mode: 0o600 });
    const policy = `team: bench\nservers:\n  postgres:\n    databases:\n      bench:\n        connection: pg-bench\n        tables: ["public.*"]\n        maxRows: 1000\n        poolSize: ${SESSIONS}\n    tools:\n      query: {}\n`;
    await writeFile(path.join(root, 'policies/bench.yaml'), policy);
    // BENCH_BROKER_NODE_ARGS adds node flags to the broker (e.g. --cpu-prof --cpu-prof-dir=/tmp/p).
    const nodeArgs = process.env.BENCH_BROKER_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
    /** A broker of `cli` with its own sockets, state and audit file (same audit disk); its socket. */
    const brokerPids = new Map<string, number | undefined>();
    const startBroker = async (cli: string, name: string): Promise<string> => {
      const config = path.join(root, `${name}.yaml`);
      await writeFile(
        config,
        `socketDir: ${root}/run-${name}\nstateDir: ${root}/state-${name}\npolicies: ./policies\naudit:\n  file: ${auditDir}/${name}.jsonl\nsecrets:\n  pg-bench: { file: ./pg-url }\n`,
      );
      const broker = spawn(process.execPath, [...nodeArgs, cli, 'serve', '--config', config], {
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, AIRLOCK_LOG_LEVEL: 'warn' },
      });
      children.push(broker);
      brokerPids.set(name, broker.pid);
      const socketPath = path.join(root, `run-${name}/bench/postgres.sock`);
      for (let i = 0; i < 400 && !existsSync(socketPath); i++) await new Promise((r) => setTimeout(r, 25));
      return socketPath;
    };
    const socketPath = await startBroker(CLI, 'airlock');
    const baselineSocket = BASELINE_CLI ? await startBroker(BASELINE_CLI, 'baseline') : undefined;

    const airlock: RawMcpSession[] = [];
    const baseline: RawMcpSession[] = [];
    const reference: RawMcpSession[] = [];
    const referencePids: Array<number | undefined> = [];
    for (let i = 0; i < SESSIONS; i++) {
      airlock.push(await RawMcpSession.open(socketPath));
      if (baselineSocket) baseline.push(await RawMcpSession.open(baselineSocket));
      const child = spawn(process.execPath, [REFERENCE, url], { stdio: ['pipe', 'pipe', 'ignore'] });
      children.push(child);
      referencePids.push(child.pid);
      reference.push(await RawMcpSession.over(child.stdout!, child.stdin!, () => child.kill()));
    }
    sessions.push(...airlock, ...baseline, ...reference);
    direct = new pg.Pool({ connectionString: url, max: SESSIONS });
    const pool = direct;

    const call = (session: RawMcpSession, args: Record<string, unknown>, rows: number) => async () => {
      const r = (await session.request('tools/call', {
        name: 'query',
        arguments: args,
      })) as CallToolResult & {
        structuredContent?: { rowCount?: number };
      };
      if (r.isError) throw new Error(JSON.stringify(r.content).slice(0, 300));
      const got = r.structuredContent?.rowCount ?? JSON.parse((r.content[0] as { text: string }).text).length;
      if (got !== rows) throw new Error(`expected ${rows} rows, got ${got}`);
    };
    const paths: Record<string, (sql: string, rows: number) => (i: number) => () => Promise<void>> = {
      direct: (sql: string, rows: number) => () => async () => {
        const r = await pool.query(sql);
        if (r.rowCount !== rows) throw new Error(`expected ${rows} rows`);
      },
      reference: (sql: string, rows: number) => (i: number) => call(reference[i]!, { sql }, rows),
      airlock: (sql: string, rows: number) => (i: number) =>
        call(airlock[i]!, { database: 'bench', sql }, rows),
    };
    if (BASELINE_CLI)
      paths.baseline = (sql: string, rows: number) => (i: number) =>
        call(baseline[i]!, { database: 'bench', sql }, rows);
    if (values.paths) {
      const wanted = values.paths.split(',');
      for (const name of Object.keys(paths)) if (!wanted.includes(name)) delete paths[name];
    }

    const fsyncMs = await fdatasyncMs(auditDir);
    const runs = new Map<string, Stats[]>();
    const record = (name: string, s: Stats) => runs.set(name, [...(runs.get(name) ?? []), s]);
    const cpu = new Map<string, Array<{ serving: number; postgres: number }>>();
    const recordCpu = (name: string, c: { serving: number; postgres: number }) =>
      cpu.set(name, [...(cpu.get(name) ?? []), c]);
    const dataDir = path.join(cluster.socketDir, '..', 'data');
    for (const make of Object.values(paths))
      for (const [label, sql] of Object.entries(QUERIES))
        await load([make(sql, label === '1 row' ? 1 : 1000)(0)], 50); // warm-up: JIT, connections
    for (let round = 0; round < ROUNDS; round++) {
      for (const [label, sql] of Object.entries(QUERIES)) {
        const rows = label === '1 row' ? 1 : 1000;
        const scale = rows === 1 ? 1 : 0.25;
        for (const [pathName, make] of Object.entries(paths)) {
          const worker = make(sql, rows);
          const one = await load([worker(0)], Math.round(SEQUENTIAL * scale));
          record(`${pathName}, ${label}, 1 session`, stats(one.latencies, one.wallMs));
          // CPU of the serving processes and of Postgres's backends over the N-session case.
          const serving = () =>
            pathName === 'reference'
              ? referencePids.reduce<number>((sum, pid) => sum + cpuSeconds(pid), 0)
              : pathName === 'direct'
                ? ownCpuSeconds()
                : cpuSeconds(brokerPids.get(pathName));
          const backends = () => backendPids(dataDir).reduce<number>((sum, pid) => sum + cpuSeconds(pid), 0);
          const serving0 = serving();
          const backends0 = backends();
          const many = await load(
            Array.from({ length: SESSIONS }, (_, i) => worker(i)),
            Math.round(CALLS * scale),
          );
          const calls = many.latencies.length;
          recordCpu(`${pathName}, ${label}, ${SESSIONS} sessions`, {
            serving: ((serving() - serving0) * 1000) / calls,
            postgres: ((backends() - backends0) * 1000) / calls,
          });
          record(`${pathName}, ${label}, ${SESSIONS} sessions`, stats(many.latencies, many.wallMs));
        }
      }
    }
    const results = [...runs].map(([name, list]) => ({
      name,
      list,
      s: {
        p50: median(list.map((x) => x.p50)),
        p99: median(list.map((x) => x.p99)),
        perSecond: median(list.map((x) => x.perSecond)),
      },
    }));

    console.log(
      `postgres query — ${os.cpus().length} cores, node ${process.version}, PostgreSQL ${cluster.binaries.source} binaries, audit log in ${auditDir}`,
    );
    console.log(`audit disk fdatasync p50: ${fsyncMs.toFixed(3)} ms (measured in this run)`);
    if (BASELINE_CLI) console.log(`baseline: ${BASELINE_CLI}`);
    if (ROUNDS > 1) console.log(`medians of ${ROUNDS} rounds (p50 and calls/s ranges over the rounds)`);
    console.log('case'.padEnd(40), 'p50 ms'.padStart(9), 'p99 ms'.padStart(9), 'calls/s'.padStart(10));
    const range = (xs: number[], digits: number) =>
      ROUNDS > 1 ? `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}` : '';
    for (const { name, s, list } of results)
      console.log(
        name.padEnd(40),
        s.p50.toFixed(3).padStart(9),
        s.p99.toFixed(3).padStart(9),
        s.perSecond.toFixed(0).padStart(10),
        range(
          list.map((x) => x.p50),
          2,
        ).padStart(14),
        range(
          list.map((x) => x.perSecond),
          0,
        ).padStart(12),
      );
    console.log(
      `CPU a call at ${SESSIONS} sessions, from /proc (medians): the serving process (broker; reference: its ${SESSIONS} processes; direct: this process, load generator included) and Postgres's backends`,
    );
    for (const [name, list] of cpu)
      console.log(
        `  ${name.padEnd(38)} serving ${median(list.map((c) => c.serving)).toFixed(3)} ms, postgres ${median(list.map((c) => c.postgres)).toFixed(3)} ms`,
      );
    const get = (name: string) => results.find((r) => r.name === name)!.s;
    const budget = 2 * fsyncMs + 0.5;
    for (const label of paths.direct && paths.reference ? Object.keys(QUERIES) : []) {
      const d1 = get(`direct, ${label}, 1 session`);
      const rN = get(`reference, ${label}, ${SESSIONS} sessions`);
      for (const who of ['airlock', 'baseline'].filter((p) => paths[p])) {
        const a1 = get(`${who}, ${label}, 1 session`);
        const aN = get(`${who}, ${label}, ${SESSIONS} sessions`);
        const ratio = aN.perSecond / rN.perSecond;
        const overhead = a1.p50 - d1.p50;
        console.log(
          `${who}, ${label}: ${SESSIONS} sessions ${who}/reference = ${ratio.toFixed(2)}× calls/s (target ≥ 1.5: ${ratio >= 1.5 ? 'met' : 'not met'}); ` +
            `1 session overhead over direct p50 +${overhead.toFixed(3)} ms vs budget 2×fsync + 0.5 = ${budget.toFixed(3)} ms ` +
            `(${overhead <= budget ? 'met' : 'not met'})`,
        );
      }
    }
  } finally {
    for (const s of sessions) s.close();
    await direct?.end().catch(() => undefined);
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(
      children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : undefined)),
    );
    await rm(root, { recursive: true, force: true });
    await rm(auditDir, { recursive: true, force: true });
    await cluster.close();
  }
}

await main();
