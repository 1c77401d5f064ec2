// The agent boundary for real: `airlock serve` as a child process, and an agent process in its
// own network namespace as uid 1000 whose only way out is the Unix socket. Each property has a
// control run that shows the probe can succeed when the guard is absent.
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { appendFile, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { readlinkSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentPlan, AgentReport } from '../../src/demo/agent.js';
import {
  AGENT_GID,
  AGENT_UID,
  canCreateSandbox,
  makeAgentHome,
  makeTraversable,
  runAsAgent,
  stageDemoAgent,
  type AgentIdentity,
} from '../../src/demo/sandbox.js';
import { Redactor } from '../../src/secrets/redact.js';
import {
  CLI,
  makeInstallation,
  REPO_ROOT,
  startEchoUpstream,
  type Installation,
} from '../helpers/fixture.js';

// The agent's code, staged where uid 1000 can read it (the repository may sit in a 0700 folder).
let agentCode: Awaited<ReturnType<typeof stageDemoAgent>>;
const SECRET = 'sk_live_boundarySecret_7f3a9c0e1d2b4a6f';
/** Set in this (host) process's environment: the agent must not inherit it. */
const HOST_ENV_VAR = 'AIRLOCK_TEST_UPSTREAM_TOKEN';

const policy = (origin: string) => `team: acme
servers:
  http:
    hosts:
      - origin: ${origin}
        methods: [GET]
        paths: ["/v1/**"]
        inject: { header: Authorization, value: "Bearer \${secret:api-token}" }
        allowPrivateAddress: true
    tools:
      http_request: {}
`;

/** A loopback DNS server that answers every A query with 127.0.0.1 (a control for the DNS probe). */
async function startDnsServer(): Promise<{ address: string; queries: number; close(): void }> {
  const server = dgram.createSocket('udp4');
  const state = { address: '', queries: 0, close: () => server.close() };
  server.on('message', (query, peer) => {
    state.queries++;
    let end = 12; // the question's name: length-prefixed labels up to a zero byte
    while (end < query.length && query[end] !== 0) end += query[end]! + 1;
    const question = query.subarray(12, end + 5);
    const header = Buffer.from([0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    query.copy(header, 0, 0, 2); // same id
    const answer = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    server.send(Buffer.concat([header, question, answer]), peer.port, peer.address);
  });
  await new Promise<void>((r) => server.bind(0, '127.0.0.1', r));
  state.address = `127.0.0.1:${server.address().port}`;
  return state;
}

async function waitForSocket(file: string, serve: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (
      await stat(file).then(
        () => true,
        () => false,
      )
    )
      return;
    if (serve.exitCode !== null) throw new Error(`airlock serve exited ${serve.exitCode}: ${stderr()}`);
    if (Date.now() > deadline) throw new Error(`no socket at ${file}: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('the agent boundary (network namespace, uid 1000, socket only)', () => {
  let inst: Installation;
  let upstream: Awaited<ReturnType<typeof startEchoUpstream>>;
  let serve: ChildProcess;
  let serveStderr = '';
  let home: string;
  let socket: string;
  const redactor = new Redactor();
  redactor.add(SECRET);

  async function agent(
    plan: AgentPlan,
    opts: { sandbox?: boolean; identity?: Partial<AgentIdentity> } = {},
  ): Promise<{ report: AgentReport; raw: string }> {
    const r = await runAsAgent({
      command: process.execPath,
      args: [agentCode.script],
      home,
      sandbox: opts.sandbox ?? true,
      identity: opts.identity ?? { groups: [AGENT_GID] },
      input: JSON.stringify(plan),
      timeoutMs: 30_000,
    });
    expect(r.code, r.stderr).toBe(0);
    return { report: JSON.parse(r.stdout) as AgentReport, raw: r.stdout + r.stderr };
  }

  beforeAll(async () => {
    // Never skipped: on a machine without the boundary this fails, with the reason.
    agentCode = await stageDemoAgent(REPO_ROOT, await mkdtemp(path.join(tmpdir(), 'airlock-agent-code-')));
    const check = await canCreateSandbox({
      readable: [agentCode.script, agentCode.sdkPackage],
      identity: { groups: [AGENT_GID] },
    });
    if (!check.ok) throw new Error(`cannot create the agent sandbox here: ${check.reason}`);

    process.env[HOST_ENV_VAR] = SECRET;
    upstream = await startEchoUpstream();
    inst = await makeInstallation({
      secrets: { 'api-token': SECRET },
      policies: { 'acme.yaml': policy(upstream.origin) },
    });
    await appendFile(inst.configFile, `socketGroup: ${AGENT_GID}\n`);
    serve = spawn(process.execPath, [CLI, 'serve', '--config', inst.configFile], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    serve.stderr!.setEncoding('utf8').on('data', (d: string) => (serveStderr += d));
    socket = inst.socket('acme', 'http');
    await waitForSocket(socket, serve, () => serveStderr);
    await makeTraversable(inst.root);
    home = await makeAgentHome(inst.root);
  });

  afterAll(async () => {
    delete process.env[HOST_ENV_VAR];
    if (serve && serve.exitCode === null) {
      const exited = new Promise((r) => serve.once('exit', r));
      serve.kill('SIGTERM');
      await exited;
    }
    await upstream?.close();
    await inst?.cleanup();
    if (agentCode) await rm(agentCode.root, { recursive: true, force: true });
  });

  it('runs as uid 1000 with only the socket group, no capabilities, no_new_privs, in another network namespace', async () => {
    const { report } = await agent({});
    expect(report.uid).toBe(AGENT_UID);
    expect(report.gid).toBe(AGENT_GID);
    expect(report.groups).toEqual([AGENT_GID]);
    expect(report.status).toMatchObject({
      CapEff: '0000000000000000',
      CapBnd: '0000000000000000',
      NoNewPrivs: '1',
    });
    expect(report.netns).toMatch(/^net:\[\d+\]$/);
    expect(report.netns).not.toBe(readlinkSync('/proc/self/ns/net'));
  });

  it('cannot open TCP to the host loopback upstream (control: the same probe connects outside the sandbox)', async () => {
    const target = { host: '127.0.0.1', port: upstream.port };
    const inside = (await agent({ tcpProbes: [target] })).report;
    expect(inside.tcp[0]!.ok).toBe(false);
    expect(['ECONNREFUSED', 'ENETUNREACH']).toContain(inside.tcp[0]!.error);
    // Its own loopback is up and works: it is a different loopback, not a broken one.
    expect(inside.ownLoopback).toEqual({ ok: true });

    const outside = (await agent({ tcpProbes: [target] }, { sandbox: false })).report;
    expect(outside.tcp[0]).toMatchObject({ ok: true });
    expect(outside.netns).toBe(readlinkSync('/proc/self/ns/net'));
  });

  it('cannot resolve names (getaddrinfo and a direct DNS query both fail)', async () => {
    const { report } = await agent({ dnsProbes: ['example.com'] });
    expect(report.dns.map((d) => d.method)).toEqual(['lookup', 'resolve4']);
    for (const d of report.dns) expect(d, JSON.stringify(d)).toMatchObject({ ok: false });
  });

  it('cannot reach a DNS server on the host loopback over UDP (control: outside the sandbox it answers)', async () => {
    const dns = await startDnsServer();
    try {
      const plan = { dnsProbes: ['api.example.test'], dnsServer: dns.address };
      const inside = (await agent(plan)).report.dns.find((d) => d.method === 'resolve4')!;
      expect(inside, JSON.stringify(inside)).toMatchObject({ ok: false });
      expect(dns.queries).toBe(0);
      const outside = (await agent(plan, { sandbox: false })).report.dns.find(
        (d) => d.method === 'resolve4',
      )!;
      expect(outside).toMatchObject({ ok: true, detail: '127.0.0.1' });
      expect(dns.queries).toBe(1);
    } finally {
      dns.close();
    }
  });

  it('reaches the broker only through the socket: http_request works and the upstream gets the injected secret', async () => {
    const before = upstream.requests.length;
    const { report, raw } = await agent({
      steps: [
        { kind: 'tools', label: 'list', socket },
        {
          kind: 'call',
          label: 'get',
          socket,
          tool: 'http_request',
          arguments: { method: 'GET', url: `${upstream.origin}/v1/ping` },
        },
      ],
    });
    expect(report.steps[0]).toMatchObject({ ok: true, tools: ['http_request'] });
    const call = report.steps[1]!;
    expect(call, JSON.stringify(call)).toMatchObject({ ok: true, isError: false });
    expect((call.structured as { status: number }).status).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    expect(upstream.requests.at(-1)!.headers.authorization).toBe(`Bearer ${SECRET}`);
    // The echo upstream sent its headers back; the agent still never saw the secret in any form.
    expect(call.text).toContain('authorization');
    expect(redactor.contains(raw)).toBe(false);
  });

  it('needs the socket group: without it the socket is refused (control: with it, it connects)', async () => {
    const step = { kind: 'tools' as const, label: 'list', socket };
    const otherGid = AGENT_GID + 1;
    const without = (await agent({ steps: [step] }, { identity: { gid: otherGid, groups: [] } })).report;
    expect(without.gid).toBe(otherGid);
    expect(without.groups).not.toContain(AGENT_GID); // (node lists the primary gid among the groups)
    expect(without.steps[0]!.ok).toBe(false);
    const withGroup = (await agent({ steps: [step] }, { identity: { gid: otherGid, groups: [AGENT_GID] } }))
      .report;
    expect(withGroup.steps[0]).toMatchObject({ ok: true, tools: ['http_request'] });
  });

  it('has no secret in its environment or HOME, and cannot read the broker secret files', async () => {
    // The host process holds the secret in its environment; the agent must not inherit it.
    expect(process.env[HOST_ENV_VAR]).toBe(SECRET);
    const secretFile = path.join(inst.root, 'secrets', 'api-token');
    expect(await readFile(secretFile, 'utf8')).toContain(SECRET); // readable by us, the host
    const { report, raw } = await agent({ readProbes: [secretFile] });
    expect(Object.keys(report.env).sort()).toEqual(['HOME', 'LANG', 'PATH', 'PWD']);
    expect(report.env.HOME).toBe(home);
    expect(report.home.path).toBe(home);
    expect(report.reads[0]).toMatchObject({ ok: false, error: 'EACCES' });
    expect(redactor.contains(JSON.stringify(report.env))).toBe(false);
    expect(redactor.contains(JSON.stringify(report.home))).toBe(false);
    expect(redactor.contains(raw)).toBe(false);
  });
});
