// A real `airlock serve` process on a throwaway installation, an MCP client on its sockets, and
// the airlock CLI run as a separate process (as an operator on the host would run it).
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { readAuditRecords, type AuditRecord } from '../../src/audit/log.js';
import { CLI, type Installation } from '../helpers/fixture.js';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], opts: { input?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}

export interface ServeProcess {
  child: ChildProcess;
  log(): string;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<void>;
  /** SIGKILL (a crash) and wait for the exit. */
  kill(): Promise<void>;
}

/** Starts `airlock serve` and waits until every socket in `sockets` exists. */
export async function startServe(inst: Installation, sockets: string[]): Promise<ServeProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', '--config', inst.configFile], {
    env: { ...process.env, AIRLOCK_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
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
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`airlock serve did not open its sockets:\n${log}`);
    }
    await sleep(50);
  }
  const end = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
  };
  return { child, log: () => log, stop: () => end('SIGTERM'), kill: () => end('SIGKILL') };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` until it returns a value (bounded: throws after `timeoutMs`). */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

export interface ListedApproval {
  id: string;
  team: string;
  server: string;
  tool: string;
  args: Record<string, unknown>;
  digest: string;
  requestedAt: string;
  expiresAt: string;
}

/** `airlock approvals list --json`, as a process. */
export async function listPending(inst: Installation, team?: string): Promise<ListedApproval[]> {
  const r = await runCli([
    'approvals',
    'list',
    '--json',
    '--config',
    inst.configFile,
    ...(team ? ['--team', team] : []),
  ]);
  if (r.code !== 0) throw new Error(`approvals list failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as ListedApproval[];
}

/** Waits until a pending approval for `tool` not in `seen` shows up in the CLI listing. */
export function waitForPending(
  inst: Installation,
  tool: string,
  seen: string[] = [],
): Promise<ListedApproval> {
  return waitFor(`a pending approval for ${tool}`, async () =>
    (await listPending(inst)).find((a) => a.tool === tool && !seen.includes(a.id)),
  );
}

export async function auditRecords(inst: Installation): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for await (const r of readAuditRecords(inst.auditFile)) out.push(r);
  return out;
}

export interface ProgressSeen {
  count: number;
  messages: string[];
}

/** tools/call with a progress token; the SDK keeps the request alive while progress arrives. */
export function callWithProgress(
  client: Client,
  name: string,
  args: Record<string, unknown>,
): { result: Promise<CallToolResult>; progress: ProgressSeen } {
  const progress: ProgressSeen = { count: 0, messages: [] };
  const result = client.callTool({ name, arguments: args }, undefined, {
    onprogress: (p) => {
      progress.count++;
      if (p.message) progress.messages.push(p.message);
    },
    resetTimeoutOnProgress: true,
    timeout: 30_000,
  }) as Promise<CallToolResult>;
  return { result, progress };
}

export const textOf = (r: CallToolResult) => (r.content[0] as { text: string }).text;

/** Waits for the `approval` record of approval `id` in `state`. */
export function waitForApprovalRecord(inst: Installation, id: string, state: string): Promise<AuditRecord> {
  return waitFor(`the ${state} record of approval ${id}`, async () =>
    (await auditRecords(inst)).find((x) => {
      const a = x.approval as { id?: string; state?: string } | undefined;
      return x.phase === 'approval' && a?.id === id && a.state === state;
    }),
  );
}
