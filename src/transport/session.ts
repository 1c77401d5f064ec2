// One MCP session = one SDK Server instance bound to one team and one server, on one transport.
// We use the SDK's low-level Server rather than McpServer.registerTool: McpServer answers calls to
// unregistered tools and arguments that fail its schema itself, before any code of ours runs,
// so those calls could not be audited. Here every tools/call goes through the pipeline.
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import type { CallToolResult, JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import {
  CallToolRequestSchema,
  CallToolResultSchema,
  ErrorCode,
  ListToolsRequestSchema,
  McpError,
} from '@modelcontextprotocol/sdk/types.js';
import { serializedResult, type CallPipeline, type SessionInfo } from '../pipeline/pipeline.js';
import type { ServerName } from '../tool.js';
import type { jsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/types.js';
import { NdjsonTransport } from './ndjson.js';
import { VERSION } from '../version.js';

// The SDK's Server makes its own Ajv instance (formats added) unless given a validator; it only
// checks elicitation answers, which Airlock never asks for. Per session that instance was most of
// a session's memory and handshake CPU (bench:memory): one, made on first use, serves them all.
// Ajv itself is loaded then too (require), not at start-up: the bundled command's copy of the
// SDK's server does not import it either (build/bundle-cli.mjs).
let ajvValidator: jsonSchemaValidator | undefined;
export const sharedValidator: jsonSchemaValidator = {
  getValidator: (schema) => {
    if (!ajvValidator) {
      const { AjvJsonSchemaValidator } = createRequire(import.meta.url)(
        '@modelcontextprotocol/sdk/validation/ajv',
      ) as typeof import('@modelcontextprotocol/sdk/validation/ajv');
      ajvValidator = new AjvJsonSchemaValidator();
    }
    return ajvValidator.getValidator(schema);
  },
};

type ProgressNotification = {
  method: 'notifications/progress';
  params: { progressToken: string | number; progress: number; total: number; message: string };
};

interface PlainToolCall {
  id: string | number;
  params: {
    name: string;
    arguments?: Record<string, unknown>;
    _meta?: { progressToken?: string | number; traceparent?: string; tracestate?: string };
  };
}

const CALL_KEYS: ReadonlySet<string> = new Set(['jsonrpc', 'id', 'method', 'params']);

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * `message` as a tools/call request the SDK would accept unchanged (JSONRPCRequestSchema and
 * CallToolRequestSchema), with no task and no _meta beyond a progress token and W3C trace
 * context (`traceparent`, `tracestate` strings); else undefined.
 * Stricter than the schemas: whatever this refuses simply takes the SDK path.
 */
function plainToolCall(message: unknown): PlainToolCall | undefined {
  if (!isPlainObject(message) || message.method !== 'tools/call' || message.jsonrpc !== '2.0')
    return undefined;
  for (const key in message) if (!CALL_KEYS.has(key)) return undefined;
  const { id, params } = message;
  if (typeof id !== 'string' && !Number.isSafeInteger(id)) return undefined;
  if (!isPlainObject(params) || typeof params.name !== 'string' || 'task' in params) return undefined;
  if (params.arguments !== undefined && !isPlainObject(params.arguments)) return undefined;
  const meta = params._meta;
  if (meta !== undefined) {
    if (!isPlainObject(meta)) return undefined;
    for (const key in meta) {
      if (key === 'traceparent' || key === 'tracestate') {
        if (typeof meta[key] !== 'string') return undefined;
      } else if (key !== 'progressToken') return undefined;
    }
    const token = meta.progressToken;
    if (token !== undefined && typeof token !== 'string' && !Number.isSafeInteger(token)) return undefined;
  }
  return message as unknown as PlainToolCall;
}

/** The SDK's check of a tools/call result, kept for a result that is not of the pipeline's usual shape. */
function checkedResult(result: CallToolResult): CallToolResult {
  const usual =
    Array.isArray(result.content) &&
    result.content.every((c) => isPlainObject(c) && c.type === 'text' && typeof c.text === 'string') &&
    (result.structuredContent === undefined || isPlainObject(result.structuredContent)) &&
    (result.isError === undefined || typeof result.isError === 'boolean');
  if (usual) return result;
  const parsed = CallToolResultSchema.safeParse(result);
  if (!parsed.success)
    throw new McpError(ErrorCode.InvalidParams, `Invalid tools/call result: ${parsed.error.message}`);
  return parsed.data;
}

export interface McpSession {
  server: Server;
  /** Tells the client its tool list changed (policy reload). */
  notifyToolsChanged(): void;
  close(): Promise<void>;
  closed: Promise<void>;
}

export async function openSession(
  pipeline: CallPipeline,
  opts: {
    team: string;
    server: ServerName;
    transport: Transport;
    kind: 'socket' | 'stdio';
  },
): Promise<McpSession> {
  const info: SessionInfo = { id: randomUUID(), team: opts.team, server: opts.server, transport: opts.kind };
  const server = new Server(
    { name: `airlock-${opts.server}`, version: VERSION },
    {
      capabilities: { tools: { listChanged: true } },
      jsonSchemaValidator: sharedValidator,
      instructions:
        `Airlock ${opts.server} tools for team "${opts.team}". Calls run outside your sandbox under the team's ` +
        `policy and are audited. A result starting with "denied:" names the policy rule that refused it.`,
    },
  );
  // MCP's lifecycle: nothing but ping before initialize. The SDK's low-level Server does not
  // enforce it, and a client that skipped the handshake must not get to call tools.
  const requireInitialized = () => {
    if (!server.getClientVersion()) {
      throw new McpError(ErrorCode.InvalidRequest, 'the session is not initialized; send initialize first');
    }
  };
  server.setRequestHandler(ListToolsRequestSchema, async () => {
    requireInitialized();
    return { tools: pipeline.listTools(opts.team, opts.server) };
  });
  // A call waiting for approval tells a client that asked for progress that it is alive, so
  // the client's request timeout does not end it (MCP progress, resetTimeoutOnProgress).
  const progressSink = (
    token: string | number | undefined,
    send: (notification: ProgressNotification) => Promise<void>,
  ) =>
    token === undefined
      ? undefined
      : (done: number, total: number, message: string) =>
          void send({
            method: 'notifications/progress',
            params: { progressToken: token, progress: done, total, message },
          }).catch(() => undefined);
  server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
    requireInitialized();
    const progress = progressSink(request.params._meta?.progressToken, (n) => extra.sendNotification(n));
    return pipeline.call(
      info,
      request.params.name,
      request.params.arguments ?? {},
      extra.signal,
      progress,
      extra.requestId,
      request.params._meta,
    );
  });

  // The tools/call fast path: a well-formed call on an initialized session goes from the transport
  // straight to the pipeline, as the SDK would hand it over, without the SDK's five zod parses of
  // the message and its result (the pipeline validates the arguments and builds the result).
  // Anything else — another method, an unusual shape, a task — takes the SDK path above, which
  // also keeps initialize, tools/list, notifications and their errors.
  const fastCalls = new Map<string | number, AbortController>();
  const fastCall = (message: unknown): boolean => {
    const call = plainToolCall(message);
    if (!call || !server.getClientVersion()) return false;
    const { id, params } = call;
    const controller = new AbortController();
    fastCalls.get(id)?.abort(); // a reused id: the SDK, too, forgets the earlier call's controller
    fastCalls.set(id, controller);
    const { signal } = controller;
    const progress = progressSink(params._meta?.progressToken, async (n) => {
      if (!signal.aborted) await server.notification(n, { relatedRequestId: id });
    });
    void pipeline
      .call(info, params.name, params.arguments ?? {}, signal, progress, id, params._meta)
      .then(checkedResult)
      .then(
        (result) => {
          if (signal.aborted) return;
          // The pipeline's own serialization of the result, if it is the one checkedResult kept.
          const json = serializedResult(result);
          if (json !== undefined && opts.transport instanceof NdjsonTransport)
            return opts.transport.sendResult(id, json);
          return opts.transport.send({ result, jsonrpc: '2.0', id });
        },
        (err: { code?: unknown; message?: string; data?: unknown }) => {
          if (signal.aborted) return;
          return opts.transport.send({
            jsonrpc: '2.0',
            id,
            error: {
              code: Number.isSafeInteger(err?.code) ? (err.code as number) : ErrorCode.InternalError,
              message: err?.message ?? 'Internal error',
              ...(err?.data !== undefined && { data: err.data }),
            },
          });
        },
      )
      .catch(() => undefined)
      .finally(() => {
        if (fastCalls.get(id) === controller) fastCalls.delete(id);
      });
    return true;
  };
  const transport = opts.transport;

  let resolveClosed!: () => void;
  let isClosed = false;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  server.onclose = () => {
    isClosed = true;
    // As the SDK does for its own handlers: a closed session aborts its calls.
    for (const controller of fastCalls.values()) controller.abort();
    fastCalls.clear();
    pipeline.telemetry?.sessionClosed(info);
    resolveClosed();
  };
  await server.connect(opts.transport);
  // A connection that ended during connect() is not counted as an open session.
  if (!isClosed) pipeline.telemetry?.sessionOpened(info);
  if (transport instanceof NdjsonTransport) {
    transport.interceptFrame = fastCall;
    // Cancellation stays the SDK's message to validate; it also reaches fast-path calls.
    const sdkOnMessage = transport.onmessage!;
    transport.onmessage = (message: JSONRPCMessage) => {
      if ('method' in message && message.method === 'notifications/cancelled' && !('id' in message)) {
        const requestId = (message.params as { requestId?: unknown } | undefined)?.requestId;
        if (typeof requestId === 'string' || typeof requestId === 'number')
          fastCalls.get(requestId)?.abort((message.params as { reason?: unknown }).reason);
      }
      sdkOnMessage(message);
    };
  }
  return {
    server,
    closed,
    notifyToolsChanged: () => void server.sendToolListChanged().catch(() => undefined),
    close: () => server.close(),
  };
}
