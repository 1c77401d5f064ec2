// The real client, end to end: the Claude Code binary runs in its own network namespace as uid
// 1000, with the `.mcp.json` that `airlock claude-config --sandbox` generates and nothing of the
// broker's in its environment. `claude mcp list` must see every server connected; `claude -p`,
// whose model API is Airlock's model socket (bridged to 127.0.0.1:8080 inside the namespace) in
// front of a scripted Messages API on the host, must call MCP tools that reach real upstreams
// (an HTTP API and a smart-HTTP git server). The upstreams and the scripted API see the
// credentials Airlock injected; the namespace — its processes' environments, its files, the
// transcript — never holds one.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
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
import { readAuditRecords, type AuditRecord } from '../../src/audit.js';
import { Redactor } from '../../src/redact.js';
import { startSmartHttpServer, createBareRepo, type SmartHttpServer } from '../git/smart-http-server.js';
import {
  BRIDGE,
  CLI,
  REPO_ROOT,
  makeInstallation,
  startEchoUpstream,
  type Installation,
} from '../helpers/fixture.js';
import { startRoutedApi, type RoutedApi } from './routed-api.js';

// Resolved: /proc/<pid>/exe names the real file. The agent runs a staged copy (see beforeAll).
const CLAUDE_IN_REPO = realpathSync(
  path.join(REPO_ROOT, 'node_modules/@anthropic-ai/claude-code-linux-x64/claude'),
);
let CLAUDE: string;
let STAGED_BRIDGE: string;
let stagedRoot: string | undefined;
const TEAM = 'e2e';
const GIT_USER = 'e2e-bot';
// What Claude Code is given as its API key: only so it starts; the proxy drops it.
const PLACEHOLDER_KEY = 'placeholder-not-a-secret';
// Random per run, so a hit can only come from this run's broker.
const MODEL_KEY = `sk-ant-api03-e2e${randomBytes(20).toString('hex')}`;
const HTTP_TOKEN = `tok_e2e_${randomBytes(20).toString('hex')}`;
const GIT_TOKEN = `ghp_e2e${randomBytes(20).toString('hex')}`;
const ORDERS_MARKER = `orders-${randomBytes(6).toString('hex')}`;
const FINAL_TEXT = `E2E-DONE-${randomBytes(6).toString('hex')}`;
const MODEL_LISTEN_PORT = 8080;

const secrets = new Redactor();
for (const s of [MODEL_KEY, HTTP_TOKEN, GIT_TOKEN]) secrets.add(s);

interface NamespaceProcess {
  pid: number;
  cmdline: string;
  uid: number;
  environ: string;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
}
function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
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

/** Every regular file under `dir` (following no symlinks), with its contents. */
async function filesUnder(dir: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (const entry of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    found.set(file, await fs.readFile(file, 'latin1'));
  }
  return found;
}

/** Text of the tool_result blocks in a Messages API request body. */
function toolResults(body: unknown): { text: string; isError: boolean }[] {
  const messages = (body as { messages?: { content?: unknown }[] }).messages ?? [];
  const results: { text: string; isError: boolean }[] = [];
  for (const m of messages) {
    if (!Array.isArray(m.content)) continue;
    for (const block of m.content as Record<string, unknown>[]) {
      if (block.type !== 'tool_result') continue;
      results.push({ text: JSON.stringify(block.content), isError: block.is_error === true });
    }
  }
  return results;
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
  let inst: Installation;
  let serve: ReturnType<typeof spawn> | undefined;
  let serveLog = '';
  let orders: Awaited<ReturnType<typeof startEchoUpstream>>;
  let git: SmartHttpServer;
  let api: RoutedApi;
  let home: string;
  let workDir: string;
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

    inst = await makeInstallation({
      secrets: { 'model-key': MODEL_KEY, 'orders-token': HTTP_TOKEN, 'git-token': GIT_TOKEN },
    });
    await fs.appendFile(inst.configFile, `socketGroup: ${AGENT_GID}\n`);

    orders = await startEchoUpstream((req, res) => {
      // The orders API wants the injected token, and answers with data (never with the token).
      const ok = req.headers['x-orders-token'] === HTTP_TOKEN;
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify(ok ? { orders: [{ id: ORDERS_MARKER, total: 42 }] } : { error: 'unauthorized' }),
      );
      return true;
    });

    const reposRoot = path.join(inst.root, 'remote');
    await fs.mkdir(reposRoot, { mode: 0o700 });
    await createBareRepo(reposRoot, 'app.git', { files: { 'README.md': '# app\n' } });
    git = await startSmartHttpServer({ root: reposRoot, username: GIT_USER, password: GIT_TOKEN });

    // The agent's project folder and the git work tree in it: the agent's own (as a bind-mounted
    // workspace would be); the work tree starts empty and Airlock clones into it on first use.
    workDir = path.join(inst.root, 'work');
    const workTree = path.join(workDir, 'app');
    await fs.mkdir(workTree, { recursive: true, mode: 0o755 });
    await fs.chown(workDir, AGENT_UID, AGENT_GID);
    await fs.chown(workTree, AGENT_UID, AGENT_GID);

    api = await startRoutedApi({
      apiKey: MODEL_KEY,
      replies: [
        {
          toolUse: {
            name: 'mcp__http__http_request',
            input: { method: 'GET', url: `${orders.origin}/v1/orders` },
          },
        },
        { toolUse: { name: 'mcp__git__git_status', input: { workspace: 'app' } } },
        // Held open until the namespace's processes have been looked at (they are all alive now).
        { text: FINAL_TEXT, beforeLastEvent: duringRun.promise },
      ],
      onMainRequest: (_request, count) => {
        if (count === 3) duringRun.resolve(namespaceProcesses(workDir));
      },
    });

    await inst.writePolicy(
      `${TEAM}.yaml`,
      `team: ${TEAM}
servers:
  http:
    hosts:
      - origin: ${orders.origin}
        methods: [GET]
        paths: ["/v1/orders"]
        inject: { header: X-Orders-Token, value: "\${secret:orders-token}" }
        allowPrivateAddress: true
    tools:
      http_request: {}
  git:
    workspaces:
      app:
        path: ${workTree}
        remote: ${git.repoUrl('app.git')}
        credential: git-token
        credentialUser: ${GIT_USER}
    tools:
      git_status: {}
  model:
    upstream: ${api.url}
    credential: model-key
    allowPrivateAddress: true
`,
    );

    serve = spawn(process.execPath, [CLI, 'serve', '--config', inst.configFile], {
      env: { ...process.env, AIRLOCK_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    serve.stderr!.setEncoding('utf8').on('data', (d: string) => (serveLog += d));
    const sockets = ['http', 'git', 'model'].map((s) => inst.socket(TEAM, s));
    const deadline = Date.now() + 20_000;
    for (;;) {
      const present = await Promise.all(
        sockets.map((s) =>
          fs.stat(s).then(
            () => true,
            () => false,
          ),
        ),
      );
      if (present.every(Boolean)) break;
      if (serve.exitCode !== null || Date.now() > deadline)
        throw new Error(`airlock serve did not open its sockets:\n${serveLog}`);
      await new Promise((r) => setTimeout(r, 50));
    }

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
    if (inst) killAgentProcesses(inst.root);
    if (serve && serve.exitCode === null) {
      const exited = new Promise((r) => serve!.once('exit', r));
      serve.kill('SIGTERM');
      const timer = setTimeout(() => serve!.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await api?.close();
    await orders?.close();
    await git?.close();
    await inst?.cleanup();
    if (stagedRoot) await fs.rm(stagedRoot, { recursive: true, force: true });
  });

  /** Runs `claude ARGS` as the agent, in the namespace, from the project folder. */
  async function runClaude(args: string[], timeoutMs: number): Promise<AgentRunResult> {
    // Our own deadline, for the whole process tree: runAsAgent's kills only the launcher, and
    // the run ends only once Claude Code and the bridges (which hold its pipes) are gone too.
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killAgentProcesses(inst.root);
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
        workDir,
        path.join(binDir, 'airlock-bridge'),
        inst.socket(TEAM, 'model'),
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
    expect(secrets.contains(output)).toBe(false);
  }, 70_000);

  it('`claude -p` calls MCP tools that reach the upstreams with injected credentials it never sees', async () => {
    const gitBefore = git.requests.length;
    const ordersBefore = orders.requests.length;
    const result = await runClaude(
      [
        '-p',
        'List the orders, then check the git status of the app workspace.',
        '--output-format',
        'stream-json',
        '--verbose',
      ],
      90_000,
    );
    const transcript = result.stdout + result.stderr;
    expect(result.timedOut, transcript).toBe(false);
    expect(result.code, `${transcript}\n--- airlock serve:\n${serveLog}`).toBe(0);

    // The scripted conversation ran to its end, and the final answer reached the transcript.
    expect(api.main.pending()).toBe(0);
    const final = transcript
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { type: string; subtype?: string; result?: string })
      .find((e) => e.type === 'result');
    expect(final, transcript).toMatchObject({ subtype: 'success', result: FINAL_TEXT });

    // The upstreams saw the credentials Airlock injected, on every request.
    const ordersSeen = orders.requests.slice(ordersBefore);
    expect(ordersSeen.map((r) => `${r.method} ${r.url}`)).toEqual(['GET /v1/orders']);
    expect(ordersSeen[0]!.headers['x-orders-token']).toBe(HTTP_TOKEN);
    const gitSeen = git.requests.slice(gitBefore);
    expect(gitSeen.length).toBeGreaterThan(0);
    expect(
      gitSeen.every((r) => r.authorized && r.status === 200),
      JSON.stringify(gitSeen),
    ).toBe(true);

    // The scripted API saw the real key on every request, never the placeholder.
    const mainLoop = api.requests.filter((r) => r.route === 'main');
    expect(mainLoop).toHaveLength(3);
    for (const r of api.requests) {
      expect(r.headers['x-api-key']).toBe(MODEL_KEY);
      expect(r.headers.authorization).toBeUndefined();
      expect(JSON.stringify(r.headers)).not.toContain(PLACEHOLDER_KEY);
    }
    // The tools were the MCP servers', offered directly (no tool search), and their results came
    // back into the conversation: the orders, then the git status of the clone.
    const toolNames = ((mainLoop[0]!.body as { tools: { name: string }[] }).tools ?? []).map((t) => t.name);
    expect(toolNames).toEqual(expect.arrayContaining(['mcp__http__http_request', 'mcp__git__git_status']));
    const afterHttp = toolResults(mainLoop[1]!.body);
    expect(afterHttp).toHaveLength(1);
    expect(afterHttp[0]!.isError, afterHttp[0]!.text).toBe(false);
    expect(afterHttp[0]!.text).toContain(ORDERS_MARKER);
    const afterGit = toolResults(mainLoop[2]!.body);
    expect(afterGit).toHaveLength(2);
    expect(afterGit[1]!.isError, afterGit[1]!.text).toBe(false);
    expect(afterGit[1]!.text).toContain('main');
    for (const r of api.requests) expect(secrets.contains(JSON.stringify(r.body) ?? '')).toBe(false);

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
      expect(secrets.contains(p.environ), `environment of ${p.cmdline}`).toBe(false);
    }

    // Nothing the agent can read holds one: its HOME (Claude Code's own session files and
    // transcript included), its project folder and work tree, the transcript it printed.
    const files = new Map([...(await filesUnder(home)), ...(await filesUnder(workDir))]);
    expect(
      [...files.keys()].some((f) => f.endsWith('.jsonl')),
      [...files.keys()].join('\n'),
    ).toBe(true);
    expect([...files.keys()]).toContain(path.join(workDir, 'app', 'README.md'));
    // (The walk does read what reached the agent: its session file holds the tool results.)
    expect([...files.values()].some((content) => content.includes(ORDERS_MARKER))).toBe(true);
    for (const [file, content] of files) expect(secrets.contains(content), file).toBe(false);
    expect(transcript).toContain(ORDERS_MARKER);
    expect(secrets.contains(transcript)).toBe(false);

    // Each call the session made went through Airlock's audited pipeline, which kept no secret.
    const records: AuditRecord[] = [];
    for await (const r of readAuditRecords(inst.auditFile)) records.push(r);
    const allowed = (server: string, tool: string) =>
      records.filter(
        (r) =>
          r.team === TEAM &&
          r.server === server &&
          r.tool === tool &&
          r.phase === 'result' &&
          r.decision === 'allow',
      );
    expect(allowed('http', 'http_request').map((r) => r.outcome)).toEqual(['ok']);
    expect(allowed('git', 'git_status').map((r) => r.outcome)).toEqual(['ok']);
    expect(allowed('model', 'messages')).toHaveLength(3);
    expect(secrets.contains(await fs.readFile(inst.auditFile, 'utf8'))).toBe(false);
    expect(secrets.contains(serveLog)).toBe(false);
  }, 100_000);
});
