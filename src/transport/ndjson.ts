// Newline-delimited JSON-RPC over any byte stream (a Unix socket connection or stdin/stdout),
// as MCP's stdio transport frames it, but hardened for a hostile peer: frames are capped,
// a broken frame gets a JSON-RPC error instead of killing the session, and a peer that stops
// reading its responses is disconnected rather than buffered without bound.
import type { Readable, Writable } from 'node:stream';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import { JSONRPCMessageSchema, type JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';

export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
/** Responses queued for a peer that does not read them; past this the session is closed. */
export const MAX_PENDING_OUTPUT_BYTES = 16 * 1024 * 1024;
/** Deeper JSON than this is refused before parsing: no MCP message needs it, and walking it would exhaust the stack. */
export const MAX_NESTING_DEPTH = 64;
/**
 * JSON values (keys' values, array items, containers) one frame may hold. Counted before parsing:
 * every later step (parse, validation, redaction, audit truncation, hashing) is linear in it, and
 * a 4 MiB frame of 300,000 keys would otherwise hold the event loop, and so every team, for seconds.
 */
export const MAX_FRAME_VALUES = 20_000;
/** Queued responses past which the peer's further requests are not read until it catches up. */
export const READ_PAUSE_OUTPUT_BYTES = 1024 * 1024;
/** A frame must be complete this long after its first byte (a half-sent frame holds memory). */
export const FRAME_COMPLETION_MS = 60_000;
/**
 * Protocol errors logged per session; past it one line says the rest are not logged, and the
 * session's end logs how many were left out. A peer that mixes broken frames with valid ones is
 * never closed for them, and would otherwise write one log line per frame: a log flood.
 */
export const MAX_LOGGED_PROTOCOL_ERRORS = 20;
/** A peer that sends this many broken frames in a row is not an MCP client. */
const MAX_CONSECUTIVE_BAD_FRAMES = 16;

export interface NdjsonTransportOptions {
  maxFrameBytes?: number;
  maxPendingOutputBytes?: number;
  frameCompletionMs?: number;
  /** Called for protocol violations (oversized frame, bad JSON) — for logging; at most MAX_LOGGED_PROTOCOL_ERRORS + 2 times a session. */
  onProtocolError?: (message: string) => void;
}

const NEWLINE = 0x0a;

export class NdjsonTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;
  sessionId?: string;
  /**
   * Sees each parsed frame before MCP validation; returns true if it took the message (the
   * session's tools/call fast path). Anything it leaves goes through the schema and the SDK.
   */
  interceptFrame?: (message: unknown) => boolean;

  private chunks: Buffer[] = [];
  private partialTimer: NodeJS.Timeout | undefined;
  private buffered = 0;
  private closed = false;
  private badFrames = 0;
  private protocolErrors = 0;
  private readPaused = false;
  private readonly maxFrame: number;
  private readonly maxPending: number;

  constructor(
    private readonly input: Readable,
    private readonly output: Writable,
    private readonly opts: NdjsonTransportOptions = {},
  ) {
    this.maxFrame = opts.maxFrameBytes ?? MAX_FRAME_BYTES;
    this.maxPending = opts.maxPendingOutputBytes ?? MAX_PENDING_OUTPUT_BYTES;
  }

  async start(): Promise<void> {
    this.input.on('data', this.onData);
    this.input.on('end', this.onEnd);
    this.input.on('close', this.onEnd);
    this.input.on('error', this.onStreamError);
    this.output.on('error', this.onStreamError);
    if (this.output !== (this.input as unknown)) this.output.on('close', this.onEnd);
  }

  private readonly onData = (data: Buffer | string): void => {
    if (this.closed) return;
    let chunk = typeof data === 'string' ? Buffer.from(data) : data;
    let nl = chunk.indexOf(NEWLINE);
    while (nl !== -1) {
      const tail = chunk.subarray(0, nl);
      if (this.buffered + tail.length > this.maxFrame) return this.oversized();
      this.chunks.push(tail);
      const frame = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      this.chunks = [];
      this.buffered = 0;
      clearTimeout(this.partialTimer);
      this.partialTimer = undefined;
      this.handleFrame(frame);
      if (this.closed) return;
      chunk = chunk.subarray(nl + 1);
      nl = chunk.indexOf(NEWLINE);
    }
    if (chunk.length > 0) {
      if (this.buffered + chunk.length > this.maxFrame) return this.oversized();
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.partialTimer ??= setTimeout(() => {
        this.protocolError('frame not completed in time; closing the session');
        void this.close();
      }, this.opts.frameCompletionMs ?? FRAME_COMPLETION_MS).unref();
    }
  };

  private handleFrame(frame: Buffer): void {
    let text = frame.toString('utf8');
    if (text.endsWith('\r')) text = text.slice(0, -1);
    if (text.trim().length === 0) return;
    const shape = jsonShape(text, MAX_FRAME_VALUES);
    if (shape.depth > MAX_NESTING_DEPTH) {
      return this.badFrame(-32600, `Invalid Request: frame nests deeper than ${MAX_NESTING_DEPTH} levels`);
    }
    if (shape.values > MAX_FRAME_VALUES) {
      // Answered without parsing the frame; the id is read by a scan of the top level only.
      return this.badFrame(
        -32600,
        `Invalid Request: frame holds more than ${MAX_FRAME_VALUES} JSON values`,
        topLevelId(text),
      );
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return this.badFrame(-32700, 'Parse error: frame is not valid JSON');
    }
    try {
      if (this.interceptFrame?.(parsed)) {
        this.badFrames = 0;
        return;
      }
    } catch (err) {
      this.onerror?.(err as Error);
      return;
    }
    const result = JSONRPCMessageSchema.safeParse(parsed);
    if (!result.success) {
      const id = (parsed as { id?: unknown })?.id;
      const validId = typeof id === 'string' || typeof id === 'number' ? id : null;
      return this.badFrame(-32600, 'Invalid Request: frame is not a JSON-RPC 2.0 message', validId);
    }
    this.badFrames = 0;
    try {
      this.onmessage?.(result.data);
    } catch (err) {
      this.onerror?.(err as Error);
    }
  }

  private protocolError(message: string): void {
    const n = ++this.protocolErrors;
    if (n <= MAX_LOGGED_PROTOCOL_ERRORS) this.opts.onProtocolError?.(message);
    else if (n === MAX_LOGGED_PROTOCOL_ERRORS + 1)
      this.opts.onProtocolError?.(
        `more than ${MAX_LOGGED_PROTOCOL_ERRORS} protocol errors; the rest of this session's are counted, not logged`,
      );
  }

  private badFrame(code: number, message: string, id: string | number | null = null): void {
    this.protocolError(message);
    this.writeRaw({ jsonrpc: '2.0', id, error: { code, message } });
    if (++this.badFrames >= MAX_CONSECUTIVE_BAD_FRAMES) void this.close();
  }

  private oversized(): void {
    const message = `frame exceeds ${this.maxFrame} bytes; closing the session`;
    this.protocolError(message);
    this.writeRaw({
      jsonrpc: '2.0',
      id: null,
      error: { code: -32600, message: `Invalid Request: ${message}` },
    });
    void this.close();
  }

  private readonly onEnd = (): void => {
    void this.close();
  };

  private readonly onStreamError = (err: Error): void => {
    // EPIPE/ECONNRESET from a peer that went away: the session is over, not a broker fault.
    this.onerror?.(err);
    void this.close();
  };

  private writeRaw(message: unknown): boolean {
    return this.writeLine(JSON.stringify(message));
  }

  /** Writes one frame whose JSON text the caller already has (no newline inside: JSON has none). */
  private writeLine(json: string): boolean {
    if (this.closed || this.output.destroyed || this.output.writableEnded) return false;
    if (this.output.writableLength > this.maxPending) {
      this.protocolError('peer is not reading its responses; closing the session');
      void this.close();
      return false;
    }
    this.output.write(json + '\n');
    // Backpressure: a peer that does not read its answers is not read from either, so its
    // requests wait in the kernel's socket buffer instead of turning into queued answers here.
    if (!this.readPaused && this.output.writableLength > READ_PAUSE_OUTPUT_BYTES) {
      this.readPaused = true;
      this.input.pause();
      this.output.once('drain', () => {
        this.readPaused = false;
        if (!this.closed) this.input.resume();
      });
    }
    return true;
  }

  async send(message: JSONRPCMessage): Promise<void> {
    this.writeRaw(message);
  }

  /**
   * A JSON-RPC result whose JSON text (`resultJson`, from JSON.stringify) is already made: the
   * pipeline serializes every result once to count its bytes, and a large answer is not
   * serialized a second time here.
   */
  sendResult(id: string | number, resultJson: string): void {
    this.writeLine(`{"result":${resultJson},"jsonrpc":"2.0","id":${JSON.stringify(id)}}`);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const unlogged = this.protocolErrors - MAX_LOGGED_PROTOCOL_ERRORS;
    if (unlogged > 0)
      this.opts.onProtocolError?.(`session ended; ${unlogged} protocol errors were not logged`);
    this.chunks = [];
    clearTimeout(this.partialTimer);
    this.input.off('data', this.onData);
    if (this.output === (this.input as unknown)) {
      // A socket: half-close so queued responses flush, then make sure it really goes away.
      const socket = this.output;
      if (!socket.destroyed) {
        socket.end();
        setTimeout(() => socket.destroy(), 2000).unref();
      }
    } else {
      this.input.pause();
      if (!isStdio(this.output) && !this.output.writableEnded) this.output.end();
    }
    this.onclose?.();
  }
}

/** Deepest bracket nesting of a JSON text, ignoring brackets inside strings. */
export function nestingDepth(text: string): number {
  return jsonShape(text, Infinity).depth;
}

/**
 * One linear pass over a JSON text (not yet known to be valid): its deepest nesting and how many
 * values it holds (each container, and each item or member after a comma: an upper bound that
 * is exact for valid JSON without empty containers). Stops counting once `maxValues` is passed.
 */
export function jsonShape(text: string, maxValues: number): { depth: number; values: number } {
  let depth = 0;
  let max = 0;
  let values = 1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x2c) {
      if (++values > maxValues) break;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) max = depth;
      if (++values > maxValues) break;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return { depth: max, values };
}

/**
 * The `id` member of a JSON-RPC frame that is not parsed (too large): a scan of the top-level
 * object only. A string or number id, else null.
 */
export function topLevelId(text: string): string | number | null {
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      const end = stringEnd(text, i);
      if (end < 0) return null;
      if (depth === 1 && expectKey) {
        expectKey = false;
        let j = end + 1;
        while (j < text.length && /\s/.test(text[j]!)) j++;
        if (text[j] !== ':') return null;
        if (text.slice(i, end + 1) === '"id"') return idValue(text, j + 1);
      }
      i = end;
    } else if (c === 0x7b || c === 0x5b) {
      depth++;
      expectKey = depth === 1 && c === 0x7b;
    } else if (c === 0x7d || c === 0x5d) depth--;
    else if (c === 0x2c && depth === 1) expectKey = true;
  }
  return null;
}

/** Index of the quote that closes the string opening at `start`, or -1. */
function stringEnd(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x5c) i++;
    else if (c === 0x22) return i;
  }
  return -1;
}

function idValue(text: string, from: number): string | number | null {
  let i = from;
  while (i < text.length && /\s/.test(text[i]!)) i++;
  let raw: string;
  if (text[i] === '"') {
    const end = stringEnd(text, i);
    if (end < 0 || end - i > 1024) return null;
    raw = text.slice(i, end + 1);
  } else {
    const m = /^-?[0-9][0-9.eE+-]{0,40}/.exec(text.slice(i, i + 48));
    if (!m) return null;
    raw = m[0];
  }
  try {
    const id = JSON.parse(raw) as unknown;
    return typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id)) ? id : null;
  } catch {
    return null;
  }
}

function isStdio(stream: Writable): boolean {
  return stream === process.stdout || stream === process.stderr;
}
