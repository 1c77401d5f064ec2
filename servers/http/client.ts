// The hardened upstream client behind http_request. What it guarantees, whatever the upstream
// or the agent does:
// - DNS is resolved once per hop, every address is classified (addresses.ts), and the socket is
//   pinned to the checked address through a `lookup` that returns only it. The URL's host name
//   still drives SNI, certificate verification and the Host header, so TLS is unchanged, and a
//   second (rebinding) DNS answer is never consulted.
// - Connections are reused only within a pool keyed by (team, origin, checked address): a pooled
//   socket goes to exactly the address this call checked, for the TLS name it was made for,
//   and never carries another team's requests.
// - Redirects are never followed blindly: every hop is planned again by the caller's policy
//   (`planHop`), which also decides that hop's headers, so a credential only goes to the origin
//   it was injected for. At most `maxRedirects` hops.
// - One deadline (`timeoutMs`) covers DNS, connect, headers and body over all hops, together
//   with the caller's cancellation signal.
// - The body is capped at `maxResponseBytes` on the wire and after decompression; once the cap is
//   hit the socket is destroyed rather than drained.
import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { isIP, type LookupFunction, type Socket } from 'node:net';
import type { Readable, Transform, Writable } from 'node:stream';
import zlib from 'node:zlib';
import { ToolError } from '../../src/tool.js';
import { classifyAddress, ipLiteralOf, isMetadataHostname } from '../../src/net/addresses.js';
import { untilAborted, type AbortLike } from '../../src/pipeline/abort.js';

export interface ResolvedAddress {
  address: string;
  family: number;
}

/** Resolves a host name to all of its addresses (the seam tests use to prove pinning). */
export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

const systemResolver: Resolver = (hostname) => dns.promises.lookup(hostname, { all: true, verbatim: true });

/** What the policy says about one hop (the first request, or a redirect target). */
export interface HopPlan {
  /** The complete request headers for this hop (sanitized caller headers + this origin's injection). */
  headers: Record<string, string>;
  /** From the matched policy entry: loopback/private addresses are acceptable. */
  allowPrivateAddress: boolean;
  /** Policy path named when the address check refuses (e.g. `http.hosts[0].allowPrivateAddress`). */
  addressRule: string;
}

export interface HopRequest {
  method: string;
  url: URL;
  /** 0 for the first request, n for the n-th redirect. */
  hop: number;
}

export interface UpstreamRequest {
  method: string;
  url: URL;
  body?: Buffer;
  /** Checks a hop against the policy and returns its headers; throws ToolError('denied') to refuse. */
  planHop(hop: HopRequest): Promise<HopPlan>;
  maxResponseBytes: number;
  timeoutMs: number;
  signal: AbortSignal;
  maxRedirects?: number;
  resolve?: Resolver;
  /** Keeps pooled connections apart (the calling team); requests with different keys never share one. */
  poolKey?: string;
}

export interface UpstreamResponse {
  status: number;
  statusText: string;
  /** Response headers as Node parsed them (lower-case names); without content-encoding/-length once decoded. */
  headers: http.IncomingHttpHeaders;
  /** The body after content decoding (every listed coding; an unknown one is refused). */
  body: Buffer;
  truncated: boolean;
  /** The URL that produced this response. */
  url: URL;
  /** Redirect targets followed, in order. */
  redirects: string[];
}

const DEFAULT_MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const ACCEPT_ENCODING = 'gzip, deflate, br';

export async function sendUpstream(req: UpstreamRequest): Promise<UpstreamResponse> {
  const maxRedirects = req.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
  const resolve = req.resolve ?? systemResolver;
  // One deadline and one timer, both released when the call ends.
  const deadline = new Deadline();
  const onCancel = () => deadline.abort(req.signal.reason);
  if (req.signal.aborted) onCancel();
  else req.signal.addEventListener('abort', onCancel, { once: true });
  const timer = setTimeout(() => {
    const timeout = new Error(`upstream did not complete within ${req.timeoutMs} ms`);
    timeout.name = 'TimeoutError';
    deadline.abort(timeout);
  }, req.timeoutMs);
  const describeAbort = () =>
    req.signal.aborted
      ? new ToolError('request cancelled', 'upstream')
      : new ToolError(`upstream did not complete within ${req.timeoutMs} ms (http.timeoutMs)`, 'upstream');

  let method = req.method;
  let url = req.url;
  let body = req.body;
  const redirects: string[] = [];
  try {
    for (let hop = 0; ; hop++) {
      if (deadline.aborted) throw describeAbort();
      const plan = await untilAborted(req.planHop({ method, url, hop }), deadline); // may fetch secrets
      const pinned = await untilAborted(pinAddress(url, plan, resolve), deadline);
      const headers: Record<string, string> = { ...plan.headers, 'accept-encoding': ACCEPT_ENCODING };
      if (body !== undefined) headers['content-length'] = String(body.length);
      const res = await openResponse(method, url, headers, body, pinned, deadline, req.poolKey ?? '');
      const location = res.headers.location;
      if (REDIRECT_STATUSES.has(res.statusCode ?? 0) && location) {
        res.destroy();
        if (redirects.length >= maxRedirects) {
          throw new ToolError(
            `too many redirects: stopped after ${maxRedirects} (last target ${location})`,
            'upstream',
          );
        }
        let next: URL;
        try {
          next = new URL(location, url);
        } catch {
          throw new ToolError(
            `upstream redirected to an invalid URL: ${JSON.stringify(location)}`,
            'upstream',
          );
        }
        // As browsers do: 303, and 301/302 for anything but GET/HEAD, turn into a body-less GET;
        // 307/308 repeat the same method and body.
        if ([301, 302, 303].includes(res.statusCode ?? 0) && method !== 'GET' && method !== 'HEAD') {
          method = 'GET';
          body = undefined;
        }
        url = next;
        redirects.push(next.href);
        continue;
      }
      const {
        body: responseBody,
        truncated,
        unwrapped,
      } = await readBody(res, req.maxResponseBytes, deadline);
      const responseHeaders = { ...res.headers };
      if (unwrapped) {
        // These described the compressed wire body, not the one we return.
        delete responseHeaders['content-encoding'];
        delete responseHeaders['content-length'];
      }
      return {
        status: res.statusCode ?? 0,
        statusText: res.statusMessage ?? '',
        headers: responseHeaders,
        body: responseBody,
        truncated,
        url,
        redirects,
      };
    }
  } catch (err) {
    if (err instanceof ToolError) throw err;
    if (deadline.aborted) throw describeAbort();
    throw new ToolError(`request to ${url.origin} failed: ${networkErrorText(err)}`, 'upstream');
  } finally {
    clearTimeout(timer);
    req.signal.removeEventListener('abort', onCancel);
  }
}

/**
 * A call's deadline: the caller's cancellation or the timeout, whichever comes first. A listener
 * set rather than an AbortController: EventTarget's bookkeeping for the listener changes each call
 * makes (the hops, the response head, the body) cost more than the rest of sendUpstream's own code.
 * Listeners run once, as with `{ once: true }`; none are added once it has fired.
 */
class Deadline implements AbortLike {
  aborted = false;
  reason: unknown = undefined;
  private readonly listeners = new Set<() => void>();

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const listeners = [...this.listeners];
    this.listeners.clear();
    for (const listener of listeners) listener();
  }

  addEventListener(_type: 'abort', listener: () => void, _options?: { once?: boolean }): void {
    if (!this.aborted) this.listeners.add(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    this.listeners.delete(listener);
  }
}

function networkErrorText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ? `${e.code}` : e.message || String(err);
}

/** Resolves the hop's host once, checks every address, and returns the one to connect to. */
async function pinAddress(url: URL, plan: HopPlan, resolve: Resolver): Promise<ResolvedAddress> {
  const host = url.hostname;
  if (isMetadataHostname(host)) {
    throw new ToolError(
      `${host} is a cloud metadata endpoint, which is never reachable`,
      'denied',
      'http.hosts',
    );
  }
  const literal = ipLiteralOf(host);
  const addresses = literal ? [{ address: literal, family: isIP(literal) }] : await resolve(host);
  if (addresses.length === 0) throw new ToolError(`${host} did not resolve to any address`, 'upstream');
  for (const { address } of addresses) {
    const verdict = classifyAddress(address);
    if (verdict.kind === 'metadata') {
      throw new ToolError(
        `${host} resolves to ${address}, a cloud metadata endpoint, which is never reachable`,
        'denied',
        'http.hosts',
      );
    }
    if (verdict.kind === 'private' && !plan.allowPrivateAddress) {
      throw new ToolError(
        `${host} resolves to ${address} (${verdict.range}), which is not a public address; ` +
          `only a policy entry with allowPrivateAddress: true may reach it`,
        'denied',
        plan.addressRule,
      );
    }
  }
  const first = addresses[0]!;
  return { address: first.address, family: first.family === 6 ? 6 : 4 };
}

/** A `lookup` for net.connect that only ever answers with the address we checked. */
function pinnedLookup(pinned: ResolvedAddress): LookupFunction {
  return (_hostname, options, callback) => {
    if (options.all) callback(null, [{ address: pinned.address, family: pinned.family }]);
    else callback(null, pinned.address, pinned.family);
  };
}

/** Most keep-alive pools kept at once; the least recently used is closed beyond that. */
const MAX_POOLS = 256;
const MAX_SOCKETS_PER_POOL = 64;
const pools = new Map<string, http.Agent>();

/** Connections of the keep-alive pools, in use and idle (telemetry's http.client.open_connections). */
export function openConnections(): { active: number; idle: number } {
  let active = 0;
  let idle = 0;
  for (const agent of pools.values()) {
    for (const list of Object.values(agent.sockets)) active += list?.length ?? 0;
    for (const list of Object.values(agent.freeSockets)) idle += list?.length ?? 0;
  }
  return { active, idle };
}

function agentFor(poolKey: string, url: URL, pinned: ResolvedAddress): http.Agent {
  const key = `${poolKey}\0${url.origin}\0${pinned.address}`;
  let agent = pools.get(key);
  if (agent) {
    pools.delete(key); // most recently used goes last
  } else {
    // As many idle connections kept as may be in use: with fewer, every burst of concurrent calls
    // closes the surplus as it goes idle and dials them again for the next (at 64 sessions, one
    // new TCP connection for every three calls).
    const options = {
      keepAlive: true,
      maxSockets: MAX_SOCKETS_PER_POOL,
      maxFreeSockets: MAX_SOCKETS_PER_POOL,
      timeout: 15_000,
      scheduling: 'lifo' as const,
    };
    agent = url.protocol === 'https:' ? new https.Agent(options) : new http.Agent(options);
    // An idle pooled connection never keeps the broker alive (openResponse refs it while in use).
    agent.on('free', (socket: Socket) => socket.unref());
    if (pools.size >= MAX_POOLS) {
      const [oldestKey, oldest] = pools.entries().next().value as [string, http.Agent];
      pools.delete(oldestKey);
      oldest.destroy();
    }
  }
  pools.set(key, agent);
  return agent;
}

function openResponse(
  method: string,
  url: URL,
  headers: Record<string, string>,
  body: Buffer | undefined,
  pinned: ResolvedAddress,
  deadline: Deadline,
  poolKey: string,
): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const options: https.RequestOptions = {
      method,
      hostname: ipLiteralOf(url.hostname) ?? url.hostname,
      port: url.port || (url.protocol === 'https:' ? 443 : 80),
      path: url.pathname + url.search,
      headers,
      agent: agentFor(poolKey, url, pinned),
      // New pooled connections dial the checked address only.
      lookup: pinnedLookup(pinned),
      // Never let NODE_TLS_REJECT_UNAUTHORIZED (or anything else) weaken verification.
      rejectUnauthorized: true,
    };
    // Until the response head arrives the deadline destroys the request; readBody takes over after.
    // It also settles the promise itself: destroying an already destroyed request emits nothing.
    const onAbort = () => {
      const reason = deadline.reason instanceof Error ? deadline.reason : new Error('aborted');
      request.destroy(reason);
      reject(reason);
    };
    let settled = false;
    const request = (url.protocol === 'https:' ? https : http).request(options, (res) => {
      settled = true;
      deadline.removeEventListener('abort', onAbort);
      resolve(res);
    });
    request.on('socket', (socket: Socket) => socket.ref());
    request.on('error', (err) => {
      deadline.removeEventListener('abort', onAbort);
      reject(err);
    });
    // An unrequested 101 (or a CONNECT-style answer) makes Node drop the socket with neither a
    // response nor an error; take the socket to close it, and fail the call at once.
    request.on('upgrade', (_res, socket: Socket) => {
      socket.destroy();
      deadline.removeEventListener('abort', onAbort);
      reject(
        new ToolError(
          `upstream answered 101 Switching Protocols, which http_request does not support`,
          'upstream',
        ),
      );
    });
    // Any other way the request can close without an answer. (Every answered request closes
    // too: an Error made then, only to be dropped, was 5 % of the client's CPU.)
    request.on('close', () => {
      if (settled) return;
      deadline.removeEventListener('abort', onAbort);
      reject(new Error('upstream closed the connection without a response'));
    });
    if (deadline.aborted) return onAbort();
    deadline.addEventListener('abort', onAbort, { once: true });
    request.end(body);
  });
}

/** Stacked codings past this are refused: no server needs them, and each layer multiplies a bomb. */
const MAX_CONTENT_CODINGS = 3;

function codingDecoder(coding: string): Transform | null | undefined {
  // SYNC_FLUSH: a body cut at the wire cap still yields everything decodable so far.
  switch (coding) {
    case 'identity':
      return null;
    case 'gzip':
    case 'x-gzip':
      return zlib.createGunzip({ finishFlush: zlib.constants.Z_SYNC_FLUSH });
    case 'deflate': // the zlib format (RFC 9110); a raw deflate stream fails to decode and is reported
      return zlib.createInflate({ finishFlush: zlib.constants.Z_SYNC_FLUSH });
    case 'br':
      return zlib.createBrotliDecompress({ finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH });
    default:
      return undefined;
  }
}

/**
 * The decoder for a Content-Encoding list (codings in the order they were applied, so decoded
 * last to first), null for none. Every coding is decoded, so a credential the upstream echoes
 * under `gzip, gzip` is scrubbed like any other; a coding Airlock cannot decode is refused
 * rather than handed over undecoded and unscrubbed.
 */
interface Decoder {
  input: Writable;
  output: Readable;
  destroy(): void;
}

function decoderFor(contentEncoding: string | undefined): Decoder | null {
  const codings = (contentEncoding ?? '')
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && c !== 'identity');
  if (codings.length > MAX_CONTENT_CODINGS) {
    throw new ToolError(
      `the upstream answered with ${codings.length} stacked content codings (${contentEncoding}); at most ${MAX_CONTENT_CODINGS} are decoded`,
    );
  }
  const decoders: Transform[] = [];
  for (const coding of codings.reverse()) {
    const decoder = codingDecoder(coding);
    if (!decoder) {
      for (const d of decoders) d.destroy();
      throw new ToolError(
        `the upstream answered with content-encoding ${JSON.stringify(coding)}, which Airlock cannot decode, so the body cannot be checked for credentials; it was not returned`,
      );
    }
    decoders.push(decoder);
  }
  if (decoders.length === 0) return null;
  const output = decoders.at(-1)!;
  for (let i = 0; i + 1 < decoders.length; i++) {
    decoders[i]!.pipe(decoders[i + 1]!);
    // An inner layer's failure is the body's failure.
    decoders[i]!.on('error', (err) => output.destroy(err));
  }
  return { input: decoders[0]!, output, destroy: () => decoders.forEach((d) => d.destroy()) };
}

/** Reads the body up to `maxBytes` on the wire and after decoding, destroying the socket at the cap. */
function readBody(
  res: http.IncomingMessage,
  maxBytes: number,
  deadline: Deadline,
): Promise<{ body: Buffer; truncated: boolean; unwrapped: boolean }> {
  return new Promise((resolve, reject) => {
    let decoder: Decoder | null;
    try {
      decoder = decoderFor(res.headers['content-encoding']);
    } catch (err) {
      res.destroy();
      return reject(err as Error);
    }
    const unwrapped = decoder !== null;
    const kept: Buffer[] = [];
    let keptBytes = 0;
    let wireBytes = 0;
    let truncated = false;
    let fed = false;
    let inputEnded = false;
    let done = false;

    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      deadline.removeEventListener('abort', onAbort);
      // A body read to its end leaves the connection to the keep-alive pool; anything else
      // (an error, the cap, the deadline) destroys it rather than draining.
      if (err || truncated || !inputEnded) res.destroy();
      decoder?.destroy();
      if (err) reject(err);
      else resolve({ body: Buffer.concat(kept), truncated, unwrapped });
    };
    const onAbort = () => finish(deadline.reason instanceof Error ? deadline.reason : new Error('aborted'));
    const keep = (chunk: Buffer) => {
      if (done) return;
      const room = maxBytes - keptBytes;
      if (chunk.length > room) {
        kept.push(chunk.subarray(0, room));
        keptBytes = maxBytes;
        truncated = true;
        finish();
        return;
      }
      kept.push(chunk);
      keptBytes += chunk.length;
    };

    if (deadline.aborted) return onAbort();
    deadline.addEventListener('abort', onAbort, { once: true });

    if (decoder) {
      decoder.output.on('data', keep);
      decoder.output.on('end', () => finish());
      decoder.output.on('error', (err) => {
        // A body we cut ourselves may end mid-stream; keep what decoded.
        if (truncated) finish();
        else
          finish(
            new ToolError(
              `response body could not be decoded (${res.headers['content-encoding']}): ${err.message}`,
            ),
          );
      });
    }
    const feed = (chunk: Buffer) => {
      fed = true;
      if (decoder) decoder.input.write(chunk);
      else keep(chunk);
    };
    const endOfInput = () => {
      if (inputEnded) return;
      inputEnded = true;
      if (decoder && fed) decoder.input.end();
      else finish();
    };

    res.on('data', (chunk: Buffer) => {
      if (done) return;
      wireBytes += chunk.length;
      if (wireBytes > maxBytes) {
        truncated = true;
        feed(chunk.subarray(0, chunk.length - (wireBytes - maxBytes)));
        endOfInput();
        res.destroy(); // stop reading: no draining of an oversized body
        return;
      }
      feed(chunk);
    });
    res.on('end', endOfInput);
    // Once we stopped reading (cap or end), the socket's own teardown is not an upstream failure.
    res.on('error', (err) => {
      if (!inputEnded) finish(err);
    });
    res.on('aborted', () => {
      if (!inputEnded) finish(new Error('upstream closed the connection mid-response'));
    });
  });
}
