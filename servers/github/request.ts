// The github server's request layer: the innermost Octokit request hook, which sends the request
// itself instead of handing it to @octokit/request's fetchWrapper. Octokit still builds every
// request (route, URL template, parameter encoding, headers: `octokit.request.endpoint`); this
// layer sends it with the client's fetch (fetch.ts) and shapes the answer and the errors exactly
// as fetchWrapper does (an HttpError RequestError, 500 without a response for a request that got
// no answer, the authorization header redacted in the error). Why: fetchWrapper parses every JSON
// answer with json-with-bigint, and @octokit/rest's request-log plugin parses each request's
// endpoint a second time just to log it (to our no-op logger); together ~0.1 ms of CPU per
// request, a quarter of a loopback request's whole cost (bench/github.ts). JSON.parse is enough:
// GitHub's numbers (ids, counts) are below 2^53, and the tools' output schemas take numbers, not
// BigInts.
import { RequestError } from '@octokit/request-error';
import type { Octokit } from '@octokit/rest';

interface RequestOptions {
  method: string;
  url: string;
  headers: Record<string, string | number | undefined>;
  body?: unknown;
  request?: {
    fetch?: typeof fetch;
    signal?: AbortSignal;
    redirect?: RequestInit['redirect'];
    parseSuccessResponseBody?: boolean;
  };
}

interface Answer {
  url: string;
  status: number;
  headers: Record<string, string>;
  data: unknown;
}

/** Octokit's own test for a body it sends as JSON. */
function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  if (Object.prototype.toString.call(value) !== '[object Object]') return false;
  const proto = Object.getPrototypeOf(value) as object | null;
  return proto === null || proto === Object.prototype;
}

/** The body as fetchWrapper reads it: JSON parsed (the text if it does not parse), text, or bytes. */
async function answerData(res: Response): Promise<unknown> {
  const contentType = res.headers.get('content-type');
  if (!contentType) return res.text().catch(() => '');
  const [type = '', ...params] = contentType.split(';').map((p) => p.trim().toLowerCase());
  if (type === 'application/json' || type === 'application/scim+json') {
    const text = await res.text();
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return text;
    }
  }
  const utf8 = params.some((p) => /^charset="?utf-8"?$/.test(p));
  if (type.startsWith('text/') || (utf8 && type !== 'application/octet-stream'))
    return res.text().catch(() => '');
  return res.arrayBuffer().catch(() => new ArrayBuffer(0));
}

/** fetchWrapper's error message for an error answer. */
function errorMessage(data: unknown): string {
  if (typeof data === 'string') return data;
  if (data instanceof ArrayBuffer) return 'Unknown error';
  if (typeof data === 'object' && data !== null && 'message' in data) {
    const d = data as { message: unknown; documentation_url?: unknown; errors?: unknown };
    const suffix = 'documentation_url' in d ? ` - ${String(d.documentation_url)}` : '';
    return Array.isArray(d.errors)
      ? `${String(d.message)}: ${d.errors.map((v) => JSON.stringify(v)).join(', ')}${suffix}`
      : `${String(d.message)}${suffix}`;
  }
  return `Unknown error: ${JSON.stringify(data)}`;
}

/** A request that got no answer, as fetchWrapper reports it: status 500, no response, the cause kept. */
function unanswered(error: unknown, request: RequestOptions): Error {
  if (error instanceof Error && error.name === 'AbortError') {
    (error as Error & { status?: number }).status = 500;
    return error;
  }
  let message = 'Unknown Error';
  if (error instanceof Error) {
    message = error.message;
    if (error.name === 'TypeError' && 'cause' in error) {
      if (error.cause instanceof Error) message = error.cause.message;
      else if (typeof error.cause === 'string') message = error.cause;
    }
  }
  const err = new RequestError(message, 500, { request: request as never });
  err.cause = error;
  return err;
}

async function send(o: RequestOptions): Promise<Answer> {
  const fetchImpl = o.request?.fetch ?? globalThis.fetch;
  const body =
    isPlainObject(o.body) || Array.isArray(o.body) ? JSON.stringify(o.body) : (o.body as RequestInit['body']);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(o.headers)) headers[name] = String(value);
  let res: Response;
  try {
    res = await fetchImpl(o.url, {
      method: o.method,
      body,
      redirect: o.request?.redirect,
      headers,
      signal: o.request?.signal,
    });
  } catch (error) {
    throw unanswered(error, o);
  }
  const answer: Answer = {
    url: res.url,
    status: res.status,
    headers: Object.fromEntries(res.headers),
    data: '',
  };
  const fail = (message: string) =>
    new RequestError(message, answer.status, { response: answer as never, request: o as never });
  if (answer.status === 204 || answer.status === 205) return answer;
  if (o.method === 'HEAD') {
    if (answer.status < 400) return answer;
    throw fail(res.statusText);
  }
  if (answer.status === 304) {
    answer.data = await answerData(res);
    throw fail('Not modified');
  }
  if (answer.status >= 400) {
    answer.data = await answerData(res);
    throw fail(errorMessage(answer.data));
  }
  answer.data = o.request?.parseSuccessResponseBody === false ? res.body : await answerData(res);
  return answer;
}

/**
 * Makes this layer the innermost request hook of `octokit` (install it before any other hook:
 * later ones wrap around it). Octokit's own request, and the request-log plugin around it, are
 * not called.
 */
export function installGithubRequest(octokit: Octokit): void {
  octokit.hook.wrap('request', async (_octokitRequest, options) => {
    // The options are already merged with the client's defaults (Octokit does that before the
    // hooks); parsing them gives the method, URL, headers and body fetchWrapper would get.
    const request = octokit.request.endpoint.parse(options as never) as unknown as RequestOptions;
    return (await send(request)) as never;
  });
}
