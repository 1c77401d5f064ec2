// The agent side of the demo and of the boundary tests. It runs inside the sandbox (see
// sandbox.ts), reads a plan as JSON on stdin, and prints one JSON report on stdout:
//  - who it runs as and in which network namespace;
//  - whether it can reach the outside: TCP to given host:port pairs, DNS lookups, and (as a
//    control) a listener on its own loopback;
//  - the MCP tool calls it made through Airlock's sockets, via airlock-bridge as a real agent
//    would (the .mcp.json of a sandboxed agent runs the bridge), and what came back;
//  - its whole environment and HOME, so the host can check that no secret ever got here.
// It is deliberately naive: it reports what it saw and judges nothing — the host does that.
import { promises as fs, readFileSync, readlinkSync } from 'node:fs';
import dns from 'node:dns';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';

/** The dependency-free bridge shipped next to us in dist/src. */
export const BRIDGE_PATH = path.resolve(import.meta.dirname, '../bridge.cjs');

export type AgentStep =
  | { kind: 'tools'; label: string; socket: string }
  | { kind: 'call'; label: string; socket: string; tool: string; arguments: Record<string, unknown> }
  /** A plain HTTP/1.1 request over a Unix socket (the model API proxy speaks HTTP, not MCP). */
  | {
      kind: 'http';
      label: string;
      socket: string;
      method: string;
      path: string;
      headers?: Record<string, string>;
      body?: string;
    }
  /** Replaces a file's content (write + rename, as editors do). */
  | { kind: 'write'; label: string; file: string; content: string };

export interface AgentPlan {
  tcpProbes?: Array<{ host: string; port: number }>;
  dnsProbes?: string[];
  /** DNS server (ip:port) for the direct queries instead of the system's (getaddrinfo still uses the system's). */
  dnsServer?: string;
  /** Files the agent tries to read (it should not be able to read the broker's). */
  readProbes?: string[];
  steps?: AgentStep[];
}

export interface ProbeResult {
  ok: boolean;
  /** errno-style code (ECONNREFUSED, ENETUNREACH, EAI_AGAIN, ECONNREFUSED…) when it failed. */
  error?: string;
  detail?: string;
}

export interface StepReport {
  label: string;
  kind: AgentStep['kind'];
  /** The step ran (a tool result came back, the file was written) — a denial still counts. */
  ok: boolean;
  isError?: boolean;
  /** HTTP status of an `http` step. */
  status?: number;
  text?: string;
  structured?: unknown;
  tools?: string[];
  error?: string;
}

export interface AgentReport {
  uid: number;
  gid: number;
  groups: number[];
  /** e.g. "net:[4026532177]" */
  netns: string;
  /** From /proc/self/status: CapEff, CapBnd, NoNewPrivs. */
  status: Record<string, string>;
  env: Record<string, string>;
  home: { path: string; files: Record<string, string> };
  ownLoopback: ProbeResult;
  tcp: Array<{ host: string; port: number } & ProbeResult>;
  dns: Array<{ name: string; method: 'lookup' | 'resolve4' } & ProbeResult>;
  reads: Array<{ path: string } & ProbeResult>;
  steps: StepReport[];
}

const PROBE_TIMEOUT_MS = 3000;

function errorCode(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e?.code ?? (err instanceof Error ? err.message : String(err));
}

function tcpProbe(host: string, port: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (r: ProbeResult) => {
      socket.destroy();
      resolve(r);
    };
    socket.setTimeout(PROBE_TIMEOUT_MS, () => done({ ok: false, error: 'ETIMEDOUT' }));
    socket.once('connect', () => done({ ok: true }));
    socket.once('error', (err) => done({ ok: false, error: errorCode(err) }));
  });
}

/** A listener on this namespace's own loopback, and a connection to it: loopback itself works. */
async function ownLoopbackProbe(): Promise<ProbeResult> {
  const server = net.createServer((c) => c.end());
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    return await tcpProbe('127.0.0.1', (server.address() as net.AddressInfo).port);
  } catch (err) {
    return { ok: false, error: errorCode(err) };
  } finally {
    server.close();
  }
}

async function dnsProbes(name: string, server: string | undefined): Promise<AgentReport['dns']> {
  const out: AgentReport['dns'] = [];
  try {
    const r = await dns.promises.lookup(name);
    out.push({ name, method: 'lookup', ok: true, detail: r.address });
  } catch (err) {
    out.push({ name, method: 'lookup', ok: false, error: errorCode(err) });
  }
  const resolver = new dns.promises.Resolver({ timeout: PROBE_TIMEOUT_MS, tries: 1 });
  if (server) resolver.setServers([server]);
  try {
    const r = await resolver.resolve4(name);
    out.push({ name, method: 'resolve4', ok: true, detail: r.join(',') });
  } catch (err) {
    out.push({ name, method: 'resolve4', ok: false, error: errorCode(err) });
  }
  return out;
}

function procStatus(): Record<string, string> {
  const wanted = new Set(['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs']);
  const status: Record<string, string> = {};
  for (const line of readFileSync('/proc/self/status', 'utf8').split('\n')) {
    const [key, value] = line.split(':\t');
    if (key && value !== undefined && wanted.has(key)) status[key] = value.trim();
  }
  return status;
}

async function readProbe(file: string): Promise<ProbeResult> {
  try {
    const content = await fs.readFile(file);
    return { ok: true, detail: `${content.length} bytes` };
  } catch (err) {
    return { ok: false, error: errorCode(err) };
  }
}

/** Every file under HOME with (the start of) its content. */
async function readHome(home: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  const entries = await fs.readdir(home, { recursive: true, withFileTypes: true }).catch(() => []);
  for (const e of entries.slice(0, 200)) {
    if (!e.isFile()) continue;
    const full = path.join(e.parentPath, e.name);
    files[path.relative(home, full)] = (
      await fs.readFile(full, 'utf8').catch((err) => `<${errorCode(err)}>`)
    ).slice(0, 64 * 1024);
  }
  return files;
}

function httpOverSocket(
  step: Extract<AgentStep, { kind: 'http' }>,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath: step.socket,
        method: step.method,
        path: step.path,
        headers: step.headers,
        timeout: 30_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks)
              .toString('utf8')
              .slice(0, 64 * 1024),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end(step.body);
  });
}

class Sessions {
  private clients = new Map<string, Client>();

  async client(socket: string): Promise<Client> {
    let client = this.clients.get(socket);
    if (!client) {
      client = new Client({ name: 'airlock-demo-agent', version: '0.0.0' });
      await client.connect(
        new StdioClientTransport({
          command: process.execPath,
          args: [BRIDGE_PATH, socket],
          stderr: 'inherit',
        }),
      );
      this.clients.set(socket, client);
    }
    return client;
  }

  async closeAll(): Promise<void> {
    await Promise.allSettled([...this.clients.values()].map((c) => c.close()));
  }
}

async function runStep(step: AgentStep, sessions: Sessions): Promise<StepReport> {
  const base = { label: step.label, kind: step.kind };
  try {
    switch (step.kind) {
      case 'tools': {
        const list = await (await sessions.client(step.socket)).listTools();
        return { ...base, ok: true, tools: list.tools.map((t) => t.name) };
      }
      case 'call': {
        const client = await sessions.client(step.socket);
        const result = (await client.callTool({
          name: step.tool,
          arguments: step.arguments,
        })) as CallToolResult;
        const text = result.content.map((c) => (c.type === 'text' ? c.text : `[${c.type}]`)).join('\n');
        return {
          ...base,
          ok: true,
          isError: result.isError === true,
          text,
          structured: result.structuredContent,
        };
      }
      case 'http': {
        const { status, body } = await httpOverSocket(step);
        return { ...base, ok: true, isError: status >= 400, status, text: body };
      }
      case 'write': {
        const tmp = `${step.file}.${process.pid}.tmp`;
        await fs.writeFile(tmp, step.content);
        await fs.rename(tmp, step.file);
        return { ...base, ok: true };
      }
    }
  } catch (err) {
    return { ...base, ok: false, error: err instanceof Error ? err.message : String(err) };
  }
}

export async function runAgent(plan: AgentPlan): Promise<AgentReport> {
  const home = process.env.HOME ?? '';
  const report: AgentReport = {
    uid: process.getuid?.() ?? -1,
    gid: process.getgid?.() ?? -1,
    groups: process.getgroups?.() ?? [],
    netns: readlinkSync('/proc/self/ns/net'),
    status: procStatus(),
    env: { ...(process.env as Record<string, string>) },
    home: { path: home, files: {} },
    ownLoopback: await ownLoopbackProbe(),
    tcp: [],
    dns: [],
    reads: [],
    steps: [],
  };
  for (const t of plan.tcpProbes ?? []) report.tcp.push({ ...t, ...(await tcpProbe(t.host, t.port)) });
  for (const name of plan.dnsProbes ?? []) report.dns.push(...(await dnsProbes(name, plan.dnsServer)));
  for (const file of plan.readProbes ?? []) report.reads.push({ path: file, ...(await readProbe(file)) });
  const sessions = new Sessions();
  // Stopped from outside (the demo's Ctrl-C): end the bridges we started, then go.
  process.once('SIGTERM', () => void sessions.closeAll().finally(() => process.exit(143)));
  try {
    for (const step of plan.steps ?? []) report.steps.push(await runStep(step, sessions));
  } finally {
    await sessions.closeAll();
  }
  // Last, so anything the session left behind in HOME is in the report too.
  report.home.files = await readHome(home);
  return report;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function main(): Promise<void> {
  const plan = JSON.parse((await readStdin()) || '{}') as AgentPlan;
  const report = await runAgent(plan);
  process.stdout.write(JSON.stringify(report) + '\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`agent: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(2);
    },
  );
}
