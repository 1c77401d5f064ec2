// The agent container for real: a real engine, the image built by docker/build-image.sh (from a
// local debootstrap base, with the host's CA bundle for the package downloads), started by
// docker/run-agent.sh on the sockets of a live `airlock serve`. Inside it: the sandbox's own
// properties, Claude Code's MCP servers through airlock-bridge, and a `claude -p` session whose
// model API is Airlock's model socket in front of a scripted Messages API on the host, calling
// tools that reach real upstreams with credentials the container never holds.
import { spawn } from 'node:child_process';
import { promises as fs, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_UID } from '../../src/demo/sandbox.js';
import {
  deferred,
  expectSessionReachedUpstreams,
  filesUnder,
  PROMPT,
  startSessionScenario,
  type SessionScenario,
} from '../claude/session-scenario.js';
import {
  buildCaBundle,
  docker,
  ensureEngine,
  ensureImages,
  run,
  TEST_IMAGE,
  type CommandResult,
  type Engine,
} from './engine.js';
import { dockerDir, repoRoot, runAgentScript } from './helpers.js';

const TEAM = 'e2e';
// What managed-settings.json's apiKeyHelper prints: the only "key" the container has.
const PLACEHOLDER_KEY = 'airlock-placeholder-the-broker-adds-the-key';

interface ContainerProcess {
  cmdline: string;
  uid: number;
  environ: string;
}

/** Every process in the network namespace of the running container labelled for TEAM (read from the host). */
async function containerProcesses(): Promise<{ netns: string; processes: ContainerProcess[] } | undefined> {
  const ids = (await docker(['ps', '-q', '--filter', `label=airlock.team=${TEAM}`])).stdout
    .trim()
    .split('\n');
  if (ids.length !== 1 || !ids[0]) return undefined;
  const pid = (await docker(['inspect', '--format', '{{.State.Pid}}', ids[0]])).stdout.trim();
  const netns = readlinkSync(`/proc/${pid}/ns/net`);
  const processes: ContainerProcess[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readlinkSync(`/proc/${entry}/ns/net`) !== netns) continue;
      const status = readFileSync(`/proc/${entry}/status`, 'latin1');
      processes.push({
        cmdline: readFileSync(`/proc/${entry}/cmdline`, 'latin1').replace(/\0/g, ' ').trim(),
        uid: Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1),
        environ: readFileSync(`/proc/${entry}/environ`, 'latin1'),
      });
    } catch {
      // gone meanwhile
    }
  }
  return { netns, processes };
}

/** Streams `docker save IMAGE` and reports which of `needles` occur anywhere in it (every layer's files and the config). */
function savedImageContains(image: string, needles: string[]): Promise<Record<string, boolean>> {
  return new Promise((resolve, reject) => {
    const child = spawn('docker', ['save', image], { stdio: ['ignore', 'pipe', 'pipe'] });
    const wanted = needles.map((n) => Buffer.from(n));
    const found = Object.fromEntries(needles.map((n) => [n, false]));
    const overlap = Math.max(...wanted.map((w) => w.length));
    let tail = Buffer.alloc(0);
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      const window = Buffer.concat([tail, chunk]);
      wanted.forEach((w, i) => {
        if (window.includes(w)) found[needles[i]!] = true;
      });
      tail = window.subarray(Math.max(0, window.length - overlap));
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) =>
      status === 0 ? resolve(found) : reject(new Error(`docker save failed: ${stderr}`)),
    );
  });
}

let engine: Engine | undefined;
let marker = '';
let s: SessionScenario;
let socketRoot: string;
const duringRun = deferred<Awaited<ReturnType<typeof containerProcesses>>>();

/** The seeds' plain `docker run --network none` of the image (no sandbox flags, no sockets). */
function plainDockerRun(options: string[], command: string[]): Promise<CommandResult> {
  return docker(['run', '--rm', '--pull', 'never', '--network', 'none', ...options, TEST_IMAGE, ...command]);
}

/** docker/run-agent.sh for TEAM on the live sockets, with the test image. */
function runAgent(
  command: string[],
  opts: { team?: string; timeoutMs?: number } = {},
): Promise<CommandResult> {
  return run(
    'bash',
    [
      runAgentScript,
      '--team',
      opts.team ?? TEAM,
      '--workspace',
      s.workDir,
      '--socket-dir',
      socketRoot,
      '--image',
      TEST_IMAGE,
      '--',
      ...command,
    ],
    { timeoutMs: opts.timeoutMs ?? 120_000 },
  );
}

beforeAll(async () => {
  engine = await ensureEngine();
  const ca = buildCaBundle();
  marker = ca.marker;
  await ensureImages(ca.bundle);

  s = await startSessionScenario({
    team: TEAM,
    onFinalRequest: () =>
      void containerProcesses().then(duringRun.resolve, () => duringRun.resolve(undefined)),
    finalHeldUntil: duringRun.promise,
  });
  socketRoot = s.inst.socketDir;
  // An empty socket folder for a team that has no servers (the control case).
  await fs.mkdir(path.join(socketRoot, 'nobody'), { recursive: true });
}, 45 * 60_000);

afterAll(async () => {
  duringRun.resolve(undefined);
  const leftover = (
    await docker(['ps', '-q', '--filter', `label=airlock.team=${TEAM}`]).catch(() => undefined)
  )?.stdout.trim();
  if (leftover) await docker(['rm', '-f', ...leftover.split('\n')]);
  await s?.close();
  await engine?.stop();
}, 120_000);

describe('the agent image', () => {
  it('holds no layer with the build CA, while its files are visible to the same scan', async () => {
    const markerBody = marker.split('\n').filter((l) => l && !l.startsWith('-----'));
    expect(markerBody.length).toBeGreaterThan(2);
    const needles = [...markerBody.slice(0, 3), 'build-ca.pem', PLACEHOLDER_KEY];
    const found = await savedImageContains(TEST_IMAGE, needles);
    // The managed settings are in the image, so the scan does see file contents.
    expect(found[PLACEHOLDER_KEY]).toBe(true);
    for (const line of markerBody.slice(0, 3)) expect(found[line], line).toBe(false);
    expect(found['build-ca.pem']).toBe(false);

    const history = await docker(['history', '--no-trunc', '--format', '{{.CreatedBy}}', TEST_IMAGE]);
    expect(history.status, history.stderr).toBe(0);
    expect(history.stdout).not.toContain('build-ca');
    expect(history.stdout).toContain('COPY');
    const config = await docker(['image', 'inspect', TEST_IMAGE]);
    expect(config.stdout).not.toContain('build-ca');
    expect(config.stdout).not.toContain(markerBody[0]!);
  }, 300_000);

  it('runs the pinned Claude Code version, the same as the host tests run', async () => {
    const pinned = /^ARG CLAUDE_CODE_VERSION=(\S+)$/m.exec(
      readFileSync(path.join(dockerDir, 'Dockerfile'), 'utf8'),
    )![1];
    const installed = JSON.parse(
      readFileSync(path.join(repoRoot, 'node_modules/@anthropic-ai/claude-code/package.json'), 'utf8'),
    ).version;
    expect(pinned).toBe(installed);
    const result = await plainDockerRun([], ['claude', '--version']);
    expect(result.stdout.trim()).toBe(`${pinned} (Claude Code)`);
  }, 120_000);
});

// Prints one `key=value` line per property; run inside the container as the agent.
const PROBE = String.raw`
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
echo "links=$(ls /sys/class/net | tr '\n' ' ')"
grep -E '^(Seccomp|NoNewPrivs|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status | tr -d '\t' | tr ':' '='
# ptrace is allowed by Docker's default profile and denied by this project's.
perl -e 'print(syscall(101, 0, 0, 0, 0) == -1 ? "ptrace=denied $!\n" : "ptrace=allowed\n")'
awk '$2 == "/" || $2 == "/tmp" || $2 == "/home/agent" { print "mount " $2 "=" $4 }' /proc/self/mounts
if touch /usr/local/bin/planted 2>/dev/null; then echo root-write=allowed; else echo root-write=refused; fi
for dir in /tmp /home/agent; do
  cp /bin/true "$dir/true" && chmod 755 "$dir/true"
  if "$dir/true" 2>/dev/null; then echo "exec $dir=allowed"; else echo "exec $dir=refused"; fi
done
if touch /workspace/.probe 2>/dev/null; then echo workspace-write=allowed; rm -f /workspace/.probe; fi
`;

describe('inside the container started by run-agent.sh', () => {
  it('has only lo, seccomp mode 2 with this profile, a read-only root, noexec tmpfs, uid/gid 1000, no capabilities', async () => {
    const result = await runAgent(['bash', '-c', PROBE]);
    expect(result.status, result.stderr).toBe(0);
    const lines = result.stdout.trim().split('\n');
    const value = (key: string) => lines.find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1);
    expect(value('uid')).toBe('1000 gid=1000 groups=1000');
    expect(value('links')).toBe('lo ');
    expect(value('Seccomp')).toBe('2');
    expect(value('NoNewPrivs')).toBe('1');
    for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'])
      expect(value(set), set).toBe('0000000000000000');
    expect(value('ptrace')).toMatch(/^denied Operation not permitted$/);
    expect(value('mount /')?.split(',')).toContain('ro');
    for (const dir of ['/tmp', '/home/agent']) {
      expect(value(`mount ${dir}`)?.split(','), dir).toEqual(
        expect.arrayContaining(['rw', 'noexec', 'nosuid', 'nodev']),
      );
      expect(value(`exec ${dir}`), dir).toBe('refused');
    }
    expect(value('root-write')).toBe('refused');
    expect(value('workspace-write')).toBe('allowed');

    // The probe can tell: under Docker's default seccomp profile the same ptrace call succeeds.
    const control = await plainDockerRun(
      ['--user', '1000:1000', '--entrypoint', 'perl'],
      ['-e', 'print(syscall(101, 0, 0, 0, 0) == -1 ? "denied\\n" : "allowed\\n")'],
    );
    expect(control.stdout.trim(), control.stderr).toBe('allowed');
  }, 180_000);

  it('`claude mcp list` shows every server connected through airlock-bridge and the mounted sockets', async () => {
    const result = await runAgent(['claude', 'mcp', 'list']);
    const output = result.stdout + result.stderr;
    expect(result.status, output).toBe(0);
    for (const server of ['http', 'git']) {
      expect(output).toMatch(
        new RegExp(`^${server}: airlock-bridge /run/airlock/${server}\\.sock - ✔ Connected$`, 'm'),
      );
    }
    // model.sock is the model API, not an MCP server.
    expect(output).not.toMatch(/^model:/m);
    expect(output).not.toMatch(/Failed|Pending/);
    expect(s.secrets.contains(output)).toBe(false);
  }, 180_000);

  it('`claude -p` reaches the upstreams through Airlock; the container never holds a credential', async () => {
    const gitBefore = s.git.requests.length;
    const ordersBefore = s.orders.requests.length;
    // Claude Code's transcript to stdout; afterwards, the state it left in the tmpfs folders goes
    // to the work tree (the only place that outlives the container) for the host to read.
    const script = String.raw`
      ENABLE_TOOL_SEARCH=false claude -p "$1" --output-format stream-json --verbose
      code=$?
      mkdir -p /workspace/.state
      tar -cf /workspace/.state/tmpfs.tar -C / home/agent tmp 2>/dev/null
      cat /proc/[0-9]*/environ > /workspace/.state/environ 2>/dev/null
      exit "$code"
    `;
    const result = await runAgent(['bash', '-c', script, 'claude-run', PROMPT], { timeoutMs: 240_000 });
    const transcript = result.stdout + result.stderr;
    expect(result.status, `${transcript}\n--- airlock serve:\n${s.serveLog()}`).toBe(0);
    await expectSessionReachedUpstreams(s, transcript, {
      ordersBefore,
      gitBefore,
      placeholderKey: PLACEHOLDER_KEY,
    });

    // Mid-session, seen from the host: the container's processes (Claude Code, the MCP bridges,
    // the model bridge) are uid 1000 in a network namespace of their own, with no credential in
    // their environments.
    const seen = await duringRun.promise;
    expect(seen, 'the container was not found while Claude Code ran').toBeDefined();
    expect(seen!.netns).not.toBe(readlinkSync('/proc/self/ns/net'));
    const bridges = seen!.processes.filter((p) => p.cmdline.includes('airlock-bridge'));
    expect(bridges.some((p) => p.cmdline.endsWith('/run/airlock/http.sock'))).toBe(true);
    expect(bridges.some((p) => p.cmdline.endsWith('/run/airlock/git.sock'))).toBe(true);
    expect(bridges.some((p) => p.cmdline.includes('--listen 127.0.0.1:8080'))).toBe(true);
    expect(seen!.processes.some((p) => /(^|\/)claude( |$)/.test(p.cmdline))).toBe(true);
    for (const p of seen!.processes) {
      // docker's --init (tini) runs as the container user too.
      expect(p.uid, p.cmdline).toBe(AGENT_UID);
      expect(s.secrets.contains(p.environ), `environment of ${p.cmdline}`).toBe(false);
    }

    // What the container could write and read afterwards: its tmpfs HOME (Claude Code's session
    // files) and /tmp, its environment, the work tree and the transcript. (The read-only image was
    // built before these per-run secrets existed.)
    const state = path.join(s.workDir, '.state');
    const unpacked = path.join(s.inst.root, 'container-state');
    await fs.mkdir(unpacked);
    const untar = await run('tar', ['-xf', path.join(state, 'tmpfs.tar'), '-C', unpacked]);
    expect(untar.status, untar.stderr).toBe(0);
    const files = new Map([...(await filesUnder(unpacked)), ...(await filesUnder(s.workDir))]);
    expect(
      [...files.keys()].some((f) => f.endsWith('.jsonl')),
      [...files.keys()].join('\n'),
    ).toBe(true);
    expect([...files.values()].some((c) => c.includes(s.ordersMarker))).toBe(true);
    for (const [file, content] of files) expect(s.secrets.contains(content), file).toBe(false);
    expect(await fs.readFile(path.join(state, 'environ'), 'latin1')).toContain('HOME=/home/agent');
    await fs.rm(state, { recursive: true });
  }, 300_000);
});

// Connects to each URL's host:port from inside a container; prints one line per URL.
const REACH = String.raw`
const net = require('node:net');
(async () => {
  for (const url of process.argv.slice(1)) {
    const { hostname, port } = new URL(url);
    const outcome = await new Promise((resolve) => {
      const s = net.connect({ host: hostname, port: Number(port) });
      s.setTimeout(5000, () => { s.destroy(); resolve('timeout'); });
      s.on('connect', () => { s.destroy(); resolve('connected'); });
      s.on('error', (e) => resolve(e.code));
    });
    console.log(url + ' ' + outcome);
  }
})();
`;

describe('control cases: without the sockets there is no way out', () => {
  const upstreams = () => [s.orders.origin, s.git.repoUrl('app.git'), s.api.url];
  const requestCounts = () => [s.orders.requests.length, s.git.requests.length, s.api.requests.length];

  it('run-agent.sh for a team with no sockets: no MCP server, no upstream reachable', async () => {
    const before = requestCounts();
    const list = await runAgent(['claude', 'mcp', 'list'], { team: 'nobody' });
    expect(list.stdout + list.stderr).not.toMatch(/Connected/);
    expect(list.stderr).toContain('no MCP server sockets');
    const reach = await runAgent(['node', '-e', REACH, ...upstreams()], { team: 'nobody' });
    expect(reach.status, reach.stderr).toBe(0);
    for (const url of upstreams()) expect(reach.stdout).toContain(`${url} ECONNREFUSED`);
    expect(requestCounts()).toEqual(before);
  }, 180_000);

  it('run-agent.sh never pulls: an image missing here stops it, naming the build script', async () => {
    const result = await run('bash', [
      runAgentScript,
      '--team',
      TEAM,
      '--workspace',
      s.workDir,
      '--socket-dir',
      socketRoot,
      '--image',
      'airlock-agent:not-built-here',
    ]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('never pulls');
    expect(result.stderr).toContain('docker/build-image.sh --tag airlock-agent:not-built-here');
    expect((await docker(['image', 'inspect', 'airlock-agent:not-built-here'])).status).not.toBe(0);
  }, 60_000);

  it('a plain `docker run --network none` of the image reaches no loopback upstream', async () => {
    const before = requestCounts();
    const reach = await plainDockerRun([], ['node', '-e', REACH, ...upstreams()]);
    expect(reach.status, reach.stderr).toBe(0);
    for (const url of upstreams()) expect(reach.stdout).toContain(`${url} ECONNREFUSED`);
    // The same probe on the host does connect, so a refusal above means something.
    const host = await run(process.execPath, ['-e', REACH, ...upstreams()]);
    for (const url of upstreams()) expect(host.stdout).toContain(`${url} connected`);
    expect(requestCounts()).toEqual(before);
  }, 180_000);
});
