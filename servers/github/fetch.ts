// The fetch the github server's Octokit sends its requests with: node:http(s) over a keep-alive
// pool of the team's own, instead of the global (undici) fetch. Per request undici's fetch
// builds WHATWG Request, Headers and Response objects and reads the body through web streams;
// against a loopback API that cost ~0.35 ms of CPU per request, twice what the request itself
// costs (bench/github.ts, README "Speed"). What it guarantees:
// - requests go only to the policy's API origin (Octokit builds every URL from it; anything
//   else is refused here, so the credential cannot go elsewhere);
// - a redirect is never followed (the token would go along): a 3xx becomes a 400 carrying the
//   target in a marker header, which is not retried and is reported as a redirect;
// - the request's signal (the session and the policy's timeoutMs) ends it at any point, body
//   included;
// - pooled connections belong to one team's client; closing it (a policy change) closes the idle
//   ones at once and lets requests in flight finish, their connections closing once idle;
// - a read (GET/HEAD) that fails because the server closed an idle pooled connection just as it
//   was reused is sent once more on a new one; a write never is (limits.ts never retries writes).
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import zlib from 'node:zlib';
import { REDIRECT_REFUSED } from './client.js';
import { cleanLine } from './text.js';

/** Idle pooled connections are closed after this (GitHub's load balancers drop them later than that). */
const IDLE_SOCKET_MS = 15_000;

/** The parts of a Response that Octokit reads (@octokit/request fetchWrapper), over a buffered body. */
class BufferedResponse {
  readonly ok: boolean;
  readonly redirected = false;
  readonly type = 'basic';
  readonly headers: ResponseHeaders;
  constructor(
    readonly status: number,
    readonly statusText: string,
    readonly url: string,
    headers: http.IncomingHttpHeaders | Record<string, string>,
    private readonly bytes: Buffer,
  ) {
    this.ok = status >= 200 && status < 300;
    this.headers = new ResponseHeaders(headers);
  }
  text(): Promise<string> {
    return Promise.resolve(this.bytes.toString('utf8'));
  }
  json(): Promise<unknown> {
    return this.text().then((t) => JSON.parse(t) as unknown);
  }
  arrayBuffer(): Promise<ArrayBuffer> {
    const { buffer, byteOffset, byteLength } = this.bytes;
    return Promise.resolve(buffer.slice(byteOffset, byteOffset + byteLength) as ArrayBuffer);
  }
  get body(): ReadableStream<Uint8Array> {
    const bytes = new Uint8Array(this.bytes);
    return new ReadableStream({
      start(c) {
        c.enqueue(bytes);
        c.close();
      },
    });
  }
}

/** Response headers by lower-case name; repeated headers joined with ", " as fetch does. */
class ResponseHeaders {
  private readonly map = new Map<string, string>();
  constructor(headers: http.IncomingHttpHeaders | Record<string, string>) {
    for (const [name, value] of Object.entries(headers)) {
      if (value !== undefined) this.map.set(name, Array.isArray(value) ? value.join(', ') : value);
    }
  }
  get(name: string): string | null {
    return this.map.get(name.toLowerCase()) ?? null;
  }
  has(name: string): boolean {
    return this.map.has(name.toLowerCase());
  }
  entries(): IterableIterator<[string, string]> {
    return this.map.entries();
  }
  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.map.entries();
  }
}

/** The answer that stands for a redirect Airlock did not follow. */
function redirectRefused(status: number, location: string | undefined, url: URL): BufferedResponse {
  const body = Buffer.from(JSON.stringify({ message: `redirect (${status}) refused` }));
  const target = cleanLine(location, 300).text || '(no location)';
  const headers = { 'content-type': 'application/json', [REDIRECT_REFUSED]: target };
  return new BufferedResponse(400, 'Bad Request', url.href, headers, body);
}

/** What undici's fetch throws when a request ends without an answer; Octokit reads the cause. */
function fetchFailed(cause: unknown): TypeError {
  return new TypeError('fetch failed', { cause });
}

/** The error an aborted fetch rejects with: the signal's reason (a TimeoutError for the deadline), as fetch does. */
function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new DOMException('This operation was aborted', 'AbortError');
}

const DECODERS: Record<string, () => NodeJS.ReadWriteStream> = {
  gzip: () => zlib.createGunzip(),
  'x-gzip': () => zlib.createGunzip(),
  deflate: () => zlib.createInflate(),
  br: () => zlib.createBrotliDecompress(),
};

export interface GithubFetch {
  fetch: typeof fetch;
  /** Closes the idle pooled connections; those in use close once their request is done. */
  close(): void;
}

/** A fetch for one team's Octokit, to `apiUrl`'s origin only. */
export function createGithubFetch(apiUrl: string): GithubFetch {
  const origin = new URL(apiUrl).origin;
  const secure = origin.startsWith('https:');
  const agent = secure
    ? new https.Agent({ keepAlive: true, timeout: IDLE_SOCKET_MS })
    : new http.Agent({ keepAlive: true, timeout: IDLE_SOCKET_MS });
  const send = secure ? https.request : http.request;

  /** One try. A failure carries `stale` when it was a pooled connection the server had closed. */
  function once(url: URL, init: RequestInit, body: string | Buffer | undefined): Promise<BufferedResponse> {
    const signal = init.signal ?? undefined;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortReason(signal));
      let settled = false;
      let answered = false;
      const onAbort = () => {
        req.destroy();
        finish(abortReason(signal!));
      };
      const finish = (err: unknown, res?: BufferedResponse) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        if (res) resolve(res);
        else reject(err as Error);
      };
      const headers =
        init.headers instanceof Headers
          ? Object.fromEntries(init.headers)
          : (init.headers as Record<string, string> | undefined);
      const req = send(
        url,
        {
          method: init.method ?? 'GET',
          headers: { 'accept-encoding': 'gzip, deflate, br', ...headers },
          agent,
        },
        (res) => {
          answered = true;
          const status = res.statusCode ?? 0;
          if (status >= 300 && status < 400 && status !== 304) {
            res.destroy();
            finish(undefined, redirectRefused(status, res.headers.location, url));
            return;
          }
          const coding = res.headers['content-encoding']?.trim().toLowerCase();
          const decoder = coding ? DECODERS[coding] : undefined;
          const stream: NodeJS.ReadableStream = decoder ? res.pipe(decoder()) : res;
          const chunks: Buffer[] = [];
          stream.on('data', (chunk: Buffer) => chunks.push(chunk));
          stream.on('error', (err) => finish(fetchFailed(err)));
          res.on('error', (err) => finish(fetchFailed(err)));
          // A connection that closes before the body is complete is a failure, not a short body.
          res.on('close', () => {
            if (!res.complete)
              finish(fetchFailed(new Error('the connection closed before the answer was complete')));
          });
          stream.on('end', () =>
            finish(
              undefined,
              new BufferedResponse(
                status,
                res.statusMessage ?? '',
                url.href,
                res.headers,
                Buffer.concat(chunks),
              ),
            ),
          );
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => {
        const stale = !answered && req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE');
        finish(Object.assign(fetchFailed(err), { stale }));
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      req.end(body);
    });
  }

  const githubFetch = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    if (url.origin !== origin) {
      throw fetchFailed(new Error(`refused: ${url.origin} is not the policy's GitHub API (${origin})`));
    }
    const raw = init.body;
    if (raw != null && typeof raw !== 'string' && !(raw instanceof Uint8Array)) {
      throw fetchFailed(new Error('request bodies are strings or bytes'));
    }
    const body = raw == null ? undefined : typeof raw === 'string' ? raw : Buffer.from(raw);
    const read = ['GET', 'HEAD'].includes((init.method ?? 'GET').toUpperCase());
    try {
      return (await once(url, init, body)) as unknown as Response;
    } catch (err) {
      // The server closed an idle pooled connection just as it was reused: nothing was processed.
      if (!read || !(err as { stale?: boolean }).stale) throw err;
      return (await once(url, init, body)) as unknown as Response;
    }
  };
  let closed = false;
  const idleSockets = () => Object.values(agent.freeSockets).flatMap((list) => list ?? []);
  // After close() a connection that goes idle is not kept (the agent's own listener, which runs
  // first, has just put it among the free ones, unless a waiting request took it).
  agent.on('free', (socket: Socket) => {
    if (closed && idleSockets().includes(socket)) socket.destroy();
  });
  const close = () => {
    closed = true;
    for (const socket of idleSockets()) socket.destroy();
  };
  return { fetch: githubFetch as typeof fetch, close };
}
