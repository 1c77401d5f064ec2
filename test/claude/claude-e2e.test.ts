// The real client, end to end: the Claude Code binary runs in its own network namespace as uid
// 1000, with the `.mcp.json` that `airlock claude-config --sandbox` generates and nothing of the
// broker's in its environment. `claude mcp list` must see every server connected; `claude -p`,
// whose model API is Airlock's model socket (bridged to 127.0.0.1:8080 inside the namespace) in
// front of a scripted Messages API on the host, must call MCP tools that reach real upstreams
// (an HTTP API and a smart-HTTP git server). The upstreams and the scripted API see the
// credentials Airlock injected; the namespace — its processes' environments, its files, the
// transcript — never holds one.
import { spawn } from 'node:child_process';
import { promises as fs, readFileSync, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AGENT_GID,
  AGENT_UID,
  agentPath,
  canCreateSandbox,
  makeAgentHome,
  makeTraversable,
  runAsAgent,
  stageForAgent,
  type AgentRunResult,
} from '../../src/demo/sandbox.js';
import { BRIDGE, CLI, REPO_ROOT } from '../helpers/fixture.js';
import {
  deferred,
  expectSessionReachedUpstreams,
  filesUnder,
  PROMPT,
  startSessionScenario,
  type SessionScenario,
} from './session-scenario.js';

// Resolved: /proc/<pid>/exe names the real file. The agent runs a staged copy (see beforeAll).
const CLAUDE_IN_REPO = realpathSync(
  path.join(REPO_ROOT, 'node_modules/@anthropic-ai/claude-code-linux-x64/claude'),
);
let CLAUDE: string;
let STAGED_BRIDGE: string;
let stagedRoot: string | undefined;
const TEAM = 'e2e';
// What Claude Code is given as its API key: only so it starts; the proxy drops it.
const PLACEHOLDER_KEY = 'placeholder-not-a-secret';
const MODEL_LISTEN_PORT = 8080;

interface NamespaceProcess {
  pid: number;
  cmdline: string;
  uid: number;
  environ: string;
}

function readProc(pid: string, file: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'latin1');
  } catch {
    return undefined; // gone meanwhile, or not ours to read
  }
}

/**
 * Every process that shares the network namespace of the Claude Code process whose working
 * directory is `cwd`: Claude Code itself, its MCP bridges, the model bridge, the launcher.
 */
function namespaceProcesses(cwd: string): { netns: string; processes: NamespaceProcess[] } | undefined {
  const pids = readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  const netnsOf = (pid: string) => {
    try {
      return readlinkSync(`/proc/${pid}/ns/net`);
    } catch {
      return undefined;
    }
  };
  const claudePid = pids.find((pid) => {
    try {
      return readlinkSync(`/proc/${pid}/exe`) === CLAUDE && readlinkSync(`/proc/${pid}/cwd`) === cwd;
    } catch {
      return false;
    }
  });
  if (!claudePid) return undefined;
  const netns = netnsOf(claudePid);
  if (!netns) return undefined;
  const processes: NamespaceProcess[] = [];
  for (const pid of pids) {
    if (netnsOf(pid) !== netns) continue;
    const status = readProc(pid, 'status') ?? '';
    processes.push({
      pid: Number(pid),
      cmdline: (readProc(pid, 'cmdline') ?? '').replace(/\0/g, ' ').trim(),
      uid: Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1),
      environ: readProc(pid, 'environ') ?? '',
    });
  }
  return { netns, processes };
}

/**
 * Agent processes this test started that are still running (after a timeout, only the launcher
 * is killed): the agent uid's processes whose command line or working directory is under `root`.
 */
function agentProcessesUnder(root: string): number[] {
  return readdirSync('/proc')
    .filter((pid) => /^\d+$/.test(pid))
    .filter((pid) => Number(/^Uid:\s+(\d+)/m.exec(readProc(pid, 'status') ?? '')?.[1]) === AGENT_UID)
    .filter((pid) => {
      let cwd = '';
      try {
        cwd = readlinkSync(`/proc/${pid}/cwd`);
      } catch {
        // gone, or no cwd to read
      }
      return cwd.startsWith(root + '/') || (readProc(pid, 'cmdline') ?? '').includes(root + '/');
    })
    .map(Number);
}

function killAgentProcesses(root: string): void {
  for (const pid of agentProcessesUnder(root)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

// Inside the namespace: start the model bridge on loopback, wait until it accepts connections,
// then run the command ("$@") and stop the bridge. Arguments come in as $1.., never as shell text.
const LAUNCHER = `
bridge="$1"; socket="$2"; port="$3"; shift 3
"$bridge" --listen "127.0.0.1:$port" "$socket" 2>/dev/null &
bridge_pid=$!
tries=0
until node -e 'require("net").connect(+process.argv[1],"127.0.0.1").on("connect",()=>process.exit(0)).on("error",()=>process.exit(1))' "$port"; do
  tries=$((tries + 1)); [ "$tries" -gt 200 ] && { echo "model bridge did not start" >&2; kill "$bridge_pid"; exit 97; }
  sleep 0.05
done
"$@"; code=$?
kill "$bridge_pid"
exit "$code"
`;

describe('Claude Code in the sandbox, through Airlock', () => {
  let s: SessionScenario;
  let home: string;
  let binDir: string;
  // Filled in while the agent waits for its final answer (see the scripted conversation).
  const duringRun = deferred<ReturnType<typeof namespaceProcesses>>();

  beforeAll(async () => {
    // What uid 1000 runs, staged where it can read it (the repository may sit in a 0700 folder).
    const staged = await stageForAgent({
      sourceRoot: REPO_ROOT,
      dest: (stagedRoot = await fs.mkdtemp(path.join(tmpdir(), 'airlock-claude-code-'))),
      files: [path.relative(REPO_ROOT, CLAUDE_IN_REPO), path.relative(REPO_ROOT, BRIDGE)],
    });
    CLAUDE = staged.path(path.relative(REPO_ROOT, CLAUDE_IN_REPO));
    STAGED_BRIDGE = staged.path(path.relative(REPO_ROOT, BRIDGE));
    // This test is about the real boundary (root, unshare, setpriv; uid 1000 can run the
    // binaries); without it there is nothing to show, so it fails and says why.
    const boundary = await canCreateSandbox({
      readable: [CLAUDE, STAGED_BRIDGE],
      identity: { groups: [AGENT_GID] },
    });
    expect(boundary, boundary.reason).toEqual({ ok: true });

    s = await startSessionScenario({
      team: TEAM,
      onFinalRequest: () => duringRun.resolve(namespaceProcesses(s.workDir)),
      finalHeldUntil: duringRun.promise,
    });
    const { inst, workDir } = s;

    // The .mcp.json as `airlock claude-config --sandbox` prints it. It names the sockets where a
    // container has the team's socket folder mounted (/run/airlock); here the agent reaches the
    // folder itself, so that prefix is mapped onto it — the only difference a bind mount makes.
    const generated = await runCli([
      'claude-config',
      '--team',
      TEAM,
      '--sandbox',
      '--config',
      inst.configFile,
    ]);
    expect(generated.code, generated.stderr).toBe(0);
    const mcpJson = generated.stdout.replaceAll('/run/airlock/', `${path.join(inst.socketDir, TEAM)}/`);
    expect(Object.keys(JSON.parse(mcpJson).mcpServers).sort()).toEqual(['git', 'http']);
    await fs.writeFile(path.join(workDir, '.mcp.json'), mcpJson, { mode: 0o644 });
    // The permissions claude-config recommends, as printed on stderr.
    const hint = /\.claude\/settings\.json\): (\{.*\})$/m.exec(generated.stderr);
    expect(hint, generated.stderr).not.toBeNull();
    const recommended = JSON.parse(hint![1]!) as { permissions: { allow: string[] } };

    // `airlock-bridge` on the agent's PATH, as the agent image installs it: the bridge file as is.
    binDir = path.join(inst.root, 'bin');
    await fs.mkdir(binDir, { mode: 0o755 });
    await fs.copyFile(BRIDGE, path.join(binDir, 'airlock-bridge'));
    await fs.chmod(path.join(binDir, 'airlock-bridge'), 0o755);

    await makeTraversable(inst.root);
    home = await makeAgentHome(inst.root);
    const settingsDir = path.join(home, '.claude');
    await fs.mkdir(settingsDir, { mode: 0o700 });
    await fs.writeFile(
      path.join(settingsDir, 'settings.json'),
      JSON.stringify({ enableAllProjectMcpServers: true, permissions: recommended.permissions }, null, 2),
    );
    await fs.chown(settingsDir, AGENT_UID, AGENT_GID);
    await fs.chown(path.join(settingsDir, 'settings.json'), AGENT_UID, AGENT_GID);
  }, 60_000);

  afterAll(async () => {
    duringRun.resolve(undefined); // never leave a scripted reply waiting
    if (s) {
      killAgentProcesses(s.inst.root);
      await s.close();
    }
    if (stagedRoot) await fs.rm(stagedRoot, { recursive: true, force: true });
  });

  /** Runs `claude ARGS` as the agent, in the namespace, from the project folder. */
  async function runClaude(args: string[], timeoutMs: number): Promise<AgentRunResult> {
    // Our own deadline, for the whole process tree: runAsAgent's kills only the launcher, and
    // the run ends only once Claude Code and the bridges (which hold its pipes) are gone too.
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killAgentProcesses(s.inst.root);
    }, timeoutMs);
    try {
      const result = await runClaudeUntimed(args, timeoutMs + 10_000);
      return { ...result, timedOut: result.timedOut || timedOut };
    } finally {
      clearTimeout(timer);
    }
  }

  function runClaudeUntimed(args: string[], timeoutMs: number): Promise<AgentRunResult> {
    return runAsAgent({
      command: '/bin/sh',
      args: [
        '-c',
        `cd "$1" && shift\n${LAUNCHER}`,
        'launcher',
        s.workDir,
        path.join(binDir, 'airlock-bridge'),
        s.inst.socket(TEAM, 'model'),
        String(MODEL_LISTEN_PORT),
        CLAUDE,
        ...args,
      ],
      home,
      sandbox: true,
      identity: { groups: [AGENT_GID] },
      env: {
        PATH: `${binDir}:${agentPath()}`,
        ANTHROPIC_BASE_URL: `http://127.0.0.1:${MODEL_LISTEN_PORT}`,
        ANTHROPIC_API_KEY: PLACEHOLDER_KEY,
        ENABLE_TOOL_SEARCH: 'false',
        DISABLE_AUTOUPDATER: '1',
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
      },
      timeoutMs,
    });
  }

  it('`claude mcp list` shows every server of the generated .mcp.json as connected', async () => {
    const result = await runClaude(['mcp', 'list'], 60_000);
    const output = result.stdout + result.stderr;
    expect(result.timedOut, output).toBe(false);
    expect(result.code, output).toBe(0);
    for (const server of ['http', 'git']) {
      expect(output).toMatch(
        new RegExp(`^${server}: airlock-bridge \\S+/${server}\\.sock - ✔ Connected$`, 'm'),
      );
    }
    expect(output).not.toMatch(/Failed|Pending/);
    expect(s.secrets.contains(output)).toBe(false);
  }, 70_000);

  it('`claude -p` calls MCP tools that reach the upstreams with injected credentials it never sees', async () => {
    const gitBefore = s.git.requests.length;
    const ordersBefore = s.orders.requests.length;
    const result = await runClaude(['-p', PROMPT, '--output-format', 'stream-json', '--verbose'], 90_000);
    const transcript = result.stdout + result.stderr;
    expect(result.timedOut, transcript).toBe(false);
    expect(result.code, `${transcript}\n--- airlock serve:\n${s.serveLog()}`).toBe(0);
    await expectSessionReachedUpstreams(s, transcript, {
      ordersBefore,
      gitBefore,
      placeholderKey: PLACEHOLDER_KEY,
    });

    // While the agent was mid-session: its processes ran as uid 1000 in a network namespace of
    // their own, and none of their environments holds a credential.
    const seen = await duringRun.promise;
    expect(seen, 'the Claude Code process was not found while it ran').toBeDefined();
    expect(seen!.netns).not.toBe(readlinkSync('/proc/self/ns/net'));
    const claude = seen!.processes.find((p) => p.cmdline.startsWith(CLAUDE));
    expect(claude?.environ).toContain(`ANTHROPIC_BASE_URL=http://127.0.0.1:${MODEL_LISTEN_PORT}`);
    expect(claude?.environ).toContain(`ANTHROPIC_API_KEY=${PLACEHOLDER_KEY}`);
    const bridges = seen!.processes.filter((p) => p.cmdline.includes('airlock-bridge'));
    expect(bridges.some((p) => p.cmdline.endsWith('http.sock'))).toBe(true);
    expect(bridges.some((p) => p.cmdline.endsWith('git.sock'))).toBe(true);
    expect(bridges.some((p) => p.cmdline.includes('--listen'))).toBe(true);
    for (const p of seen!.processes) {
      expect(p.uid, p.cmdline).toBe(AGENT_UID);
      expect(p.environ.length, p.cmdline).toBeGreaterThan(0);
      expect(s.secrets.contains(p.environ), `environment of ${p.cmdline}`).toBe(false);
    }

    // Nothing the agent can read holds one: its HOME (Claude Code's own session files and
    // transcript included), its project folder and work tree, the transcript it printed.
    const files = new Map([...(await filesUnder(home)), ...(await filesUnder(s.workDir))]);
    expect(
      [...files.keys()].some((f) => f.endsWith('.jsonl')),
      [...files.keys()].join('\n'),
    ).toBe(true);
    expect([...files.keys()]).toContain(path.join(s.workDir, 'app', 'README.md'));
    // (The walk does read what reached the agent: its session file holds the tool results.)
    expect([...files.values()].some((content) => content.includes(s.ordersMarker))).toBe(true);
    for (const [file, content] of files) expect(s.secrets.contains(content), file).toBe(false);
  }, 100_000);
});
