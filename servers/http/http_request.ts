// http_request: one HTTP call to an upstream the team policy allows, made on the host, with the
// policy's credential injected outside the sandbox. Schema, policy check and handler live here;
// the hardened transport (DNS pinning, redirects, caps, deadline) is client.ts.
import { isUtf8 } from 'node:buffer';
import { z } from 'zod';
import { matchAny } from '../../src/policy/glob.js';
import {
  allow,
  defineTool,
  deny,
  globCondition,
  oneOfCondition,
  ToolError,
  type Decision,
  type SecretAccess,
} from '../../src/tool.js';
import { classifyHostname } from '../../src/net/addresses.js';
import type { Resolver, UpstreamResponse } from './client.js';
import { cutSecretTail } from '../../src/secrets/tail.js';
import { pathTrickProblem } from '../../src/net/path-tricks.js';
import {
  CLIENT_CONTROLLED_HEADERS,
  HEADER_NAME,
  HTTP_METHODS,
  SECRET_REF,
  type HostEntry,
  type HttpSection,
} from './section.js';

/** Largest request body sent upstream (UTF-8 bytes). */
/**
 * The transport (node:http, https, dns, zlib) loads on the first request, not with the server:
 * `airlock stdio http` answers tools/list without it.
 */
let client: typeof import('./client.js') | undefined;

const MAX_REQUEST_BODY_BYTES = 1024 * 1024;
const MAX_REQUEST_HEADERS = 64;
const MAX_HEADER_VALUE_BYTES = 8 * 1024;

/** Caller headers that could carry or replace credentials: always dropped. */
const CREDENTIAL_HEADER = /^(authorization|cookie|proxy-.*)$/;

/** What Node itself refuses in a header value (anything but tab, visible ASCII and obs-text). */
const INVALID_HEADER_VALUE_CHAR = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * Caller headers that many frameworks read as the real method or path (Google APIs, ASP.NET,
 * Express method-override, Symfony, IIS URL rewrite): a request the policy allowed as POST on
 * one path could otherwise act as a DELETE, or on another path. Always dropped.
 */
const OVERRIDE_HEADERS: ReadonlySet<string> = new Set([
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-original-method',
  'x-original-url',
  'x-rewrite-url',
]);

const input = z
  .object({
    method: z.enum(HTTP_METHODS).describe('Upper-case HTTP method'),
    url: z
      .string()
      .min(1)
      .max(8192)
      .describe('Absolute http(s) URL; its origin, method and path must be allowed by the team policy'),
    headers: z
      .record(z.string(), z.string())
      .optional()
      .describe(
        'Request headers. Authorization, Cookie, Proxy-* and connection headers are dropped: credentials come from the policy',
      ),
    body: z
      .string()
      .refine((b) => Buffer.byteLength(b, 'utf8') <= MAX_REQUEST_BODY_BYTES, {
        message: `body is larger than ${MAX_REQUEST_BODY_BYTES} bytes`,
      })
      .optional()
      .describe(`Request body as UTF-8 text (at most ${MAX_REQUEST_BODY_BYTES} bytes)`),
  })
  .strict();

/**
 * status, headers, body, truncated: as SPEC. Also:
 * - statusText: the upstream's reason phrase;
 * - bodyEncoding: `utf8` for textual/JSON/XML content (or untyped valid UTF-8), else `base64`;
 * - url: the URL that produced the response (after redirects);
 * - redirects: each redirect target followed, in order;
 * - droppedRequestHeaders: caller headers that were not sent (credentials, framing).
 * Response headers are lower-cased, `set-cookie` is dropped, and after decompression
 * `content-encoding`/`content-length` are dropped because they describe the wire body.
 */
const output = z.object({
  status: z.number().int(),
  statusText: z.string(),
  headers: z.record(z.string(), z.string()),
  body: z.string(),
  bodyEncoding: z.enum(['utf8', 'base64']),
  truncated: z.boolean(),
  url: z.string(),
  redirects: z.array(z.string()),
  droppedRequestHeaders: z.array(z.string()),
});

const options = z.object({}).strict();

export type HttpRequestArgs = z.output<typeof input>;
export type HttpRequestResult = z.output<typeof output>;

interface Match {
  entry: HostEntry;
  index: number;
}

const list = (items: Iterable<string>) => [...new Set(items)].join(', ');

/**
 * The policy decision for one request (the first one or a redirect hop). The WHATWG URL parser
 * decides origin and path, exactly as the connection will use them.
 */
export function checkRequest(
  section: HttpSection,
  method: string,
  rawUrl: string,
): { decision: Decision; match?: Match; url?: URL } {
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    return { decision: deny('http.hosts', `not an absolute URL: ${JSON.stringify(rawUrl)}`) };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return { decision: deny('http.hosts', `only http: and https: URLs are allowed, not ${url.protocol}`) };
  }
  if (url.username || url.password) {
    return {
      decision: deny(
        'http.hosts',
        'URLs with user info (user@ or user:pass@) are refused; credentials come from the policy',
      ),
    };
  }
  const hostClass = classifyHostname(url.hostname);
  if (hostClass?.kind === 'metadata') {
    return {
      decision: deny('http.hosts', `${url.hostname} is a cloud metadata endpoint, which is never reachable`),
    };
  }
  const sameOrigin: Match[] = section.hosts
    .map((entry, index) => ({ entry, index }))
    .filter(({ entry }) => entry.origin === url.origin);
  if (sameOrigin.length === 0) {
    const origins = list(section.hosts.map((h) => h.origin)) || '(none)';
    return {
      decision: deny(
        'http.hosts',
        `no policy entry allows origin ${url.origin}; allowed origins: ${origins}`,
      ),
    };
  }
  const first = sameOrigin[0]!;
  const trick = pathTrickProblem(url.pathname);
  if (trick) return { decision: deny(`http.hosts[${first.index}].paths`, trick) };
  const methodOk = sameOrigin.filter(({ entry }) => (entry.methods as readonly string[]).includes(method));
  if (methodOk.length === 0) {
    return {
      decision: deny(
        `http.hosts[${first.index}].methods`,
        `${method} is not allowed for ${url.origin}; allowed methods: ${list(sameOrigin.flatMap((m) => m.entry.methods))}`,
      ),
    };
  }
  const match = methodOk.find(({ entry }) => matchAny(entry.paths, url.pathname) !== undefined);
  if (!match) {
    return {
      decision: deny(
        `http.hosts[${methodOk[0]!.index}].paths`,
        `path ${url.pathname} is not allowed for ${method} ${url.origin}; allowed paths: ${list(methodOk.flatMap((m) => m.entry.paths))}`,
      ),
    };
  }
  if (hostClass?.kind === 'private' && !match.entry.allowPrivateAddress) {
    return {
      decision: deny(
        `http.hosts[${match.index}].allowPrivateAddress`,
        `${url.hostname} is a ${hostClass.range} address; only an entry with allowPrivateAddress: true may reach it`,
      ),
    };
  }
  return { decision: allow(`http.hosts[${match.index}]`), match, url };
}

/**
 * Validates the caller's headers and drops those it may not set. Names come back lower-case.
 * Throws ToolError('invalid') on anything that could split or smuggle a header.
 */
function sanitizeCallerHeaders(headers: Record<string, string> | undefined): {
  headers: Record<string, string>;
  dropped: string[];
} {
  // No prototype: a header named "__proto__" or "constructor" is just a header.
  const kept: Record<string, string> = Object.create(null) as Record<string, string>;
  const dropped: string[] = [];
  const entries = Object.entries(headers ?? {});
  if (entries.length > MAX_REQUEST_HEADERS) {
    throw new ToolError(`at most ${MAX_REQUEST_HEADERS} request headers are allowed`, 'invalid');
  }
  for (const [name, value] of entries) {
    if (/[\0\r\n]/.test(name) || /[\0\r\n]/.test(value)) {
      throw new ToolError(`header ${JSON.stringify(name)} contains CR, LF or NUL`, 'invalid');
    }
    if (!HEADER_NAME.test(name))
      throw new ToolError(`${JSON.stringify(name)} is not a valid header name`, 'invalid');
    if (INVALID_HEADER_VALUE_CHAR.test(value)) {
      throw new ToolError(`header ${name} has a control or non-Latin-1 character in its value`, 'invalid');
    }
    if (Buffer.byteLength(value) > MAX_HEADER_VALUE_BYTES) {
      throw new ToolError(`header ${name} is longer than ${MAX_HEADER_VALUE_BYTES} bytes`, 'invalid');
    }
    const lower = name.toLowerCase();
    if (Object.hasOwn(kept, lower)) throw new ToolError(`header ${name} is given twice`, 'invalid');
    if (
      CREDENTIAL_HEADER.test(lower) ||
      CLIENT_CONTROLLED_HEADERS.has(lower) ||
      OVERRIDE_HEADERS.has(lower)
    ) {
      dropped.push(name);
      continue;
    }
    kept[lower] = value;
  }
  return { headers: kept, dropped };
}

/**
 * Builds the inject header value on the host; the secret never passes through the agent. Each
 * secret value used is added to `used`.
 */
async function injectedValue(entry: HostEntry, secrets: SecretAccess, used: Set<string>): Promise<string> {
  const template = entry.inject!.value;
  const values = new Map<string, string>();
  for (const m of template.matchAll(SECRET_REF)) {
    const name = m[1]!;
    if (!values.has(name)) {
      const value = await secrets.get(name);
      values.set(name, value);
      used.add(value);
    }
  }
  const value = template.replace(SECRET_REF, (_ref, name: string) => values.get(name)!);
  if (INVALID_HEADER_VALUE_CHAR.test(value)) {
    // Name the header and secrets only: the value is the credential.
    throw new ToolError(
      `the ${entry.inject!.header} value for ${entry.origin} contains a control character (check secrets ${list(values.keys())})`,
      'upstream',
    );
  }
  return value;
}

const TEXTUAL_TYPE =
  /^(text\/|application\/(json|xml|javascript|ecmascript|x-www-form-urlencoded|graphql|yaml|x-yaml|x-ndjson)\b|[^;]*\+(json|xml)\b)/i;

function bodyEncodingFor(contentType: string | undefined, body: Buffer): 'utf8' | 'base64' {
  if (contentType) return TEXTUAL_TYPE.test(contentType.trim()) ? 'utf8' : 'base64';
  return !body.includes(0) && isUtf8(body) ? 'utf8' : 'base64';
}

const UTF8_CHARSETS = new Set(['utf-8', 'utf8', 'us-ascii', 'ascii', 'unicode-1-1-utf-8']);

/** `body` as text in the charset its content type names (UTF-8 when none); refuses one it cannot decode. */
function decodeText(body: Buffer, contentType: string | undefined): string {
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(contentType ?? '')?.[1]?.toLowerCase();
  if (charset === undefined || UTF8_CHARSETS.has(charset)) return body.toString('utf8');
  let decoder: InstanceType<typeof TextDecoder>;
  try {
    decoder = new TextDecoder(charset);
  } catch {
    throw new ToolError(
      `the upstream answered in charset ${JSON.stringify(charset)}, which Airlock cannot decode, so the body cannot be checked for credentials; it was not returned`,
    );
  }
  return decoder.decode(body);
}

function responseHeaders(res: UpstreamResponse): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(res.headers)) {
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    if (lower === 'set-cookie' || lower === 'set-cookie2') continue; // session credentials
    out[lower] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

const TEXT_HEADERS = ['content-type', 'content-length', 'location', 'retry-after'];

function render(result: HttpRequestResult, method: string, maxBytes: number): string {
  const lines = [`HTTP ${result.status} ${result.statusText}`.trimEnd() + ` (${method} ${result.url})`];
  if (result.redirects.length > 0) lines.push(`redirected ${result.redirects.length}x`);
  for (const name of TEXT_HEADERS) {
    if (result.headers[name] !== undefined) lines.push(`${name}: ${result.headers[name]}`);
  }
  if (result.droppedRequestHeaders.length > 0)
    lines.push(`(not sent: ${result.droppedRequestHeaders.join(', ')})`);
  lines.push('');
  if (result.bodyEncoding === 'utf8') lines.push(result.body);
  else
    lines.push(
      `[binary body, ${Buffer.from(result.body, 'base64').length} bytes; base64 in structuredContent.body]`,
    );
  if (result.truncated) lines.push(`[truncated at ${maxBytes} bytes (http.maxResponseBytes)]`);
  return lines.join('\n');
}

/** One part of a URL as the tool parses it; undefined when it does not parse (the call is refused anyway). */
function urlPart(raw: string, part: 'origin' | 'pathname'): string | undefined {
  try {
    return new URL(raw)[part];
  } catch {
    return undefined;
  }
}

export interface HttpRequestDeps {
  /** DNS seam (tests): defaults to dns.promises.lookup with all: true. */
  resolve?: Resolver;
}

export function createHttpRequestTool(deps: HttpRequestDeps = {}) {
  return defineTool<typeof input, typeof output, typeof options, HttpSection>({
    name: 'http_request',
    title: 'HTTP request',
    description:
      'Sends one HTTP request to an upstream allowed by the team policy (origin, method and path), adding the ' +
      "policy's credential header on the host. Redirects are followed only to allowed targets. Returns status, " +
      'lower-cased headers, body (utf8 or base64) and whether the body was truncated.',
    input,
    output,
    options,
    annotations: {
      title: 'HTTP request',
      readOnlyHint: false,
      destructiveHint: true,
      idempotentHint: false,
      openWorldHint: true,
    },

    approvalConditions: {
      methods: oneOfCondition(HTTP_METHODS, 'Methods whose requests wait for approval', (a) => a.method),
      origins: globCondition('Origins (scheme://host[:port]) whose requests wait for approval', (a) =>
        urlPart(a.url, 'origin'),
      ),
      paths: globCondition('URL paths (globs) whose requests wait for approval', (a) =>
        urlPart(a.url, 'pathname'),
      ),
    },
    authorize(args, ctx) {
      const checked = checkRequest(ctx.section, args.method, args.url);
      checkedCalls.set(args, { section: ctx.section, checked });
      return checked.decision;
    },

    async run(args, ctx) {
      const section = ctx.section;
      const caller = sanitizeCallerHeaders(args.headers);
      const dropped = [...caller.dropped];
      const secretsSent = new Set<string>();
      // The pipeline authorizes these very arguments under this very section just before: the
      // same check again would parse the URL and match the policy a second time.
      const earlier = checkedCalls.get(args);
      const first =
        earlier?.section === section ? earlier.checked : checkRequest(section, args.method, args.url);
      if (!first.decision.allow) throw new ToolError(first.decision.reason, 'denied', first.decision.rule);

      const { sendUpstream } = (client ??= await import('./client.js'));
      const response = await sendUpstream({
        method: args.method,
        url: first.url!,
        body: args.body === undefined ? undefined : Buffer.from(args.body, 'utf8'),
        maxResponseBytes: section.maxResponseBytes,
        timeoutMs: section.timeoutMs,
        signal: ctx.signal,
        resolve: deps.resolve,
        poolKey: ctx.team,
        // Every hop is judged afresh; its headers carry only the credential of the entry matching that hop.
        async planHop({ method, url, hop }) {
          const checked = hop === 0 ? first : checkRequest(section, method, url.href);
          if (!checked.decision.allow) {
            throw new ToolError(
              `redirect to ${url.href} refused: ${checked.decision.reason}`,
              'denied',
              checked.decision.rule,
            );
          }
          const { entry, index } = checked.match!;
          const headers = { ...caller.headers };
          if (entry.inject) {
            const injectName = entry.inject.header.toLowerCase();
            if (injectName in headers) {
              delete headers[injectName];
              if (hop === 0) dropped.push(injectName);
            }
            headers[injectName] = await injectedValue(entry, ctx.secrets, secretsSent);
          }
          return {
            headers,
            allowPrivateAddress: entry.allowPrivateAddress,
            addressRule: `http.hosts[${index}].allowPrivateAddress`,
          };
        },
      });

      const headers = responseHeaders(response);
      const bodyEncoding = bodyEncodingFor(headers['content-type'], response.body);
      // Text in another charset (UTF-16, Latin-1, …) is decoded before the pipeline scrubs it:
      // a credential echoed in UTF-16 would otherwise come back readable.
      let text = bodyEncoding === 'utf8' ? decodeText(response.body, headers['content-type']) : undefined;
      // The pipeline redacts whole secrets; a cap that cut through an echoed one would leave its start.
      let body = text === undefined ? response.body : Buffer.from(text, 'utf8');
      if (response.truncated) body = cutSecretTail(body, secretsSent);
      if (text !== undefined) text = body.toString('utf8');
      const structured: HttpRequestResult = {
        status: response.status,
        statusText: response.statusText,
        headers,
        body: text ?? body.toString('base64'),
        bodyEncoding,
        truncated: response.truncated,
        url: response.url.href,
        redirects: response.redirects,
        droppedRequestHeaders: dropped,
      };
      return { structured, text: render(structured, args.method, section.maxResponseBytes) };
    },
  });
}

/** authorize()'s check of each call's arguments object, for run() (gone with the arguments). */
const checkedCalls = new WeakMap<
  object,
  { section: HttpSection; checked: ReturnType<typeof checkRequest> }
>();

export const httpRequestTool = createHttpRequestTool();
