// Start-up time of the commands an operator or an agent image runs most: `airlock --help`,
// `--version`, `policy check`, `audit verify`, `bridge` and `doctor` (which loads the most), and
// for the MCP servers the time from spawn to the answer of the first `tools/list` (initialize,
// initialized and tools/list written at once, as a client does): `airlock stdio http` against
// the reference Postgres MCP server (@modelcontextprotocol/server-postgres, which answers
// tools/list without reaching its database). Everything against `node -e 0` measured in the same
// run, interleaved so machine load hits every command alike.
// Run: npm run bench:startup [-- runs] [--compare OTHER/dist/src/cli.js] [--instructions]   (not a test; prints
// median and p90 wall time per command, and the median CPU time (user + system), which a busy
// machine inflates far less than wall time). --compare runs every airlock command of another
// build (e.g. main's) interleaved with this one and prints this build's CPU over node -e 0 as a
// ratio of the other's. --instructions also counts each command's instructions under valgrind
// (callgrind, every thread; one run each unless `runs` is given): the same count for the same
// build whatever else the machine does, so it ranks two builds where time on a shared machine
// cannot (a run takes ~50× as long as the command).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values: opts, positionals } = parseArgs({
  options: { compare: { type: 'string' }, instructions: { type: 'boolean' } },
  allowPositionals: true,
});
const RUNS = Number(positionals[0] ?? 15);
const INSTRUCTION_RUNS = Number(positionals[0] ?? 1);
// The installed `airlock` (package.json bin): the bundle's entry, not the dist/src/cli.js forwarder.
const CLI = path.resolve(import.meta.dirname, '../src/cli.cjs');
const OTHER_CLI = opts.compare ? path.resolve(opts.compare) : undefined;
const REFERENCE_POSTGRES = createRequire(import.meta.url).resolve(
  '@modelcontextprotocol/server-postgres/dist/index.js',
);

const root = mkdtempSync(path.join(os.tmpdir(), 'al-start-'));
mkdirSync(path.join(root, 'policies'));
writeFileSync(
  path.join(root, 'airlock.yaml'),
  `socketDir: ./run\nstateDir: ./state\npolicies: ./policies\naudit:\n  file: ./audit/audit.jsonl\nsecrets:\n  tok: { env: AIRLOCK_BENCH_TOKEN }\n`,
);
writeFileSync(
  path.join(root, 'policies/acme.yaml'),
  `team: acme\nservers:\n  http:\n    hosts:\n      - origin: https://api.example.com\n        inject: { header: X-Key, value: "\${secret:tok}" }\n    tools:\n      http_request: {}\n`,
);
mkdirSync(path.join(root, 'audit'));
writeFileSync(path.join(root, 'audit/audit.jsonl'), '');
const config = path.join(root, 'airlock.yaml');
const env = { ...process.env, AIRLOCK_BENCH_TOKEN: 'bench-token-value' };

interface Command {
  name: string;
  args: string[];
  /** `exit`: time until the process exits; `mcp`: time until the first tools/list is answered. */
  until: 'exit' | 'mcp';
  input?: string;
}

const airlockCommands = (cli: string): Command[] => [
  { name: 'airlock --version', args: [cli, '--version'], until: 'exit' },
  { name: 'airlock --help', args: [cli, '--help'], until: 'exit' },
  { name: 'airlock policy check', args: [cli, 'policy', 'check', '--config', config], until: 'exit' },
  { name: 'airlock audit verify', args: [cli, 'audit', 'verify', '--config', config], until: 'exit' },
  // The bridge with no socket to reach: starts, fails to connect, exits 1. That is its start-up.
  { name: 'airlock bridge', args: [cli, 'bridge', path.join(root, 'none.sock')], until: 'exit', input: '' },
  { name: 'airlock doctor', args: [cli, 'doctor', '--config', config], until: 'exit' },
  {
    name: 'airlock stdio → tools/list',
    args: [cli, 'stdio', 'http', '--team', 'acme', '--config', config],
    until: 'mcp',
  },
];
const OTHER_PREFIX = 'other build: ';

const commands: Command[] = [
  { name: 'node -e 0 (baseline)', args: ['-e', '0'], until: 'exit' },
  ...airlockCommands(CLI),
  {
    name: 'reference postgres → tools/list',
    args: [REFERENCE_POSTGRES, 'postgresql://127.0.0.1:1/none'],
    until: 'mcp',
  },
  ...(OTHER_CLI
    ? airlockCommands(OTHER_CLI).map((c) => ({ ...c, name: OTHER_PREFIX + c.name.replace(/^airlock /, '') }))
    : []),
];

// Each child reports its own CPU time on exit (on fd 3, so the command's own output is untouched).
// A CommonJS preload (--require): an ES module one (--import) would start the ES module loader in
// every child, which a CommonJS command (the bundle, the bridge) otherwise never loads.
const REPORT_CPU = path.join(root, 'report-cpu.cjs');
writeFileSync(
  REPORT_CPU,
  `const { writeSync } = require('node:fs'); process.on('exit', () => { const u = process.cpuUsage(); writeSync(3, String((u.user + u.system) / 1000)); });`,
);

const HANDSHAKE =
  [
    {
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: {
        protocolVersion: '2025-06-18',
        capabilities: {},
        clientInfo: { name: 'bench', version: '0' },
      },
    },
    { jsonrpc: '2.0', method: 'notifications/initialized' },
    { jsonrpc: '2.0', id: 2, method: 'tools/list', params: {} },
  ]
    .map((m) => JSON.stringify(m))
    .join('\n') + '\n';

/** Spawn → the tools/list answer (wall ms), then stdin closes and the child reports its CPU at exit. */
function timeToToolsList(args: string[]): Promise<{ ms: number; cpu: number }> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(process.execPath, ['--require', REPORT_CPU, ...args], {
      env,
      stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
    });
    let ms: number | undefined;
    let out = '';
    let stderr = '';
    let cpu = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      if (ms === undefined && out.split('\n').some((line) => line.includes('"id":2'))) {
        ms = Number(process.hrtime.bigint() - started) / 1e6;
        if (!out.includes('"tools"')) reject(new Error(`no tool list: ${out}`));
        child.stdin.end();
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    (child.stdio[3] as NodeJS.ReadableStream).setEncoding('utf8').on('data', (c: string) => (cpu += c));
    child.stdin.write(HANDSHAKE);
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', () => {
      clearTimeout(timer);
      if (ms === undefined) reject(new Error(`${args.join(' ')} never answered tools/list:\n${stderr}`));
      else resolve({ ms, cpu: Number(cpu || NaN) });
    });
  });
}

function timeToExit(args: string[], input: string | undefined): { ms: number; cpu: number } {
  const started = process.hrtime.bigint();
  const r = spawnSync(process.execPath, ['--require', REPORT_CPU, ...args], {
    env,
    input: input ?? undefined,
    stdio: ['pipe', 'ignore', 'pipe', 'pipe'],
  });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (r.status === null) throw new Error(`${args.join(' ')} did not exit`);
  return { ms, cpu: Number(r.output[3]?.toString() || NaN) };
}

/** Instructions (every thread) of one run under callgrind; an MCP command gets the handshake, then EOF. */
function instructionsOf({ args, until, input }: Command): number {
  const r = spawnSync(
    'valgrind',
    ['--tool=callgrind', '--callgrind-out-file=/dev/null', process.execPath, ...args],
    {
      env,
      input: until === 'mcp' ? HANDSHAKE : (input ?? ''),
      stdio: ['pipe', 'ignore', 'pipe'],
      timeout: 600_000,
    },
  );
  const collected = /Collected : (\d+)/.exec(r.stderr?.toString() ?? '');
  if (r.error || !collected) throw new Error(`valgrind ${args.join(' ')}: ${r.error?.message ?? r.stderr}`);
  return Number(collected[1]);
}

const instructions = new Map<string, number[]>(commands.map(({ name }) => [name, []]));
if (opts.instructions)
  for (let i = 0; i < INSTRUCTION_RUNS; i++)
    for (const command of commands) instructions.get(command.name)!.push(instructionsOf(command));

const times = new Map<string, number[]>(commands.map(({ name }) => [name, []]));
const cpu = new Map<string, number[]>(commands.map(({ name }) => [name, []]));
try {
  for (let i = 0; i < RUNS; i++) {
    for (const { name, args, until, input } of commands) {
      const r = until === 'mcp' ? await timeToToolsList(args) : timeToExit(args, input);
      times.get(name)!.push(r.ms);
      cpu.get(name)!.push(r.cpu);
    }
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}

const quantile = (xs: number[], q: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;
const baseline = quantile(times.get(commands[0]!.name)!, 0.5);
const cpuBaseline = quantile(cpu.get(commands[0]!.name)!, 0.5);
// The reference server brings its own (older) SDK: name it, since the SDK is most of its start-up.
const sdkVersion = (
  JSON.parse(
    readFileSync(
      path.join(path.dirname(REFERENCE_POSTGRES), '../node_modules/@modelcontextprotocol/sdk/package.json'),
      'utf8',
    ),
  ) as { version: string }
).version;
console.log(
  `start-up, ${RUNS} runs each, interleaved (${os.cpus().length} cores, load ${os.loadavg()[0]!.toFixed(2)}; node ${process.version}; reference server on SDK ${sdkVersion})`,
);
const width = Math.max(...commands.map((c) => c.name.length));
console.log(
  `${'command'.padEnd(width)} ${'median'.padStart(8)} ${'p90'.padStart(8)} ${'over node -e 0'.padStart(15)} ${'CPU'.padStart(8)} ${'CPU over'.padStart(9)}`,
);
const signed = (x: number) => `${x < 0 ? '−' : '+'}${Math.abs(x).toFixed(0)} ms`;
for (const { name } of commands) {
  const xs = times.get(name)!;
  const median = quantile(xs, 0.5);
  const cpuMedian = quantile(cpu.get(name)!, 0.5);
  console.log(
    `${name.padEnd(width)} ${`${median.toFixed(0)} ms`.padStart(8)} ${`${quantile(xs, 0.9).toFixed(0)} ms`.padStart(8)} ${signed(median - baseline).padStart(15)} ${`${cpuMedian.toFixed(0)} ms`.padStart(8)} ${signed(cpuMedian - cpuBaseline).padStart(9)}`,
  );
}
if (OTHER_CLI) {
  console.log(`this build against ${OTHER_CLI} (CPU over node -e 0, medians; ratio this / other):`);
  for (const { name } of airlockCommands(CLI)) {
    const other = OTHER_PREFIX + name.replace(/^airlock /, '');
    const mine = quantile(cpu.get(name)!, 0.5) - cpuBaseline;
    const theirs = quantile(cpu.get(other)!, 0.5) - cpuBaseline;
    console.log(
      `  ${name.padEnd(width)} ${signed(mine).padStart(9)} vs ${signed(theirs).padStart(9)}  ×${(mine / theirs).toFixed(2)}`,
    );
  }
}
if (opts.instructions) {
  const median = (name: string) => quantile(instructions.get(name)!, 0.5);
  const base = median(commands[0]!.name);
  const millions = (x: number) => `${(x / 1e6).toFixed(0)} M`;
  console.log(
    `instructions (callgrind, median of ${INSTRUCTION_RUNS}; over node -e 0; ratio to the reference server's over node -e 0):`,
  );
  const refOver = median('reference postgres → tools/list') - base;
  for (const { name } of commands) {
    const over = median(name) - base;
    console.log(
      `  ${name.padEnd(width)} ${millions(median(name)).padStart(8)} ${`+${millions(over)}`.padStart(8)}${name.includes('tools/list') ? `  ×${(over / refOver).toFixed(2)}` : ''}`,
    );
  }
  if (OTHER_CLI) {
    console.log(`  this build against the other (over node -e 0):`);
    for (const { name } of airlockCommands(CLI)) {
      const mine = median(name) - base;
      const theirs = median(OTHER_PREFIX + name.replace(/^airlock /, '')) - base;
      console.log(
        `    ${name.padEnd(width)} +${millions(mine)} vs +${millions(theirs)}  ×${(mine / theirs).toFixed(2)}`,
      );
    }
  }
}
const stdio = quantile(times.get('airlock stdio → tools/list')!, 0.5);
const reference = quantile(times.get('reference postgres → tools/list')!, 0.5);
console.log(
  `airlock stdio → tools/list: ${stdio.toFixed(0)} ms (target ≤ 150 ms), reference server ${reference.toFixed(0)} ms: ${stdio < reference ? 'faster' : 'slower'} by ${Math.abs(reference - stdio).toFixed(0)} ms`,
);
