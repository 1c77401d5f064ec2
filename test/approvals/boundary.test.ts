// What must never approve a call: time passing, the broker restarting, or the agent itself
// (through its MCP session, or by reaching for the control socket from inside the sandbox).
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyAuditFile } from '../../src/audit/log.js';
import {
  AGENT_GID,
  AGENT_UID,
  canCreateSandbox,
  makeTraversable,
  runAsAgent,
} from '../../src/demo/sandbox.js';
import {
  acmeHttpPolicy,
  connectSocketClient,
  makeInstallation,
  rawExchange,
  INIT_LINE,
  startEchoUpstream,
  type EchoUpstream,
  type Installation,
} from '../helpers/fixture.js';
import {
  auditRecords,
  callWithProgress,
  listPending,
  runCli,
  startServe,
  textOf,
  waitFor,
  waitForApprovalRecord,
  waitForPending,
  type ServeProcess,
} from './helpers.js';

const SECRET = 'sk_live_approvalBoundarySecret0123456789';

let inst: Installation;
let upstream: EchoUpstream;
let serve: ServeProcess;
let client: Client;
const socket = () => inst.socket('acme', 'http');

const postedUpstream = () => upstream.requests.filter((r) => r.method === 'POST').length;

beforeAll(async () => {
  upstream = await startEchoUpstream();
  inst = await makeInstallation({ secrets: { 'api-token': SECRET } });
  // POSTs wait for approval, GETs do not. Team "quick" gives up after 2 seconds, so expiry is
  // quick to see; acme waits a minute (decisions in the other tests come well before that).
  const withApproval = (timeout: string) =>
    acmeHttpPolicy(upstream.origin).replace(
      '      http_request: {}',
      `      http_request:\n        approve: { when: { methods: [POST] }, timeout: ${timeout} }`,
    );
  await inst.writePolicy('acme.yaml', withApproval('1m'));
  await inst.writePolicy('quick.yaml', withApproval('2s').replace('team: acme', 'team: quick'));
  serve = await startServe(inst, [socket(), inst.socket('quick', 'http')]);
  ({ client } = await connectSocketClient(socket()));
}, 30_000);

afterAll(async () => {
  await client?.close().catch(() => undefined);
  await serve?.stop();
  await upstream?.close();
  await inst?.cleanup();
});

describe('approvals that are never given', () => {
  it('a GET (outside `when`) runs at once; a POST nobody decides expires and is never sent', async () => {
    const { client: quick } = await connectSocketClient(inst.socket('quick', 'http'));
    const get = await quick.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${upstream.origin}/v1/a` },
    });
    expect(get.isError).toBeFalsy();
    const { result, progress } = callWithProgress(quick, 'http_request', {
      method: 'POST',
      url: `${upstream.origin}/v1/refunds`,
      body: '{"amount":100}',
    });
    const r = await result;
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(
      /^denied: http\.tools\.http_request\.approve: approval [0-9a-f]{12} expired: no decision within 2s$/,
    );
    expect(progress.count).toBeGreaterThan(0);
    expect(postedUpstream()).toBe(0);
    const records = await auditRecords(inst);
    const approvals = records.filter((x) => x.phase === 'approval');
    expect(approvals.map((x) => (x.approval as { state: string }).state)).toEqual(['pending', 'expired']);
    expect(approvals[1]).toMatchObject({ decision: 'deny' });
    expect(records.at(-1)).toMatchObject({
      phase: 'result',
      outcome: 'denied',
      rule: 'http.tools.http_request.approve',
    });
    await quick.close();
  });

  it('the agent cannot approve through its own MCP session', async () => {
    const { result } = callWithProgress(client, 'http_request', {
      method: 'POST',
      url: `${upstream.origin}/v1/refunds`,
      body: '{"amount":200}',
    });
    const pending = await waitForPending(inst, 'http_request');
    // A tool or method that would approve does not exist on the agent's socket.
    const asTool = await client.callTool({ name: 'approve', arguments: { id: pending.id } });
    expect(asTool.isError).toBe(true);
    expect(textOf(asTool as never)).toMatch(/^denied: http\.tools: tool "approve" is not enabled/);
    const raw = await rawExchange(
      socket(),
      INIT_LINE +
        JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) +
        '\n' +
        JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'approvals/approve', params: { id: pending.id } }) +
        '\n' +
        JSON.stringify({
          jsonrpc: '2.0',
          id: 3,
          method: 'tools/call',
          params: {
            name: 'http_request',
            arguments: { approve: pending.id, method: 'GET', url: `${upstream.origin}/v1/x` },
          },
        }) +
        '\n',
      { expectLines: 3, waitMs: 5000 },
    );
    const byId = new Map(
      (raw.lines as { id: number; error?: { code: number }; result?: { isError?: boolean } }[]).map((l) => [
        l.id,
        l,
      ]),
    );
    expect(byId.get(2)?.error?.code).toBe(-32601); // method not found
    expect(byId.get(3)?.result?.isError).toBe(true); // "approve" is not an argument of http_request
    expect((await listPending(inst)).map((a) => a.id)).toEqual([pending.id]);
    expect(postedUpstream()).toBe(0);
    expect((await runCli(['deny', pending.id, '--config', inst.configFile])).code).toBe(0);
    expect(textOf(await result)).toContain(`approval ${pending.id} was denied by root`);
  });

  it('the control socket is not among the agent sockets, and the agent uid cannot connect to it', async () => {
    const sandbox = await canCreateSandbox();
    expect(sandbox.ok, sandbox.reason).toBe(true);
    const controlDir = path.join(inst.stateDir, 'approvals', 'control');
    const [name] = (await fs.readdir(controlDir)).filter((n) => n.endsWith('.sock'));
    const controlSocket = path.join(controlDir, name!);
    expect((await fs.stat(controlSocket)).mode & 0o777).toBe(0o600);
    expect((await fs.stat(path.join(inst.stateDir, 'approvals'))).mode & 0o777).toBe(0o700);
    const agentVisible: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const e of await fs.readdir(dir, { withFileTypes: true })) {
        if (e.isDirectory()) await walk(path.join(dir, e.name));
        else agentVisible.push(path.relative(inst.socketDir, path.join(dir, e.name)));
      }
    };
    await walk(inst.socketDir);
    expect(agentVisible.sort()).toEqual(['acme/http.sock', 'quick/http.sock']);

    // The agent's uid tries the socket directly, and through the folders opened up to it, so
    // that the socket's own mode is the last thing standing. Both must fail with EACCES.
    await makeTraversable(inst.root);
    await fs.chmod(inst.stateDir, 0o755);
    const probe = `
      const net = require('node:net');
      const fs = require('node:fs');
      const out = {};
      try { fs.readdirSync(process.argv[2]); out.list = 'listed'; } catch (e) { out.list = e.code; }
      const s = net.connect(process.argv[1]);
      s.on('connect', () => { out.connect = 'connected'; console.log(JSON.stringify(out)); s.destroy(); });
      s.on('error', (e) => { out.connect = e.code; console.log(JSON.stringify(out)); });
    `;
    const home = await fs.mkdtemp(path.join(inst.root, 'agent-'));
    await fs.chown(home, AGENT_UID, AGENT_GID);
    await fs.chmod(home, 0o700);
    const probeAsAgent = async () => {
      const run = await runAsAgent({
        command: process.execPath,
        args: ['-e', probe, controlSocket, controlDir],
        home,
        sandbox: true,
        timeoutMs: 15_000,
      });
      expect(run.code, run.stderr).toBe(0);
      return JSON.parse(run.stdout.trim()) as unknown;
    };
    const closed = await probeAsAgent();
    expect(closed).toEqual({ list: 'EACCES', connect: 'EACCES' });

    const approvalsDir = path.join(inst.stateDir, 'approvals');
    await fs.chmod(approvalsDir, 0o755);
    await fs.chmod(controlDir, 0o755);
    try {
      expect(await probeAsAgent()).toEqual({ list: 'listed', connect: 'EACCES' });
    } finally {
      await fs.chmod(approvalsDir, 0o700);
      await fs.chmod(controlDir, 0o700);
    }
  });

  it('a client that cannot prove its uid gets nothing from the control socket', async () => {
    const controlDir = path.join(inst.stateDir, 'approvals', 'control');
    const [name] = (await fs.readdir(controlDir)).filter((n) => n.endsWith('.sock'));
    const conn = net.connect(path.join(controlDir, name!));
    const lines: Record<string, unknown>[] = [];
    let buf = '';
    conn.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
      }
    });
    await waitFor('the challenge', () => (lines.length ? true : undefined));
    conn.write(JSON.stringify({ op: 'list' }) + '\n');
    conn.write(JSON.stringify({ op: 'hello', via: 'cli' }) + '\n'); // no proof file written
    await waitFor('two answers', () => (lines.length >= 3 ? true : undefined));
    conn.destroy();
    expect(lines[1]).toEqual({ ok: false, error: 'say hello (with the proof file) first' });
    expect(lines[2]).toEqual({ ok: false, error: 'no proof file for this challenge' });
  });
});

describe('a caller that goes away while its call waits', () => {
  it('ends the wait as expired and nothing runs', async () => {
    const { client: leaving } = await connectSocketClient(socket());
    const { result } = callWithProgress(leaving, 'http_request', {
      method: 'POST',
      url: `${upstream.origin}/v1/refunds`,
      body: '{"amount":150}',
    });
    result.catch(() => undefined); // the connection closes under it
    const pending = await waitForPending(inst, 'http_request');
    await leaving.close();
    const expired = await waitForApprovalRecord(inst, pending.id, 'expired');
    expect(expired).toMatchObject({ decision: 'deny', reason: 'the caller went away before a decision' });
    expect(await listPending(inst)).toEqual([]);
    expect(postedUpstream()).toBe(0);
  });
});

describe('a policy change while a call waits', () => {
  it('the approved call does not run under a policy other than the one it was held under', async () => {
    const { result } = callWithProgress(client, 'http_request', {
      method: 'POST',
      url: `${upstream.origin}/v1/refunds`,
      body: '{"amount":250}',
    });
    const pending = await waitForPending(inst, 'http_request');
    const file = path.join(inst.policiesDir, 'acme.yaml');
    await fs.writeFile(
      file,
      (await fs.readFile(file, 'utf8')).replace('paths: ["/v1/**"]', 'paths: ["/v1/**", "/v2/**"]'),
    );
    // The reload is visible once /v2 is allowed.
    await waitFor('the policy reload', async () => {
      const r = await client.callTool({
        name: 'http_request',
        arguments: { method: 'GET', url: `${upstream.origin}/v2/ping` },
      });
      return r.isError ? undefined : true;
    });
    expect((await runCli(['approve', pending.id, '--config', inst.configFile])).code).toBe(0);
    const r = await result;
    expect(textOf(r)).toBe(
      "denied: http.tools.http_request.approve: the team's policy changed while the call waited for approval; nothing was done (call again)",
    );
    expect(postedUpstream()).toBe(0);
  });
});

describe('a broker restart while a call waits', () => {
  it('ends the call as expired, never approved, and the id cannot be approved afterwards', async () => {
    const { result } = callWithProgress(client, 'http_request', {
      method: 'POST',
      url: `${upstream.origin}/v1/refunds`,
      body: '{"amount":300}',
    });
    const outcome = result.then(
      (r) => ({ answered: textOf(r) }),
      (err: Error) => ({ failed: err.message }),
    );
    const pending = await waitForPending(inst, 'http_request');
    await serve.kill(); // a crash: nothing is cleaned up
    expect(await outcome).toHaveProperty('failed');
    await client.close().catch(() => undefined);

    serve = await startServe(inst, [socket()]);
    const expired = await waitForApprovalRecord(inst, pending.id, 'expired');
    expect(expired).toMatchObject({
      decision: 'deny',
      reason: 'the broker restarted while the call waited; it was not run',
    });
    expect(await listPending(inst)).toEqual([]);
    const late = await runCli(['approve', pending.id, '--config', inst.configFile]);
    expect(late.code).toBe(1);
    expect(late.stderr).toContain(`no pending approval "${pending.id}"`);
    expect(postedUpstream()).toBe(0);
    expect(await fs.readdir(path.join(inst.stateDir, 'approvals', 'pending'))).toEqual([]);
    expect(await verifyAuditFile(inst.auditFile)).toMatchObject({ ok: true });
    ({ client } = await connectSocketClient(socket()));
  });

  it('SIGTERM while a call waits: the call is answered as expired', async () => {
    const { result } = callWithProgress(client, 'http_request', {
      method: 'POST',
      url: `${upstream.origin}/v1/refunds`,
      body: '{"amount":400}',
    });
    await waitForPending(inst, 'http_request');
    const stopping = serve.stop();
    const r = await result;
    expect(textOf(r)).toMatch(
      /^denied: http\.tools\.http_request\.approve: approval [0-9a-f]+ expired: the broker is shutting down$/,
    );
    await stopping;
    expect(postedUpstream()).toBe(0);
    serve = await startServe(inst, [socket(), inst.socket('quick', 'http')]);
    ({ client } = await connectSocketClient(socket()));
  });
});
