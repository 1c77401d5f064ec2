// Runs the model proxy as `airlock serve` would: on a real Unix socket, with the real audit log,
// secret store and redactor, in a throwaway folder; plus an HTTP client over that socket.
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { AuditLog, readAuditRecords, verifyAuditFile, type AuditRecord } from '../../src/audit/log.js';
import { silentLogger } from '../../src/log.js';
import type { FleetTokenBudget } from '../../src/limits/fleet.js';
import { createModelProxy, type ModelProxyLimits, type ModelSection } from '../../src/model/proxy.js';
import { modelSectionSchema } from '../../src/policy/team-policy.js';
import { Redactor } from '../../src/secrets/redact.js';
import { SecretStore } from '../../src/secrets/store.js';

export const TEAM = 'payments';
export const API_KEY = 'sk-ant-api03-' + 'Zq9xK2mVb7LpR4tYw8NcE1uHs6DfG3jA5oIkT0' + '-AAAA';

export interface ProxyHarness {
  dir: string;
  socketPath: string;
  stateDir: string;
  auditFile: string;
  redactor: Redactor;
  audit: AuditLog;
  server: http.Server;
  /** Replaces the section the proxy reads (as a policy reload would). */
  setSection(section: ModelSection | undefined): void;
  records(): Promise<AuditRecord[]>;
  /** Closes the proxy and the audit log; keeps the folder (for restart tests). */
  stop(): Promise<void>;
  /** stop() and remove the folder. */
  close(): Promise<void>;
}

export async function startProxy(opts: {
  section: Record<string, unknown>;
  key?: string;
  allowPrivate?: boolean;
  limits?: Partial<ModelProxyLimits>;
  /** Reuse a folder (state and audit) from an earlier harness. */
  dir?: string;
  /** A fleet-wide dailyTokenBudget store (`limits: { store: postgres }`). */
  fleetBudget?: FleetTokenBudget;
}): Promise<ProxyHarness> {
  // Short base path: Unix socket paths are limited to ~107 bytes.
  const dir = opts.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'alm-')));
  const socketPath = path.join(dir, `model-${Math.random().toString(36).slice(2, 8)}.sock`);
  const stateDir = path.join(dir, 'state');
  const auditFile = path.join(dir, 'audit.jsonl');
  const redactor = new Redactor();
  const audit = await AuditLog.open(auditFile, { scrub: (e) => redactor.scrubDeep(e) });
  const secrets = new SecretStore({ 'anthropic-key': { env: 'ANTHROPIC_KEY_FOR_TEST' } }, redactor, {
    env: { ANTHROPIC_KEY_FOR_TEST: opts.key ?? API_KEY },
  });
  let section: ModelSection | undefined = modelSectionSchema.parse(opts.section);
  const server = createModelProxy({
    team: TEAM,
    getSection: () => section,
    secrets: secrets.forTeam(TEAM),
    audit,
    redactor,
    log: silentLogger(),
    stateDir,
    upstreamAllowPrivate: opts.allowPrivate ?? true,
    ...(opts.limits ? { limits: opts.limits } : {}),
    ...(opts.fleetBudget ? { fleetBudget: opts.fleetBudget } : {}),
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await audit.close();
  };
  return {
    dir,
    socketPath,
    stateDir,
    auditFile,
    redactor,
    audit,
    server,
    setSection: (s) => void (section = s),
    records: async () => {
      const out: AuditRecord[] = [];
      for await (const r of readAuditRecords(auditFile)) out.push(r);
      const verified = await verifyAuditFile(auditFile);
      if (!verified.ok) throw new Error(`audit chain broken: ${JSON.stringify(verified)}`);
      return out;
    },
    stop,
    close: async () => {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface ProxyResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text: string;
  json(): any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export const MESSAGES_HEADERS = {
  'content-type': 'application/json',
  'anthropic-version': '2023-06-01',
};

/** Opens a request over the Unix socket; resolves with the response stream (headers arrived). */
export function openRequest(
  socketPath: string,
  opts: { method?: string; path?: string; headers?: Record<string, string>; body?: unknown },
): { req: http.ClientRequest; response: Promise<http.IncomingMessage> } {
  const body =
    opts.body === undefined
      ? undefined
      : typeof opts.body === 'string' || Buffer.isBuffer(opts.body)
        ? opts.body
        : JSON.stringify(opts.body);
  const req = http.request({
    socketPath,
    method: opts.method ?? 'POST',
    path: opts.path ?? '/v1/messages',
    headers: { ...(opts.body !== undefined ? MESSAGES_HEADERS : {}), ...opts.headers },
    agent: false,
  });
  const response = new Promise<http.IncomingMessage>((resolve, reject) => {
    req.on('response', resolve);
    req.on('error', reject);
  });
  req.end(body);
  return { req, response };
}

/** Sends a request over the Unix socket and reads the whole response. */
export async function send(
  socketPath: string,
  opts: { method?: string; path?: string; headers?: Record<string, string>; body?: unknown },
): Promise<ProxyResponse> {
  const res = await openRequest(socketPath, opts).response;
  const chunks: Buffer[] = [];
  for await (const c of res as AsyncIterable<Buffer>) chunks.push(c);
  const body = Buffer.concat(chunks);
  const text = body.toString('utf8');
  return { status: res.statusCode ?? 0, headers: res.headers, body, text, json: () => JSON.parse(text) };
}

export function messagesBody(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model: 'claude-sonnet-4-5',
    max_tokens: 1024,
    messages: [{ role: 'user', content: 'Say hello.' }],
    ...extra,
  };
}

/** Fails the test if `text` contains the key in any of its usual encodings. */
export function containsKey(text: string, key = API_KEY): boolean {
  const r = new Redactor();
  r.add(key);
  return r.contains(text);
}

export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
