// Test harness for the http server: a hand-built ToolContext (map-backed secrets, silent logger,
// an AbortController), a helper that runs a tool the way the core does (validate → authorize →
// run), and throwaway upstreams on 127.0.0.1.
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import type { AddressInfo } from 'node:net';
import { silentLogger } from '../../src/log.js';
import { ToolError, type SecretAccess, type ToolContext, type ToolResult } from '../../src/tool.js';
import { httpSectionSchema, type HttpSection } from '../../servers/http/section.js';
import { httpRequestTool, type HttpRequestResult } from '../../servers/http/http_request.js';

export class MapSecrets implements SecretAccess {
  readonly requested: string[] = [];
  constructor(private readonly values: Record<string, string>) {}
  async get(name: string): Promise<string> {
    this.requested.push(name);
    const value = this.values[name];
    if (value === undefined) throw new Error(`unknown secret ${name}`);
    return value;
  }
}

export function parseSection(section: unknown): HttpSection {
  return httpSectionSchema.parse(section);
}

export function makeContext(
  section: HttpSection,
  opts: { secrets?: Record<string, string>; signal?: AbortSignal } = {},
): ToolContext<HttpSection, Record<string, never>> {
  return {
    team: 'payments',
    server: 'http',
    section,
    options: {},
    secrets: new MapSecrets(opts.secrets ?? {}),
    signal: opts.signal ?? new AbortController().signal,
    stateDir: os.tmpdir(),
    log: silentLogger(),
    runtime: undefined,
  };
}

/** Runs a tool as the core would: input validation, policy check, then the handler. */
export async function callTool(
  args: unknown,
  section: HttpSection,
  opts: { secrets?: Record<string, string>; signal?: AbortSignal; tool?: typeof httpRequestTool } = {},
): Promise<ToolResult<HttpRequestResult>> {
  const tool = opts.tool ?? httpRequestTool;
  const parsed = tool.input.safeParse(args);
  if (!parsed.success) throw new ToolError(parsed.error.message, 'invalid');
  const ctx = makeContext(section, opts);
  const decision = tool.authorize(parsed.data, ctx);
  if (!decision.allow) throw new ToolError(decision.reason, 'denied', decision.rule);
  return tool.run(parsed.data, ctx);
}

/** Resolves with the ToolError a call throws (fails the test if it succeeds or throws something else). */
export async function toolError(promise: Promise<unknown>): Promise<ToolError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof ToolError) return err;
    throw err;
  }
  throw new Error('expected a ToolError, but the call succeeded');
}

export interface Upstream {
  origin: string;
  port: number;
  requests: http.IncomingMessage[];
  close(): Promise<void>;
}

/** An http server on 127.0.0.1 with a random port; every request it received is recorded. */
export async function startUpstream(handler: http.RequestListener): Promise<Upstream> {
  const requests: http.IncomingMessage[] = [];
  const server = http.createServer((req, res) => {
    requests.push(req);
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    origin: `http://127.0.0.1:${port}`,
    port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A TCP server that accepts connections and never answers. */
export async function startSilentServer(): Promise<{ origin: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Echo handler: answers with the request's method, path, headers and body as JSON. */
export const echoHandler: http.RequestListener = (req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    res.setHeader('content-type', 'application/json');
    res.setHeader('set-cookie', 'session=upstream-session');
    res.setHeader('X-Upstream', 'Echo');
    res.end(
      JSON.stringify({
        method: req.method,
        url: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      }),
    );
  });
};

export interface Echo {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string;
}

export function echoOf(result: ToolResult<HttpRequestResult>): Echo {
  return JSON.parse(result.structured.body) as Echo;
}
