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
/** Queued responses past which the peer's further requests are not read until it catches up. */
export const READ_PAUSE_OUTPUT_BYTES = 1024 * 1024;
/** A frame must be complete this long after its first byte (a half-sent frame holds memory). */
export const FRAME_COMPLETION_MS = 60_000;
/** A peer that sends this many broken frames in a row is not an MCP client. */
const MAX_CONSECUTIVE_BAD_FRAMES = 16;

export interface NdjsonTransportOptions {
  maxFrameBytes?: number;
  maxPendingOutputBytes?: number;
  frameCompletionMs?: number;
  /** Called for protocol violations (oversized frame, bad JSON) — for logging. */
  onProtocolError?: (message: string) => void;
}

const NEWLINE = 0x0a;

export class NdjsonTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;
  sessionId?: string;

  private chunks: Buffer[] = [];
  private partialTimer: NodeJS.Timeout | undefined;
  private buffered = 0;
  private closed = false;
  private badFrames = 0;
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
        this.opts.onProtocolError?.('frame not completed in time; closing the session');
        void this.close();
      }, this.opts.frameCompletionMs ?? FRAME_COMPLETION_MS).unref();
    }
  };

  private handleFrame(frame: Buffer): void {
    let text = frame.toString('utf8');
    if (text.endsWith('\r')) text = text.slice(0, -1);
    if (text.trim().length === 0) return;
    if (nestingDepth(text) > MAX_NESTING_DEPTH) {
      return this.badFrame(-32600, `Invalid Request: frame nests deeper than ${MAX_NESTING_DEPTH} levels`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return this.badFrame(-32700, 'Parse error: frame is not valid JSON');
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

  private badFrame(code: number, message: string, id: string | number | null = null): void {
    this.opts.onProtocolError?.(message);
    this.writeRaw({ jsonrpc: '2.0', id, error: { code, message } });
    if (++this.badFrames >= MAX_CONSECUTIVE_BAD_FRAMES) void this.close();
  }

  private oversized(): void {
    const message = `frame exceeds ${this.maxFrame} bytes; closing the session`;
    this.opts.onProtocolError?.(message);
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
    if (this.closed || this.output.destroyed || this.output.writableEnded) return false;
    if (this.output.writableLength > this.maxPending) {
      this.opts.onProtocolError?.('peer is not reading its responses; closing the session');
      void this.close();
      return false;
    }
    this.output.write(JSON.stringify(message) + '\n');
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

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
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
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) max = depth;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}

function isStdio(stream: Writable): boolean {
  return stream === process.stdout || stream === process.stderr;
}
