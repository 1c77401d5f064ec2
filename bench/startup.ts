// Start-up time of the commands an operator or an agent image runs most: `airlock --help`,
// `policy check`, `audit verify` and `bridge` (and `doctor`, which loads the most), against
// `node -e 0` measured in the same run, interleaved so machine load hits every command alike.
// Run: npm run bench:startup [-- runs]   (not a test; prints median and p90 wall time per command,
// and the median CPU time (user + system), which a busy machine inflates far less than wall time)
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const RUNS = Number(process.argv[2] ?? 15);
const CLI = path.resolve(import.meta.dirname, '../src/cli.js');

const root = mkdtempSync(path.join(os.tmpdir(), 'al-start-'));
mkdirSync(path.join(root, 'policies'));
writeFileSync(
  path.join(root, 'airlock.yaml'),
  `socketDir: ./run\nstateDir: ./state\npolicies: ./policies\naudit:\n  file: ./audit.jsonl\nsecrets:\n  tok: { env: AIRLOCK_BENCH_TOKEN }\n`,
);
writeFileSync(
  path.join(root, 'policies/acme.yaml'),
  `team: acme\nservers:\n  http:\n    hosts:\n      - origin: https://api.example.com\n        inject: { header: X-Key, value: "\${secret:tok}" }\n    tools:\n      http_request: {}\n`,
);
writeFileSync(path.join(root, 'audit.jsonl'), '');
const config = path.join(root, 'airlock.yaml');

const commands: [string, string[], string?][] = [
  ['node -e 0 (baseline)', ['-e', '0']],
  ['airlock --help', [CLI, '--help']],
  ['airlock policy check', [CLI, 'policy', 'check', '--config', config]],
  ['airlock audit verify', [CLI, 'audit', 'verify', '--config', config]],
  // The bridge with no socket to reach: starts, fails to connect, exits 1. That is its start-up.
  ['airlock bridge', [CLI, 'bridge', path.join(root, 'none.sock')], ''],
  ['airlock doctor', [CLI, 'doctor', '--config', config]],
];

// Each child reports its own CPU time on exit (on fd 3, so the command's own output is untouched).
const REPORT_CPU =
  'data:text/javascript,' +
  encodeURIComponent(
    `import { writeSync } from 'node:fs'; process.on('exit', () => { const u = process.cpuUsage(); writeSync(3, String((u.user + u.system) / 1000)); });`,
  );

const times = new Map<string, number[]>(commands.map(([name]) => [name, []]));
const cpu = new Map<string, number[]>(commands.map(([name]) => [name, []]));
for (let i = 0; i < RUNS; i++) {
  for (const [name, args, input] of commands) {
    const started = process.hrtime.bigint();
    const r = spawnSync(process.execPath, ['--import', REPORT_CPU, ...args], {
      input: input ?? undefined,
      stdio: ['pipe', 'ignore', 'pipe', 'pipe'],
    });
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if (r.status === null) throw new Error(`${name} did not exit`);
    times.get(name)!.push(ms);
    cpu.get(name)!.push(Number(r.output[3]?.toString() || NaN));
  }
}
rmSync(root, { recursive: true, force: true });

const quantile = (xs: number[], q: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;
const baseline = quantile(times.get(commands[0]![0])!, 0.5);
const cpuBaseline = quantile(cpu.get(commands[0]![0])!, 0.5);
console.log(
  `start-up, ${RUNS} runs each, interleaved (${os.cpus().length} cores, load ${os.loadavg()[0]!.toFixed(2)})`,
);
console.log(
  `${'command'.padEnd(24)} ${'median'.padStart(8)} ${'p90'.padStart(8)} ${'over node -e 0'.padStart(15)} ${'CPU'.padStart(8)} ${'CPU over'.padStart(9)}`,
);
for (const [name] of commands) {
  const xs = times.get(name)!;
  const median = quantile(xs, 0.5);
  const cpuMedian = quantile(cpu.get(name)!, 0.5);
  console.log(
    `${name.padEnd(24)} ${`${median.toFixed(0)} ms`.padStart(8)} ${`${quantile(xs, 0.9).toFixed(0)} ms`.padStart(8)} ${`+${(median - baseline).toFixed(0)} ms`.padStart(15)} ${`${cpuMedian.toFixed(0)} ms`.padStart(8)} ${`+${(cpuMedian - cpuBaseline).toFixed(0)} ms`.padStart(9)}`,
  );
}
