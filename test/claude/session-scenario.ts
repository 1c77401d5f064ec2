// The Claude Code session both end-to-end tests run (on the host in a network namespace, and in
// the agent container): an orders API that wants an injected token, a smart-HTTP git server that
// wants an injected password, a scripted Messages API behind Airlock's model socket, and a live
// `airlock serve` for one team with http, git and model. The scripted conversation calls
// http_request, then git_status, then answers FINAL_TEXT, held open until `finalHeldUntil`
// settles so the caller can look at the agent's processes while they all run.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { readAuditRecords, type AuditRecord } from '../../src/audit/log.js';
import { AGENT_GID, AGENT_UID } from '../../src/demo/sandbox.js';
import { Redactor } from '../../src/secrets/redact.js';
import { createBareRepo, startSmartHttpServer, type SmartHttpServer } from '../git/smart-http-server.js';
import { CLI, makeInstallation, startEchoUpstream, type Installation } from '../helpers/fixture.js';
import { startRoutedApi, type RoutedApi } from './routed-api.js';

export const GIT_USER = 'e2e-bot';
export const PROMPT = 'List the orders, then check the git status of the app workspace.';

export interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
}
export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Text of the tool_result blocks in a Messages API request body. */
export function toolResults(body: unknown): { text: string; isError: boolean }[] {
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

/** Every regular file under `dir` (following no symlinks), with its contents. */
export async function filesUnder(dir: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (const entry of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    found.set(file, await fs.readFile(file, 'latin1'));
  }
  return found;
}

export interface SessionScenario {
  team: string;
  inst: Installation;
  orders: Awaited<ReturnType<typeof startEchoUpstream>>;
  git: SmartHttpServer;
  api: RoutedApi;
  /** The agent's project folder (owned by uid 1000), with the git work tree `app` in it. */
  workDir: string;
  modelKey: string;
  httpToken: string;
  gitToken: string;
  ordersMarker: string;
  finalText: string;
  /** Knows every credential of this run. */
  secrets: Redactor;
  serveLog(): string;
  close(): Promise<void>;
}

export async function startSessionScenario(opts: {
  team: string;
  /** Called when the agent asks for its final answer (all its processes are alive then). */
  onFinalRequest: () => void;
  /** The final answer's last event waits for this. */
  finalHeldUntil: Promise<unknown>;
}): Promise<SessionScenario> {
  // Random per run, so a hit can only come from this run's broker.
  const modelKey = `sk-ant-api03-e2e${randomBytes(20).toString('hex')}`;
  const httpToken = `tok_e2e_${randomBytes(20).toString('hex')}`;
  const gitToken = `ghp_e2e${randomBytes(20).toString('hex')}`;
  const ordersMarker = `orders-${randomBytes(6).toString('hex')}`;
  const finalText = `E2E-DONE-${randomBytes(6).toString('hex')}`;
  const secrets = new Redactor();
  for (const s of [modelKey, httpToken, gitToken]) secrets.add(s);

  const inst = await makeInstallation({
    secrets: { 'model-key': modelKey, 'orders-token': httpToken, 'git-token': gitToken },
  });
  await fs.appendFile(inst.configFile, `socketGroup: ${AGENT_GID}\n`);

  const orders = await startEchoUpstream((req, res) => {
    // The orders API wants the injected token, and answers with data (never with the token).
    const ok = req.headers['x-orders-token'] === httpToken;
    res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
    res.end(JSON.stringify(ok ? { orders: [{ id: ordersMarker, total: 42 }] } : { error: 'unauthorized' }));
    return true;
  });

  const reposRoot = path.join(inst.root, 'remote');
  await fs.mkdir(reposRoot, { mode: 0o700 });
  await createBareRepo(reposRoot, 'app.git', { files: { 'README.md': '# app\n' } });
  const git = await startSmartHttpServer({ root: reposRoot, username: GIT_USER, password: gitToken });

  // The agent's project folder and the git work tree in it: the agent's own (as a bind-mounted
  // workspace would be); the work tree starts empty and Airlock clones into it on first use.
  const workDir = path.join(inst.root, 'work');
  const workTree = path.join(workDir, 'app');
  await fs.mkdir(workTree, { recursive: true, mode: 0o755 });
  await fs.chown(workDir, AGENT_UID, AGENT_GID);
  await fs.chown(workTree, AGENT_UID, AGENT_GID);

  const api = await startRoutedApi({
    apiKey: modelKey,
    replies: [
      {
        toolUse: {
          name: 'mcp__http__http_request',
          input: { method: 'GET', url: `${orders.origin}/v1/orders` },
        },
      },
      { toolUse: { name: 'mcp__git__git_status', input: { workspace: 'app' } } },
      { text: finalText, beforeLastEvent: opts.finalHeldUntil },
    ],
    onMainRequest: (_request, count) => {
      if (count === 3) opts.onFinalRequest();
    },
  });

  await inst.writePolicy(
    `${opts.team}.yaml`,
    `team: ${opts.team}
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

  let serveLog = '';
  const serve: ChildProcess = spawn(process.execPath, [CLI, 'serve', '--config', inst.configFile], {
    env: { ...process.env, AIRLOCK_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  serve.stderr!.setEncoding('utf8').on('data', (d: string) => (serveLog += d));
  const close = async () => {
    if (serve.exitCode === null && serve.signalCode === null) {
      const exited = new Promise((r) => serve.once('exit', r));
      serve.kill('SIGTERM');
      const timer = setTimeout(() => serve.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await api.close();
    await orders.close();
    await git.close();
    await inst.cleanup();
  };
  const sockets = ['http', 'git', 'model'].map((s) => inst.socket(opts.team, s));
  // Bounded by tries (400 × 50 ms at least), not by a clock.
  for (let i = 0; ; i++) {
    const present = await Promise.all(
      sockets.map((s) =>
        fs.stat(s).then(
          () => true,
          () => false,
        ),
      ),
    );
    if (present.every(Boolean)) break;
    if (serve.exitCode !== null || i > 400) {
      await close();
      throw new Error(`airlock serve did not open its sockets:\n${serveLog}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  return {
    team: opts.team,
    inst,
    orders,
    git,
    api,
    workDir,
    modelKey,
    httpToken,
    gitToken,
    ordersMarker,
    finalText,
    secrets,
    serveLog: () => serveLog,
    close,
  };
}

/**
 * What a finished `claude -p --output-format stream-json` session must show, wherever it ran:
 * the conversation ran to its end; the upstreams saw the injected credentials; the scripted API
 * saw the real key on every request, never `placeholderKey`; the tool results came back; each
 * call was audited and no credential reached the audit log or the broker's log.
 */
export async function expectSessionReachedUpstreams(
  s: SessionScenario,
  transcript: string,
  opts: { ordersBefore: number; gitBefore: number; placeholderKey: string },
): Promise<void> {
  expect(s.api.main.pending()).toBe(0);
  const final = transcript
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { type: string; subtype?: string; result?: string })
    .find((e) => e.type === 'result');
  expect(final, transcript).toMatchObject({ subtype: 'success', result: s.finalText });

  const ordersSeen = s.orders.requests.slice(opts.ordersBefore);
  expect(ordersSeen.map((r) => `${r.method} ${r.url}`)).toEqual(['GET /v1/orders']);
  expect(ordersSeen[0]!.headers['x-orders-token']).toBe(s.httpToken);
  const gitSeen = s.git.requests.slice(opts.gitBefore);
  expect(gitSeen.length).toBeGreaterThan(0);
  expect(
    gitSeen.every((r) => r.authorized && r.status === 200),
    JSON.stringify(gitSeen),
  ).toBe(true);

  const mainLoop = s.api.requests.filter((r) => r.route === 'main');
  expect(mainLoop).toHaveLength(3);
  for (const r of s.api.requests) {
    expect(r.headers['x-api-key']).toBe(s.modelKey);
    expect(r.headers.authorization).toBeUndefined();
    expect(JSON.stringify(r.headers)).not.toContain(opts.placeholderKey);
  }
  // The tools were the MCP servers', offered directly (no tool search), and their results came
  // back into the conversation: the orders, then the git status of the clone.
  const toolNames = ((mainLoop[0]!.body as { tools: { name: string }[] }).tools ?? []).map((t) => t.name);
  expect(toolNames).toEqual(expect.arrayContaining(['mcp__http__http_request', 'mcp__git__git_status']));
  const afterHttp = toolResults(mainLoop[1]!.body);
  expect(afterHttp).toHaveLength(1);
  expect(afterHttp[0]!.isError, afterHttp[0]!.text).toBe(false);
  expect(afterHttp[0]!.text).toContain(s.ordersMarker);
  const afterGit = toolResults(mainLoop[2]!.body);
  expect(afterGit).toHaveLength(2);
  expect(afterGit[1]!.isError, afterGit[1]!.text).toBe(false);
  expect(afterGit[1]!.text).toContain('main');
  for (const r of s.api.requests) expect(s.secrets.contains(JSON.stringify(r.body) ?? '')).toBe(false);
  expect(transcript).toContain(s.ordersMarker);
  expect(s.secrets.contains(transcript)).toBe(false);

  // Each call the session made went through Airlock's audited pipeline, which kept no secret.
  const records: AuditRecord[] = [];
  for await (const r of readAuditRecords(s.inst.auditFile)) records.push(r);
  const allowed = (server: string, tool: string) =>
    records.filter(
      (r) =>
        r.team === s.team &&
        r.server === server &&
        r.tool === tool &&
        r.phase === 'result' &&
        r.decision === 'allow',
    );
  expect(allowed('http', 'http_request').map((r) => r.outcome)).toEqual(['ok']);
  expect(allowed('git', 'git_status').map((r) => r.outcome)).toEqual(['ok']);
  expect(allowed('model', 'messages')).toHaveLength(3);
  expect(s.secrets.contains(await fs.readFile(s.inst.auditFile, 'utf8'))).toBe(false);
  expect(s.secrets.contains(s.serveLog())).toBe(false);
}
