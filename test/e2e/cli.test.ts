// The shipped commands as separate processes (built to dist/ by `npm test`): `airlock serve`
// with SIGHUP and SIGTERM, `airlock stdio`, `airlock bridge` (and the standalone bridge file),
// `socat`, and the real Claude Code binary health-checking the server through the bridge.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import {
  BRIDGE,
  CLI,
  INIT_LINE,
  REPO_ROOT,
  connectSocketClient,
  makeInstallation,
  startEchoUpstream,
  type Installation,
} from '../helpers/fixture.js';

const SECRET = 'tok_cliTestSecret_9f8e7d6c5b4a3210';
const CLAUDE = path.join(REPO_ROOT, 'node_modules/@anthropic-ai/claude-code-linux-x64/claude');

function policy(origin: string): string {
  return `team: acme
servers:
  http:
    hosts:
      - origin: ${origin}
        methods: [GET]
        paths: ["/v1/**"]
        inject: { header: X-Api-Key, value: "\${secret:api-token}" }
        allowPrivateAddress: true
    tools:
      http_request: {}
`;
}

async function waitFor(check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('timed out waiting');
}

function collect(child: ChildProcess): {
  out: () => string;
  err: () => string;
  exit: Promise<number | null>;
} {
  let out = '';
  let err = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (err += d));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { out: () => out, err: () => err, exit };
}

describe('airlock commands as processes', () => {
  let inst: Installation;
  let upstream: Awaited<ReturnType<typeof startEchoUpstream>>;
  let serve: ChildProcess;
  let serveIo: ReturnType<typeof collect>;
  let socketPath: string;
  let slowRelease: (() => void) | undefined;

  beforeAll(async () => {
    upstream = await startEchoUpstream((req, res) => {
      if (req.url === '/v1/slow') {
        slowRelease = () => res.end('{"slow":true}');
        return true;
      }
      return false;
    });
    inst = await makeInstallation({
      secrets: { 'api-token': SECRET },
      policies: { 'acme.yaml': policy(upstream.origin) },
    });
    socketPath = inst.socket('acme', 'http');
    serve = spawn(process.execPath, [CLI, 'serve', '--config', inst.configFile], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    serveIo = collect(serve);
    await waitFor(() => existsSync(socketPath));
  });

  afterAll(async () => {
    if (process.env.AIRLOCK_TEST_DEBUG) console.log(serveIo.err());
    if (serve.exitCode === null) serve.kill('SIGKILL');
    await upstream?.close();
    await inst?.cleanup();
  });

  it('airlock bridge relays an MCP session over stdio to the socket', async () => {
    for (const command of [
      [CLI, 'bridge', socketPath],
      [BRIDGE, socketPath],
    ]) {
      const client = new Client({ name: 'bridge-test', version: '0' });
      await client.connect(
        new StdioClientTransport({ command: process.execPath, args: command, stderr: 'pipe' }),
      );
      const r = (await client.callTool({
        name: 'http_request',
        arguments: { method: 'GET', url: `${upstream.origin}/v1/b` },
      })) as CallToolResult;
      expect(r.isError).toBeFalsy();
      expect(JSON.stringify(r)).not.toContain(SECRET);
      await client.close();
    }
    expect(upstream.requests.at(-1)!.headers['x-api-key']).toBe(SECRET);
  });

  it('the bridge exits when the socket side closes, and fails clearly on a missing socket', async () => {
    const missing = spawnSync(process.execPath, [BRIDGE, `${inst.socketDir}/nope.sock`], {
      input: '',
      timeout: 5000,
    });
    expect(missing.status).toBe(1);
    expect(missing.stderr.toString()).toContain('ENOENT');
    // A frame over 4 MiB makes the broker close the connection; the bridge must then exit by itself.
    const child = spawn(process.execPath, [BRIDGE, socketPath], { stdio: ['pipe', 'pipe', 'pipe'] });
    const io = collect(child);
    child.stdin!.write(Buffer.alloc(4 * 1024 * 1024 + 1, 0x62));
    const code = await Promise.race([io.exit, new Promise((r) => setTimeout(() => r('hung'), 8000))]);
    expect(code).toBe(0);
    expect(io.out()).toContain('exceeds');
  });

  it('socat STDIO UNIX-CONNECT works against the same socket', () => {
    const input =
      INIT_LINE +
      JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) +
      '\n' +
      JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }) +
      '\n';
    const r = spawnSync('socat', ['-t', '2', 'STDIO', `UNIX-CONNECT:${socketPath}`], {
      input,
      timeout: 10_000,
    });
    expect(r.error).toBeUndefined();
    const lines = r.stdout
      .toString()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.find((l) => l.id === 1).result.serverInfo.name).toBe('airlock-http');
    expect(lines.find((l) => l.id === 2).result.tools.map((t: { name: string }) => t.name)).toEqual([
      'http_request',
    ]);
  });

  it('the real Claude Code binary lists the server as connected through airlock bridge', async () => {
    expect(existsSync(CLAUDE), `Claude Code binary missing at ${CLAUDE} (npm ci installs it)`).toBe(true);
    const home = path.join(inst.root, 'claude-home');
    await mkdir(home, { recursive: true });
    const env = {
      PATH: process.env.PATH,
      HOME: home,
      DISABLE_AUTOUPDATER: '1',
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    };
    const add = spawnSync(
      CLAUDE,
      ['mcp', 'add', '--scope', 'user', 'airlock-http', '--', process.execPath, CLI, 'bridge', socketPath],
      { env, cwd: home, timeout: 60_000 },
    );
    expect(add.status, add.stderr.toString()).toBe(0);
    const list = spawnSync(CLAUDE, ['mcp', 'list'], { env, cwd: home, timeout: 60_000 });
    const out = list.stdout.toString();
    expect(out).toMatch(/airlock-http: .*bridge .*http\.sock - ✔ Connected/);
  });

  it('airlock stdio and airlock serve write one audit chain at the same time', async () => {
    const client = new Client({ name: 'stdio-concurrent', version: '0' });
    await client.connect(
      new StdioClientTransport({
        command: process.execPath,
        args: [CLI, 'stdio', 'http', '--team', 'acme', '--config', inst.configFile],
        stderr: 'pipe',
      }),
    );
    const { client: sock, socket } = await connectSocketClient(socketPath);
    const call = (c: Client, i: number) =>
      c.callTool({ name: 'http_request', arguments: { method: 'GET', url: `${upstream.origin}/v1/c${i}` } });
    const results = (await Promise.all(
      Array.from({ length: 20 }, (_, i) => call(i % 2 ? client : sock, i)),
    )) as CallToolResult[];
    expect(results.every((r) => !r.isError)).toBe(true);
    await client.close();
    socket.destroy();
    const verify = spawnSync(process.execPath, [CLI, 'audit', 'verify', '--config', inst.configFile]);
    expect(verify.status, verify.stdout.toString()).toBe(0);
    const records = (await readFile(inst.auditFile, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const sessions = new Set(
      records.filter((r) => /\/v1\/c\d+$/.test(r.args?.url ?? '')).map((r) => r.session),
    );
    expect(sessions.size).toBe(2);
  });

  it('rejects bad command lines with exit 1 and a clear message', () => {
    const r = spawnSync(process.execPath, [
      CLI,
      'stdio',
      'nosuch',
      '--team',
      'acme',
      '--config',
      inst.configFile,
    ]);
    expect(r.status).toBe(1);
    expect(r.stderr.toString()).toContain('unknown server "nosuch"');
    const r2 = spawnSync(process.execPath, [CLI, 'secrets', 'set', 'x', 'value-on-argv']);
    expect(r2.status).toBe(1);
    expect(r2.stderr.toString()).toContain('stdin');
    const r3 = spawnSync(process.execPath, [CLI, 'serve', '--config', path.join(inst.root, 'missing.yaml')]);
    expect(r3.status).toBe(1);
  });

  it('SIGHUP reloads policies; SIGTERM drains an in-flight call, then exits 0 and removes the socket', async () => {
    const { client, socket } = await connectSocketClient(socketPath);
    await inst.writePolicy(
      'acme.yaml',
      policy(upstream.origin).replace('methods: [GET]', 'methods: [GET, POST]'),
    );
    serve.kill('SIGHUP');
    await new Promise((r) => setTimeout(r, 200));
    if (serve.exitCode !== null) throw new Error(`serve exited: ${serveIo.err()}`);
    await waitFor(async () => {
      const r = (await client.callTool({
        name: 'http_request',
        arguments: { method: 'POST', url: `${upstream.origin}/v1/p` },
      })) as CallToolResult;
      if (r.isError) console.log(JSON.stringify(r.content));
      return !r.isError;
    });
    const inflight = client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${upstream.origin}/v1/slow` },
    });
    await waitFor(() => slowRelease !== undefined);
    serve.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    expect(serve.exitCode).toBeNull(); // still draining
    slowRelease!();
    const r = (await inflight) as CallToolResult;
    expect(r.isError).toBeFalsy();
    expect(JSON.stringify(r)).toContain('slow');
    expect(await serveIo.exit).toBe(0);
    expect(existsSync(socketPath)).toBe(false);
    socket.destroy();
    const log = serveIo.err();
    expect(log).not.toContain(SECRET);
    expect(await readFile(inst.auditFile, 'utf8')).not.toContain(SECRET);
    const verify = spawnSync(process.execPath, [CLI, 'audit', 'verify', '--config', inst.configFile]);
    expect(verify.status, verify.stdout.toString() + verify.stderr.toString()).toBe(0);
    expect((await stat(inst.auditFile)).mode & 0o777).toBe(0o600);
  });
  it('airlock stdio serves the same tools on stdin/stdout (after serve stopped, same audit chain)', async () => {
    const client = new Client({ name: 'stdio-test', version: '0' });
    await client.connect(
      new StdioClientTransport({
        command: process.execPath,
        args: [CLI, 'stdio', 'http', '--team', 'acme', '--config', inst.configFile],
        stderr: 'pipe',
      }),
    );
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['http_request']);
    const r = (await client.callTool({
      name: 'http_request',
      arguments: { method: 'DELETE', url: `${upstream.origin}/v1/x` },
    })) as CallToolResult;
    expect((r.content[0] as { text: string }).text).toMatch(/^denied: /);
    const ok = (await client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${upstream.origin}/v1/y` },
    })) as CallToolResult;
    expect(ok.isError).toBeFalsy();
    await client.close();
    const verify = spawnSync(process.execPath, [CLI, 'audit', 'verify', '--config', inst.configFile]);
    expect(verify.status, verify.stdout.toString()).toBe(0);
  });
});
