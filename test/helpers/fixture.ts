// Shared test fixtures: a temporary Airlock installation (config, policies, secrets, audit),
// a loopback upstream that echoes what it received, and MCP clients over real sockets.
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { Broker } from '../../src/broker.js';
import { NdjsonTransport } from '../../src/transport/ndjson.js';

export const REPO_ROOT = path.resolve(import.meta.dirname, '../..');
export const CLI = path.join(REPO_ROOT, 'dist/src/cli.js');
export const BRIDGE = path.join(REPO_ROOT, 'dist/src/bridge.cjs');

export interface Installation {
  root: string;
  configFile: string;
  socketDir: string;
  stateDir: string;
  policiesDir: string;
  auditFile: string;
  socket(team: string, server: string): string;
  writePolicy(name: string, yaml: string): Promise<void>;
  cleanup(): Promise<void>;
}

/** A throwaway install: `secrets` maps name → value, stored as 0600 files referenced from airlock.yaml. */
export async function makeInstallation(opts: {
  secrets?: Record<string, string>;
  policies?: Record<string, string>;
  extraSecretsYaml?: string;
}): Promise<Installation> {
  // Short base path: Unix socket paths are limited to ~107 bytes.
  const root = await mkdtemp(path.join(os.tmpdir(), 'al-'));
  const socketDir = path.join(root, 'run');
  const stateDir = path.join(root, 'state');
  const policiesDir = path.join(root, 'policies');
  const auditFile = path.join(root, 'audit', 'audit.jsonl');
  await mkdir(policiesDir, { recursive: true });
  await mkdir(path.join(root, 'secrets'), { recursive: true, mode: 0o700 });
  const secretLines: string[] = [];
  for (const [name, value] of Object.entries(opts.secrets ?? {})) {
    await writeFile(path.join(root, 'secrets', name), value + '\n', { mode: 0o600 });
    secretLines.push(`  ${name}: { file: ./secrets/${name} }`);
  }
  if (opts.extraSecretsYaml) secretLines.push(opts.extraSecretsYaml);
  const configFile = path.join(root, 'airlock.yaml');
  await writeFile(
    configFile,
    [
      `socketDir: ${socketDir}`,
      `stateDir: ${stateDir}`,
      `policies: ./policies`,
      `audit:`,
      `  file: ${auditFile}`,
      `secrets:${secretLines.length ? '' : ' {}'}`,
      ...secretLines,
      '',
    ].join('\n'),
  );
  const inst: Installation = {
    root,
    configFile,
    socketDir,
    stateDir,
    policiesDir,
    auditFile,
    socket: (team, server) => path.join(socketDir, team, `${server}.sock`),
    writePolicy: (name, yaml) => writeFile(path.join(policiesDir, name), yaml),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
  for (const [name, yaml] of Object.entries(opts.policies ?? {})) await inst.writePolicy(name, yaml);
  return inst;
}

export interface EchoRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface EchoUpstream {
  origin: string;
  port: number;
  requests: EchoRequest[];
  close(): Promise<void>;
}

/** A loopback HTTP upstream that answers every request with a JSON echo of it. */
export async function startEchoUpstream(
  handler?: (req: http.IncomingMessage, res: http.ServerResponse, body: string) => boolean | void,
): Promise<EchoUpstream> {
  const requests: EchoRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      if (handler?.(req, res, body)) return;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    origin: `http://127.0.0.1:${port}`,
    port,
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** An MCP SDK Client connected straight to a Unix socket (newline-delimited JSON-RPC). */
export async function connectSocketClient(
  socketPath: string,
): Promise<{ client: Client; socket: net.Socket }> {
  const socket = net.connect(socketPath);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const client = new Client({ name: 'airlock-test', version: '0.0.0' });
  await client.connect(new NdjsonTransport(socket, socket));
  return { client, socket };
}

/** Sends raw lines on a fresh connection and collects the JSON lines that come back. */
export async function rawExchange(
  socketPath: string,
  payload: string | Buffer,
  opts: { waitMs?: number; expectLines?: number } = {},
): Promise<{ lines: unknown[]; closed: boolean }> {
  const socket = net.connect(socketPath);
  const lines: unknown[] = [];
  let buf = '';
  let closed = false;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, opts.waitMs ?? 1000);
    socket.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
      }
      if (opts.expectLines !== undefined && lines.length >= opts.expectLines) {
        clearTimeout(timer);
        resolve();
      }
    });
    socket.on('close', () => {
      closed = true;
      clearTimeout(timer);
      resolve();
    });
    socket.on('error', () => undefined);
    socket.write(payload);
  });
  socket.destroy();
  return { lines, closed };
}

export const INIT_LINE =
  JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '0' } },
  }) + '\n';

/**
 * Team acme's policy for the http server: GET and POST under /v1/** on `origin`, with the
 * `api-token` secret injected as a Bearer header. `sectionYaml` adds lines to the http section.
 */
export function acmeHttpPolicy(origin: string, sectionYaml = ''): string {
  return `team: acme
servers:
  http:
    hosts:
      - origin: ${origin}
        methods: [GET, POST]
        paths: ["/v1/**"]
        inject: { header: Authorization, value: "Bearer \${secret:api-token}" }
        allowPrivateAddress: true
${sectionYaml}    tools:
      http_request: {}
`;
}

export interface AcmeHttpBroker {
  inst: Installation;
  upstream: EchoUpstream;
  broker: Broker;
  /** acme's http socket. */
  socketPath: string;
  close(): Promise<void>;
}

/**
 * A broker in this process on a fresh installation whose team acme reaches a loopback echo
 * upstream through the http server (`acmeHttpPolicy`, with `api-token` = `secret`).
 */
export async function startAcmeHttpBroker(opts: {
  secret: string;
  sectionYaml?: string;
}): Promise<AcmeHttpBroker> {
  // Loaded here so that the many tests which only spawn dist/ do not load the broker.
  const [{ Broker }, { loadConfig }, { silentLogger }] = await Promise.all([
    import('../../src/broker.js'),
    import('../../src/config/airlock-yaml.js'),
    import('../../src/log.js'),
  ]);
  const upstream = await startEchoUpstream();
  let inst: Installation | undefined;
  let broker: Broker | undefined;
  const close = async () => {
    await broker?.stop(1000);
    await upstream.close();
    await inst?.cleanup();
  };
  try {
    inst = await makeInstallation({
      secrets: { 'api-token': opts.secret },
      policies: { 'acme.yaml': acmeHttpPolicy(upstream.origin, opts.sectionYaml) },
    });
    broker = await Broker.start(await loadConfig(inst.configFile), { log: silentLogger() });
  } catch (err) {
    await close();
    throw err;
  }
  return { inst, upstream, broker, socketPath: inst.socket('acme', 'http'), close };
}

let stagedCli: Promise<string> | undefined;
/** Staged CLIs older than this are left by earlier runs (a full run takes minutes): removed. */
const STALE_STAGED_CLI_MS = 6 * 60 * 60 * 1000;

/**
 * The built CLI staged where any uid can read it (with its production dependencies): a clone may
 * live in a 0700 folder that uid 1000 cannot enter. One copy per build, shared by every test file
 * and run (~100 MB each: one per file had left 0.5 GB in /tmp after a run), named by what it holds
 * (the package.json and every built file's path, size and mtime); staged under a temporary name
 * and renamed into place, so concurrent test files never see half of one.
 */
export function cliReadableByAnyUid(): Promise<string> {
  return (stagedCli ??= (async () => {
    const { mkdtemp, readFile, readdir, rename, stat } = await import('node:fs/promises');
    const { createHash } = await import('node:crypto');
    const { stageForAgent } = await import('../../src/demo/sandbox.js');
    const pkgText = await readFile(path.join(REPO_ROOT, 'package.json'), 'utf8');
    const pkg = JSON.parse(pkgText) as { dependencies: Record<string, string> };
    const files = ['package.json', 'dist/src', 'dist/servers'];
    const hash = createHash('sha256').update(pkgText);
    for (const top of ['dist/src', 'dist/servers']) {
      for (const entry of (await readdir(path.join(REPO_ROOT, top), { recursive: true })).sort()) {
        const st = await stat(path.join(REPO_ROOT, top, entry));
        if (st.isFile()) hash.update(`${top}/${entry}\0${st.size}\0${st.mtimeMs}\0`);
      }
    }
    const prefix = `airlock-cli-${process.getuid?.() ?? 'u'}-`;
    const dest = path.join(os.tmpdir(), prefix + hash.digest('hex').slice(0, 16));
    const cli = path.join(dest, 'dist/src/cli.js');
    if (await stat(path.join(dest, '.complete')).catch(() => undefined)) return cli;
    const tmp = await mkdtemp(`${dest}.staging-`);
    await stageForAgent({ sourceRoot: REPO_ROOT, dest: tmp, files, packages: Object.keys(pkg.dependencies) });
    await writeFile(path.join(tmp, '.complete'), '');
    // Another test file may have renamed its copy into place first: then that one is used.
    await rename(tmp, dest).catch(() => rm(tmp, { recursive: true, force: true }));
    for (const old of await readdir(os.tmpdir())) {
      if (!old.startsWith(prefix) || path.join(os.tmpdir(), old) === dest) continue;
      const at = path.join(os.tmpdir(), old);
      const st = await stat(at).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs > STALE_STAGED_CLI_MS) await rm(at, { recursive: true, force: true });
    }
    return cli;
  })());
}
