// The whole spine through a real Unix socket with the MCP SDK Client: policy → pipeline →
// http server → loopback upstream → redaction → durable audit.
import { readFile, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import type { Broker } from '../../src/broker.js';
import { verifyAuditFile } from '../../src/audit/log.js';
import {
  acmeHttpPolicy,
  connectSocketClient,
  INIT_LINE,
  rawExchange,
  startAcmeHttpBroker,
  type AcmeHttpBroker,
  type EchoUpstream,
  type Installation,
} from '../helpers/fixture.js';

const SECRET = 'sk_live_e2eSecretValue0123456789abcdef';

const HTTP_LIMITS = '    maxResponseBytes: 65536\n    timeoutMs: 3000\n';
const policy = (origin: string) => acmeHttpPolicy(origin, HTTP_LIMITS);

const text = (r: CallToolResult) => (r.content[0] as { text: string }).text;

describe('http server end to end over a Unix socket', () => {
  let fixture: AcmeHttpBroker | undefined;
  let inst: Installation;
  let upstream: EchoUpstream;
  let broker: Broker;
  let socketPath: string;

  beforeAll(async () => {
    fixture = await startAcmeHttpBroker({ secret: SECRET, sectionYaml: HTTP_LIMITS });
    ({ inst, upstream, broker, socketPath } = fixture);
  });

  afterAll(() => fixture?.close());

  it('creates the socket 0660 in a 0750 team folder', async () => {
    expect((await stat(socketPath)).mode & 0o777).toBe(0o660);
    expect((await stat(`${inst.socketDir}/acme`)).mode & 0o777).toBe(0o750);
  });

  it('doctor checks the live sockets: 0660 passes, anything looser fails', async () => {
    const { spawnSync } = await import('node:child_process');
    const { CLI } = await import('../helpers/fixture.js');
    const doctor = () =>
      spawnSync(process.execPath, [CLI, 'doctor', '--config', inst.configFile], { encoding: 'utf8' });
    const ok = doctor();
    expect(ok.stdout).toMatch(/ ok \] socket .*acme\/http\.sock — mode 660/);
    expect(ok.status, ok.stdout).toBe(0);
    const { chmod } = await import('node:fs/promises');
    await chmod(socketPath, 0o666);
    try {
      const loose = doctor();
      expect(loose.stdout).toMatch(/FAIL\] socket .*acme\/http\.sock — mode 666.*expected 660/);
      expect(loose.status).toBe(1);
    } finally {
      await chmod(socketPath, 0o660);
    }
  });

  it('injects the credential upstream and never returns or audits it', async () => {
    const { client, socket } = await connectSocketClient(socketPath);
    const tools = await client.listTools();
    expect(tools.tools.map((t) => t.name)).toEqual(['http_request']);
    const result = (await client.callTool({
      name: 'http_request',
      arguments: {
        method: 'POST',
        url: `${upstream.origin}/v1/echo?q=1`,
        headers: { 'X-Trace': 'abc', Authorization: 'Bearer agent-forged', Cookie: 'session=stolen' },
        body: '{"hello":"world"}',
      },
    })) as CallToolResult;
    expect(result.isError).toBeFalsy();
    const last = upstream.requests.at(-1)!;
    // The upstream really got the injected credential, and only it.
    expect(last.headers.authorization).toBe(`Bearer ${SECRET}`);
    expect(last.headers.cookie).toBeUndefined();
    expect(last.headers['x-trace']).toBe('abc');
    expect(last.body).toBe('{"hello":"world"}');
    // The upstream echoed every header back, yet the secret is nowhere in the result…
    const serialized = JSON.stringify(result);
    expect(serialized).toContain('x-trace');
    expect(serialized).not.toContain(SECRET);
    expect(serialized).not.toContain(Buffer.from(SECRET).toString('base64').slice(4, 30));
    expect((result.structuredContent as { status: number }).status).toBe(200);
    // …nor in the audit file, which holds the request/result pair.
    const audit = await readFile(inst.auditFile, 'utf8');
    expect(audit).not.toContain(SECRET);
    const records = audit
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const pair = records.filter((r) => r.tool === 'http_request' && r.decision === 'allow');
    expect(pair.map((r) => r.phase)).toEqual(['request', 'result']);
    expect(pair[0].call).toBe(pair[1].call);
    expect(pair[1].outcome).toBe('ok');
    expect(pair[0].args.url).toBe(`${upstream.origin}/v1/echo?q=1`);
    socket.destroy();
  });

  it('denies what the policy does not allow, says what would be allowed, and audits one record', async () => {
    const { client, socket } = await connectSocketClient(socketPath);
    const before = upstream.requests.length;
    const result = (await client.callTool({
      name: 'http_request',
      arguments: { method: 'DELETE', url: `${upstream.origin}/v1/things/1` },
    })) as CallToolResult;
    expect(result.isError).toBe(true);
    expect(text(result)).toMatch(/^denied: http\.hosts/);
    expect(text(result)).toContain('GET');
    expect(text(result)).toContain('POST');
    expect(upstream.requests.length).toBe(before);
    const records = (await readFile(inst.auditFile, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const last = records.at(-1);
    expect(last).toMatchObject({
      phase: 'result',
      decision: 'deny',
      outcome: 'denied',
      tool: 'http_request',
    });
    expect(records.filter((r) => r.call === last.call)).toHaveLength(1);
    socket.destroy();
  });

  it('a tool the policy does not list is absent, and calling it is denied and audited', async () => {
    const { client, socket } = await connectSocketClient(socketPath);
    const result = (await client.callTool({
      name: 'git_push',
      arguments: { branch: 'main' },
    })) as CallToolResult;
    expect(result.isError).toBe(true);
    expect(text(result)).toMatch(/^denied: http\.tools: tool "git_push" is not enabled/);
    const last = JSON.parse((await readFile(inst.auditFile, 'utf8')).trim().split('\n').at(-1)!);
    expect(last).toMatchObject({ tool: 'git_push', decision: 'deny', rule: 'http.tools' });
    socket.destroy();
  });

  it('rejects hostile arguments with a clear error before anything is sent', async () => {
    const { client, socket } = await connectSocketClient(socketPath);
    const before = upstream.requests.length;
    const bad = (await client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${upstream.origin}/v1/x`, extra: 1 },
    })) as CallToolResult;
    expect(text(bad)).toMatch(/^invalid argument: .*extra/);
    const crlf = (await client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${upstream.origin}/v1/x`, headers: { 'X-A': 'v\r\nHost: evil' } },
    })) as CallToolResult;
    expect(crlf.isError).toBe(true);
    expect(upstream.requests.length).toBe(before);
    socket.destroy();
  });

  it('answers a broken frame with a JSON-RPC error and keeps the session usable', async () => {
    const payload =
      INIT_LINE +
      'this is not json\n' +
      '{"jsonrpc":"2.0","id":"x","method":5}\n' +
      JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) +
      '\n' +
      JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }) +
      '\n';
    const { lines } = await rawExchange(socketPath, payload, { expectLines: 4, waitMs: 15_000 });
    const errors = lines.filter((l) => (l as { error?: unknown }).error) as Array<{
      error: { code: number };
    }>;
    expect(errors.map((e) => e.error.code).sort((a, b) => a - b)).toEqual([-32700, -32600]);
    const list = lines.find((l) => (l as { id?: unknown }).id === 2) as { result: { tools: unknown[] } };
    expect(list.result.tools).toHaveLength(1);
  });

  it('refuses absurdly deep JSON before parsing it, and the session carries on', async () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    const payload =
      INIT_LINE +
      `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"http_request","arguments":{"x":${deep}}}}\n` +
      JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'ping' }) +
      '\n';
    const { lines } = await rawExchange(socketPath, payload, { expectLines: 3, waitMs: 15_000 });
    const error = lines.find((l) => (l as { error?: { message: string } }).error) as {
      error: { message: string };
    };
    expect(error.error.message).toMatch(/nests deeper than 64 levels/);
    expect(lines.find((l) => (l as { id?: unknown }).id === 3)).toMatchObject({ result: {} });
  });

  it('closes a connection that sends an oversized frame; other sessions carry on', async () => {
    const { client, socket } = await connectSocketClient(socketPath);
    const idle = await new Promise<net.Socket>((resolve) => {
      const s = net.connect(socketPath, () => resolve(s));
    });
    const big = Buffer.alloc(4 * 1024 * 1024 + 10, 0x61);
    const { closed, lines } = await rawExchange(socketPath, big, { waitMs: 5000 });
    expect(closed).toBe(true);
    expect(JSON.stringify(lines)).toContain('exceeds');
    // An idle connection and the oversized one did not stall this session.
    const r = (await client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${upstream.origin}/v1/still-alive` },
    })) as CallToolResult;
    expect(r.isError).toBeFalsy();
    idle.destroy();
    socket.destroy();
  });

  it('reloads a changed policy for live sessions and keeps the last good one when broken', async () => {
    const { client, socket } = await connectSocketClient(socketPath);
    const changed = new Promise<void>((resolve) =>
      client.setNotificationHandler(ToolListChangedNotificationSchema, () => resolve()),
    );
    // Add a rate limit: 1 call per hour.
    await inst.writePolicy(
      'acme.yaml',
      policy(upstream.origin).replace('http_request: {}', 'http_request: { rateLimit: 1/hour }'),
    );
    await broker.reload();
    await changed;
    const first = (await client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${upstream.origin}/v1/a` },
    })) as CallToolResult;
    expect(first.isError).toBeFalsy();
    const second = (await client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${upstream.origin}/v1/b` },
    })) as CallToolResult;
    expect(text(second)).toMatch(
      /^denied: http\.tools\.http_request\.rateLimit: rate limit 1\/hour reached; next call allowed in \d+ min/,
    );

    // A broken file: the last good policy stays in force.
    await writeFile(`${inst.policiesDir}/acme.yaml`, 'team: acme\nservers:\n  http:\n    hostz: []\n');
    await broker.reload();
    const still = await client.listTools();
    expect(still.tools.map((t) => t.name)).toEqual(['http_request']);

    // Restore the original policy.
    await inst.writePolicy('acme.yaml', policy(upstream.origin));
    await broker.reload();
    socket.destroy();
  });

  it('refuses calls while the audit log cannot be written, sends nothing upstream, and recovers', async () => {
    const { execFileSync } = await import('node:child_process');
    const { client, socket } = await connectSocketClient(socketPath);
    const before = upstream.requests.length;
    execFileSync('chattr', ['+i', inst.auditFile]);
    try {
      const refused = (await client.callTool({
        name: 'http_request',
        arguments: { method: 'GET', url: `${upstream.origin}/v1/while-immutable` },
      })) as CallToolResult;
      expect(refused.isError).toBe(true);
      expect(text(refused)).toMatch(/^refused: the audit log is unavailable, so nothing was done/);
      expect(upstream.requests.length).toBe(before);
    } finally {
      execFileSync('chattr', ['-i', inst.auditFile]);
    }
    const ok = (await client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${upstream.origin}/v1/after` },
    })) as CallToolResult;
    expect(ok.isError).toBeFalsy();
    expect(upstream.requests.length).toBe(before + 1);
    expect((await verifyAuditFile(inst.auditFile)).ok).toBe(true);
    socket.destroy();
  });

  it('serves many sessions at once, each call audited as a request/result pair', async () => {
    const lines = async () => (await readFile(inst.auditFile, 'utf8')).trim().split('\n').length;
    const before = await lines();
    const sessions = await Promise.all(Array.from({ length: 40 }, () => connectSocketClient(socketPath)));
    const results = await Promise.all(
      sessions.flatMap(({ client }, i) =>
        Array.from({ length: 5 }, (_, j) =>
          client.callTool({
            name: 'http_request',
            arguments: { method: 'GET', url: `${upstream.origin}/v1/s${i}/c${j}` },
          }),
        ),
      ),
    );
    expect((results as CallToolResult[]).filter((r) => r.isError)).toEqual([]);
    expect((await lines()) - before).toBe(400);
    expect((await verifyAuditFile(inst.auditFile)).ok).toBe(true);
    for (const { socket } of sessions) socket.destroy();
  });

  it('writes a hash chain that verifies, and fails after a one-byte change', async () => {
    const ok = await verifyAuditFile(inst.auditFile);
    expect(ok.ok).toBe(true);
    expect(ok.count).toBeGreaterThan(5);
    const original = await readFile(inst.auditFile);
    const tampered = Buffer.from(original);
    const at = tampered.indexOf('"decision":"deny"');
    tampered[at + 13] = 'x'.charCodeAt(0); // deny → dxny
    const copy = `${inst.root}/tampered.jsonl`;
    await writeFile(copy, tampered);
    const bad = await verifyAuditFile(copy);
    expect(bad.ok).toBe(false);
  });
});
