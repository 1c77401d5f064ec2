// A scripted stand-in for the Anthropic Messages API on 127.0.0.1, for tests of the model proxy
// and for end-to-end runs of Claude Code against Airlock. It checks the API key, records every
// request, and answers `POST /v1/messages` from a queue of scripted replies: streamed as SSE when
// the request says `stream: true`, as one JSON message otherwise. The SSE framing and event
// order follow Anthropic's "Streaming Messages" documentation:
//   message_start → (content_block_start → ping? → content_block_delta* → content_block_stop)*
//   → message_delta (stop_reason, usage.output_tokens) → message_stop
// `POST /v1/messages/count_tokens` answers `{"input_tokens": N}` with the same estimate a
// message reply reports. Anything else is a 404 in Anthropic's error shape.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';

export interface ScriptedUsage {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
}

interface ReplyCommon {
  /** Overrides the token counts reported (defaults: estimates from the request and the reply). */
  usage?: Partial<ScriptedUsage>;
  /** Streamed replies: awaited before the last event (`message_stop`) is written. */
  beforeLastEvent?: Promise<unknown>;
  /** Streamed replies: write this many events, then stall (never finish) until the client goes away. */
  stallAfterEvents?: number;
  /** Compress the body with gzip whatever the request's accept-encoding says. */
  gzip?: boolean;
}

/** One scripted answer to a `/v1/messages` request. */
export type ScriptedReply =
  /** A final assistant text message (`stop_reason: end_turn`). */
  | (ReplyCommon & { text: string })
  /** A `tool_use` block (optionally after some text), `stop_reason: tool_use`. */
  | (ReplyCommon & { toolUse: { name: string; input: Record<string, unknown>; id?: string }; text?: string })
  /** An API error in Anthropic's shape, e.g. `{status: 529, type: 'overloaded_error', message: 'Overloaded'}`. */
  | { error: { status: number; type: string; message: string } }
  /** Arbitrary bytes, written chunk by chunk (`delayMs` apart): for proxy edge cases. */
  | {
      raw: {
        status?: number;
        headers?: Record<string, string>;
        chunks: (string | Buffer)[];
        delayMs?: number;
      };
    }
  /** Never answer (not even headers): the upstream hangs. */
  | { hang: true };

export interface RecordedRequest {
  method: string;
  /** Path and query as received. */
  url: string;
  headers: http.IncomingHttpHeaders;
  /** The parsed JSON body, or the raw text if it is not JSON (undefined when empty). */
  body: unknown;
  /** The exact bytes of the response body this server wrote (after gzip, if any). */
  responseBody: Buffer;
  /** True once the connection for this request closed before the response finished. */
  abortedByClient: boolean;
}

export interface ScriptedApiOptions {
  /** The key every request must carry in `x-api-key` (or as `Authorization: Bearer`); 401 otherwise. */
  apiKey: string;
  replies?: ScriptedReply[];
  /** Answered when the queue is empty (Claude Code makes side requests: titles, quota checks). Default: a short text. */
  fallback?: ScriptedReply;
  /** Delay between streamed events, in ms (default 0: each event is still its own write). */
  eventDelayMs?: number;
}

export interface ScriptedApi {
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  url: string;
  port: number;
  requests: RecordedRequest[];
  /** Appends replies to the queue. */
  enqueue(...replies: ScriptedReply[]): void;
  /** Replies still queued. */
  pending(): number;
  close(): Promise<void>;
}

/** Rough token estimate (4 characters a token), deterministic so tests can predict it. */
export function estimateTokens(value: unknown): number {
  const text = typeof value === 'string' ? value : JSON.stringify(value ?? '');
  return Math.max(1, Math.ceil(text.length / 4));
}

function requestInputTokens(body: unknown): number {
  const b = (body ?? {}) as Record<string, unknown>;
  return estimateTokens({ system: b.system ?? null, messages: b.messages ?? [], tools: b.tools ?? [] });
}

function id(prefix: string): string {
  return `${prefix}_01${randomBytes(12).toString('hex')}`;
}

function apiError(res: http.ServerResponse, status: number, type: string, message: string): void {
  const body = JSON.stringify({ type: 'error', error: { type, message }, request_id: id('req') });
  res.writeHead(status, { 'content-type': 'application/json', 'request-id': id('req') });
  res.end(body);
}

/** Splits text into a few pieces, as the API streams it (word by word here). */
function pieces(text: string): string[] {
  const parts = text.match(/\S+\s*|\s+/g) ?? [];
  return parts.length ? parts : [''];
}

/** Splits a JSON text into short fragments, as `input_json_delta.partial_json` arrives. */
function jsonFragments(json: string): string[] {
  const out: string[] = [''];
  for (let i = 0; i < json.length; i += 12) out.push(json.slice(i, i + 12));
  return out;
}

type ContentBlock =
  | { type: 'text'; text: string }
  | { type: 'tool_use'; id: string; name: string; input: Record<string, unknown> };

interface BuiltMessage {
  message: {
    id: string;
    type: 'message';
    role: 'assistant';
    model: string;
    content: ContentBlock[];
    stop_reason: 'end_turn' | 'tool_use';
    stop_sequence: null;
    usage: ScriptedUsage;
  };
}

function buildMessage(
  reply: Extract<ScriptedReply, { text: string } | { toolUse: unknown }>,
  body: unknown,
): BuiltMessage {
  const model =
    typeof (body as { model?: unknown })?.model === 'string'
      ? (body as { model: string }).model
      : 'claude-test';
  const content: ContentBlock[] = [];
  if ('text' in reply && typeof reply.text === 'string' && reply.text.length > 0)
    content.push({ type: 'text', text: reply.text });
  if ('toolUse' in reply) {
    content.push({
      type: 'tool_use',
      id: reply.toolUse.id ?? id('toolu'),
      name: reply.toolUse.name,
      input: reply.toolUse.input,
    });
  }
  if (content.length === 0) content.push({ type: 'text', text: '' });
  const usage: ScriptedUsage = {
    input_tokens: requestInputTokens(body),
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0,
    output_tokens: estimateTokens(content),
    ...reply.usage,
  };
  return {
    message: {
      id: id('msg'),
      type: 'message',
      role: 'assistant',
      model,
      content,
      stop_reason: 'toolUse' in reply ? 'tool_use' : 'end_turn',
      stop_sequence: null,
      usage,
    },
  };
}

/** The SSE events of a message, in the documented order. */
function sseEvents({ message }: BuiltMessage): { event: string; data: unknown }[] {
  const events: { event: string; data: unknown }[] = [];
  events.push({
    event: 'message_start',
    data: {
      type: 'message_start',
      message: {
        ...message,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        // message_start carries the input side; output_tokens is a running count (1 at the start).
        usage: { ...message.usage, output_tokens: 1 },
      },
    },
  });
  message.content.forEach((block, index) => {
    if (block.type === 'text') {
      events.push({
        event: 'content_block_start',
        data: { type: 'content_block_start', index, content_block: { type: 'text', text: '' } },
      });
      if (index === 0) events.push({ event: 'ping', data: { type: 'ping' } });
      for (const text of pieces(block.text)) {
        events.push({
          event: 'content_block_delta',
          data: { type: 'content_block_delta', index, delta: { type: 'text_delta', text } },
        });
      }
    } else {
      events.push({
        event: 'content_block_start',
        data: {
          type: 'content_block_start',
          index,
          content_block: { type: 'tool_use', id: block.id, name: block.name, input: {} },
        },
      });
      if (index === 0) events.push({ event: 'ping', data: { type: 'ping' } });
      for (const partial_json of jsonFragments(JSON.stringify(block.input))) {
        events.push({
          event: 'content_block_delta',
          data: { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json } },
        });
      }
    }
    events.push({ event: 'content_block_stop', data: { type: 'content_block_stop', index } });
  });
  events.push({
    event: 'message_delta',
    data: {
      type: 'message_delta',
      delta: { stop_reason: message.stop_reason, stop_sequence: null },
      usage: { output_tokens: message.usage.output_tokens },
    },
  });
  events.push({ event: 'message_stop', data: { type: 'message_stop' } });
  return events;
}

export function formatSseEvent(e: { event: string; data: unknown }): string {
  return `event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startScriptedApi(opts: ScriptedApiOptions): Promise<ScriptedApi> {
  const queue: ScriptedReply[] = [...(opts.replies ?? [])];
  const fallback: ScriptedReply = opts.fallback ?? { text: 'OK' };
  const requests: RecordedRequest[] = [];
  const sockets = new Set<import('node:net').Socket>();

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown = undefined;
      if (text.length) {
        try {
          body = JSON.parse(text);
        } catch {
          body = text;
        }
      }
      const record: RecordedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body,
        responseBody: Buffer.alloc(0),
        abortedByClient: false,
      };
      requests.push(record);
      res.on('close', () => {
        if (!res.writableFinished) record.abortedByClient = true;
      });
      // Record exactly what goes on the wire as the body.
      const write = res.write.bind(res) as (chunk: string | Buffer) => boolean;
      const sent: Buffer[] = [];
      res.write = ((chunk: string | Buffer, ...rest: unknown[]) => {
        sent.push(Buffer.from(chunk));
        record.responseBody = Buffer.concat(sent);
        return (write as (c: string | Buffer, ...r: unknown[]) => boolean)(chunk, ...rest);
      }) as typeof res.write;
      const end = res.end.bind(res) as (...args: unknown[]) => http.ServerResponse;
      res.end = ((...args: unknown[]) => {
        const chunk = args[0];
        if (typeof chunk === 'string' || Buffer.isBuffer(chunk)) {
          sent.push(Buffer.from(chunk));
          record.responseBody = Buffer.concat(sent);
        }
        return end(...args);
      }) as typeof res.end;
      void handle(req, res, record).catch(() => res.destroy());
    });
  });

  async function handle(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    record: RecordedRequest,
  ): Promise<void> {
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (req.headers['x-api-key'] !== opts.apiKey && bearer !== opts.apiKey) {
      return apiError(res, 401, 'authentication_error', 'invalid x-api-key');
    }
    const pathname = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method !== 'POST' || (pathname !== '/v1/messages' && pathname !== '/v1/messages/count_tokens')) {
      return apiError(res, 404, 'not_found_error', `Not found: ${req.method} ${pathname}`);
    }
    if (!req.headers['anthropic-version']) {
      return apiError(res, 400, 'invalid_request_error', 'anthropic-version: header is required');
    }
    const body = record.body as Record<string, unknown> | undefined;
    if (!body || typeof body !== 'object')
      return apiError(res, 400, 'invalid_request_error', 'body: expected a JSON object');
    if (pathname === '/v1/messages/count_tokens') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ input_tokens: requestInputTokens(body) }));
      return;
    }

    const reply = queue.length ? queue.shift()! : fallback;
    if ('hang' in reply) return; // never answer
    if ('error' in reply) return apiError(res, reply.error.status, reply.error.type, reply.error.message);
    if ('raw' in reply) {
      res.writeHead(reply.raw.status ?? 200, reply.raw.headers ?? { 'content-type': 'application/json' });
      for (const chunk of reply.raw.chunks) {
        res.write(chunk);
        if (reply.raw.delayMs) await sleep(reply.raw.delayMs);
      }
      res.end();
      return;
    }

    const built = buildMessage(reply, body);
    const gzip = reply.gzip === true;
    const headers: Record<string, string> = { 'request-id': id('req') };
    if (gzip) headers['content-encoding'] = 'gzip';
    if (body.stream !== true) {
      const json = Buffer.from(JSON.stringify(built.message));
      res.writeHead(200, { ...headers, 'content-type': 'application/json' });
      res.end(gzip ? zlib.gzipSync(json) : json);
      return;
    }

    res.writeHead(200, {
      ...headers,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
    });
    res.flushHeaders();
    const events = sseEvents(built);
    const gz = gzip ? zlib.createGzip() : undefined;
    if (gz) gz.on('data', (c: Buffer) => res.write(c));
    const emit = async (text: string) => {
      if (!gz) {
        res.write(text);
        return;
      }
      gz.write(text);
      await new Promise<void>((r) => gz.flush(zlib.constants.Z_SYNC_FLUSH, () => r()));
    };
    for (let i = 0; i < events.length; i++) {
      if (res.destroyed) return;
      if (reply.stallAfterEvents !== undefined && i >= reply.stallAfterEvents) return; // stall until the client leaves
      if (i === events.length - 1 && reply.beforeLastEvent) await reply.beforeLastEvent;
      await emit(formatSseEvent(events[i]!));
      if (opts.eventDelayMs) await sleep(opts.eventDelayMs);
    }
    if (gz) await new Promise<void>((r) => gz.on('end', () => r()).end());
    res.end();
  }

  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    enqueue: (...replies) => void queue.push(...replies),
    pending: () => queue.length,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
