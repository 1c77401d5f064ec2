// Where the broker's CPU goes under the 64-session http_request load: runs bench/http.ts with the
// broker under --cpu-prof, then prints the top self-time functions and the broker's CPU grouped
// by stage. Self time of Node internals and builtins (JSON, fs, crypto, sockets) is charged to
// the nearest caller in our code or a dependency, so "audit I/O" is fs work the audit asked for.
//
//   npm run build && node dist/bench/profile.js [--calls 4000] [--sessions 64] [--sequential 1000]
//     [--audit-dir /dev/shm] [--cli OTHER/dist/src/cli.js] [--top 25]   (--cli: profile that build's broker)
//   node dist/bench/profile.js --from FILE.cpuprofile    (only the analysis, of a saved profile)
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { SourceMap } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '4000' },
    sessions: { type: 'string', default: '64' },
    sequential: { type: 'string', default: '1000' },
    from: { type: 'string' },
    top: { type: 'string', default: '25' },
    'audit-dir': { type: 'string' },
    cli: { type: 'string' },
  },
});

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const ROOT = path.resolve(import.meta.dirname, '..');
/** Native fs bindings (no url in the profile). */
const FS_BINDING =
  /^(symlink|readlink|unlink|rename|lstat|stat|fstat|open|openFileHandle|close|fdatasync|fsync|writeBuffer|writeString|ftruncate)$/;
/** Stages under this share of CPU are summed into one line. */
const MIN_STAGE_SHARE = 0.005;

/** Source maps of the bundled CLI's files (dist/src/cli.cjs, dist/src/chunks/*.cjs), by file URL; null if none. */
const sourceMaps = new Map<string, SourceMap | null>();

/**
 * The frame as in tsc's output: `airlock serve` runs the bundle (build/bundle-cli.mjs), whose
 * chunk files mix modules; each chunk's .map names the dist file a position came from.
 */
function unbundled(frame: CallFrame): CallFrame {
  if (!frame.url.startsWith('file://') || !/\/dist\/src\/(chunks\/[^/]+|cli)\.cjs$/.test(frame.url))
    return frame;
  let map = sourceMaps.get(frame.url);
  if (map === undefined) {
    try {
      map = new SourceMap(JSON.parse(readFileSync(new URL(frame.url).pathname + '.map', 'utf8')));
    } catch {
      map = null;
    }
    sourceMaps.set(frame.url, map);
  }
  const entry = map?.findEntry(frame.lineNumber, frame.columnNumber) as
    { originalSource?: string; originalLine?: number } | undefined;
  if (!entry?.originalSource) return frame;
  return {
    functionName: frame.functionName,
    url: new URL(entry.originalSource, frame.url).href,
    lineNumber: entry.originalLine ?? frame.lineNumber,
    columnNumber: 0,
  };
}

/** A file URL as a path in its build's dist folder (this build's, or the one --cli names). */
function distRelative(url: string): string {
  if (!url.startsWith('file://')) return url; // node:internal/…
  const file = new URL(url).pathname;
  const at = file.lastIndexOf('/dist/');
  return at >= 0 ? file.slice(at + '/dist/'.length) : path.relative(ROOT, file);
}

/** The stage a frame belongs to; undefined for Node internals and builtins (charged to a caller). */
function stageOf(frame: CallFrame, self: CallFrame): string | undefined {
  const url = frame.url;
  if (url.includes('/node_modules/zod/')) return 'zod validation';
  if (url.includes('/node_modules/@modelcontextprotocol/sdk/')) return 'MCP SDK dispatch';
  if (
    url.includes('/node_modules/pino') ||
    url.includes('/node_modules/thread-stream') ||
    url.endsWith('/src/log.js')
  )
    return 'logging';
  if (url.includes('/node_modules/'))
    return `dependency ${/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1]}`;
  if (!url.startsWith('file://')) return undefined;
  const rel = distRelative(url);
  if (rel.startsWith('src/transport/ndjson.js')) return 'framing/JSON (transport)';
  if (rel.startsWith('src/transport/session.js')) return 'MCP SDK dispatch';
  if (rel.startsWith('src/secrets/redact.js') || rel.startsWith('src/secrets/tail.js')) return 'redaction';
  if (rel.startsWith('src/audit/')) {
    const internal = !self.url.startsWith('file://') && self.url !== '';
    return internal || FS_BINDING.test(self.functionName) ? 'audit I/O' : 'audit record building';
  }
  if (rel.startsWith('src/policy/') || rel.startsWith('src/config/')) return 'policy';
  if (rel.startsWith('src/pipeline/bounds.js')) return 'pipeline (bounds)';
  if (rel.startsWith('src/pipeline/')) return 'pipeline orchestration';
  if (rel.startsWith('servers/http/')) {
    return /policy|authorize|match/i.test(frame.functionName) ? 'policy' : 'http client';
  }
  return rel;
}

/** Node internals with no caller of ours on the stack, named by what they are. */
function internalStage(frame: CallFrame): string {
  const { functionName: fn, url } = frame;
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(program)') return 'V8/native (program)';
  if (/node:(net|stream|internal\/streams|internal\/stream_base)/.test(url)) return 'socket I/O (node)';
  if (/node:(_http|http|internal\/http)/.test(url)) return 'http client';
  if (/node:internal\/(timers|process\/task_queues)/.test(url) || fn === 'processTicksAndRejections')
    return 'timers/microtasks (node)';
  if (/node:(fs|internal\/fs)/.test(url) || (!url && FS_BINDING.test(fn))) return 'fs (other)';
  if (/node:internal\/(modules|deps\/cjs-module-lexer)/.test(url) || fn === 'ModuleWrap')
    return 'start-up (module loading)';
  if (!url && /^write(Latin1|Utf8|Ucs2)String$|^writev$/.test(fn)) return 'socket I/O (node)';
  return url ? `node ${url.replace(/^node:/, '')}` : `native ${fn || '(anonymous)'}`;
}

function analyse(profile: CpuProfile, top: number): void {
  for (const n of profile.nodes) n.callFrame = unbundled(n.callFrame);
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  let total = 0;
  let idle = 0;
  const stages = new Map<string, number>();
  /** Per function: its self time, and that time by stage (a native like `stat` has many callers). */
  const functions = new Map<string, { us: number; byStage: Map<string, number> }>();
  for (const [id, us] of selfUs) {
    const node = byId.get(id)!;
    const self = node.callFrame;
    if (self.functionName === '(idle)') {
      idle += us;
      continue;
    }
    total += us;
    let stage: string | undefined;
    for (let at: number | undefined = id; at !== undefined && !stage; at = parent.get(at)) {
      stage = stageOf(byId.get(at)!.callFrame, self);
    }
    stage ??= internalStage(self);
    stages.set(stage, (stages.get(stage) ?? 0) + us);
    const where = self.url ? `${distRelative(self.url)}:${self.lineNumber + 1}` : '(native)';
    const key = `${self.functionName || '(anonymous)'} ${where}`;
    const f = functions.get(key) ?? { us: 0, byStage: new Map<string, number>() };
    f.us += us;
    f.byStage.set(stage, (f.byStage.get(stage) ?? 0) + us);
    functions.set(key, f);
  }
  const pct = (us: number) => `${((us / total) * 100).toFixed(1).padStart(5)} %`;
  console.log(
    `broker main thread: ${(total / 1000).toFixed(0)} ms busy, ${(idle / 1000).toFixed(0)} ms idle over the profile`,
  );
  console.log('\nby stage (self time, internals charged to their caller)');
  let rest = 0;
  let restCount = 0;
  const line = (stage: string, us: number) =>
    console.log(`  ${stage.padEnd(34)} ${(us / 1000).toFixed(1).padStart(8)} ms ${pct(us)}`);
  for (const [stage, us] of [...stages].sort((a, b) => b[1] - a[1])) {
    if (us / total >= MIN_STAGE_SHARE) line(stage, us);
    else {
      rest += us;
      restCount++;
    }
  }
  if (restCount > 0) line(`other (${restCount} stages)`, rest);
  console.log(`\ntop ${top} functions by self time`);
  for (const [key, f] of [...functions].sort((a, b) => b[1].us - a[1].us).slice(0, top)) {
    // The stage that holds most of its time (it was the first seen, which could mislabel a native).
    const [stage] = [...f.byStage].sort((a, b) => b[1] - a[1])[0]!;
    const others = f.byStage.size > 1 ? ` +${f.byStage.size - 1}` : '';
    console.log(`  ${pct(f.us)}  ${key.slice(0, 80).padEnd(80)} [${stage}${others}]`);
  }
}

async function main(): Promise<void> {
  if (values.from) {
    analyse(JSON.parse(await readFile(values.from, 'utf8')) as CpuProfile, Number(values.top));
    return;
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'al-profile-'));
  const args = [
    path.join(import.meta.dirname, 'http.js'),
    '--calls',
    values.calls!,
    '--sessions',
    values.sessions!,
    '--sequential',
    values.sequential!,
    ...(values['audit-dir'] ? ['--audit-dir', values['audit-dir']] : []),
    ...(values.cli ? ['--cli', values.cli] : []),
  ];
  const child = spawn(process.execPath, args, {
    stdio: 'inherit',
    env: { ...process.env, BENCH_BROKER_NODE_ARGS: `--cpu-prof --cpu-prof-dir=${dir}` },
  });
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  if (code !== 0) throw new Error(`bench/http exited with ${code}`);
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length !== 1) throw new Error(`expected one broker profile in ${dir}, found ${files.length}`);
  const profile = JSON.parse(await readFile(path.join(dir, files[0]!), 'utf8')) as CpuProfile;
  console.log('');
  analyse(profile, Number(values.top));
  await rm(dir, { recursive: true, force: true });
}

await main();
