// The model API proxy behind `<socketDir>/<team>/model.sock`. Claude Code in a `--network none`
// sandbox talks HTTP/1.1 to this socket (through `airlock bridge --listen`), without any API
// key; the proxy forwards the few Messages API paths the team's policy lists to the upstream,
// adding the team's key on the host side, and audits every call like the MCP pipeline does:
//
//   path + method check (default deny) → read body (capped) → daily token budget
//   → audit "request" (durable) → resolve key → forward → stream the answer back unchanged
//   while tapping it for model + usage → add usage to the budget → audit "result" → end.
//
// Decisions worth knowing:
// - Streaming: the upstream body is relayed chunk by chunk with backpressure; nothing buffers
//   a whole response. The tap reads `message_start`/`message_delta` SSE events (or the JSON
//   body's `model`/`usage`) on the side. `accept-encoding: identity` is asked of the upstream;
//   a compressed answer anyway (gzip, deflate, br) is decoded before it is relayed.
// - Redaction of upstream bytes: every chunk is scrubbed with the broker's redactor. So that a
//   key split across two chunks is still caught, the proxy holds back the last (longest form of
//   the key − 1) bytes of a chunk until the next one — but never past a newline, since no form
//   of a single-line key spans one: complete SSE events (which end in "\n\n") go out at once.
//   The body is scrubbed as latin1, which keeps it byte-exact; API keys are ASCII, so all of
//   their forms match there. A stream that stops inside a key (timeout, upstream cut) does not
//   hand out its start: the final flush redacts a trailing partial form too. Responses the proxy
//   generates (errors) are scrubbed too.
// - Paths: the glob judges the WHATWG-normalized path, and the upstream URL is built from it by
//   text (origin + prefix + path), never by resolving a reference ("//host/…" would name another
//   host); a target the upstream would read as another path (absolute-form in a non-special
//   scheme, where "\" is not a separator) is refused.
// - Authentication: every client auth-looking header is dropped; the key is sent as
//   `x-api-key`, or as `Authorization: Bearer` when it is an OAuth token (`sk-ant-oat…`).
// - Upstream address: the upstream URL comes from the operator's policy, not the agent, but
//   the proxy still refuses loopback/private/link-local addresses (and always cloud metadata
//   endpoints) unless `upstreamAllowPrivate` is set, checking the address it actually connects
//   to (IP literal, or every DNS answer through the connection's own lookup).
// - Budget: input (+ cache creation + cache read) + output tokens per UTC day, persisted in
//   `<stateDir>/model/<team>/usage.json`. Each request reserves its input estimate plus its
//   max_tokens before it is forwarded and is settled to the reported usage after; a request is
//   admitted while usage plus reservations is under the budget, so concurrent requests overshoot
//   it by at most one request. One the upstream received that reports no usage (the client left
//   before the first byte) is charged its reservation. With `limits: { store: postgres }` the
//   budget counts fleet-wide in PostgreSQL instead (src/limits/fleet.ts): the reservation is
//   added to the team's row in the statement that checks it, and the request is refused (503)
//   when the store does not answer.
// - Memory: request bodies are buffered whole (the model name is audited before forwarding),
//   against a per-request cap and a process-wide cap over all connections and teams.
import { randomUUID } from 'node:crypto';
import dns from 'node:dns';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { LookupAddress } from 'node:dns';
import type { LookupFunction, Socket } from 'node:net';
import path from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import zlib from 'node:zlib';
import { classifyAddress, classifyHostname, type AddressClass } from '../net/addresses.js';
import { secretFormsLatin1, secretTailStart } from '../secrets/tail.js';
import type { AuditEntry } from '../audit/log.js';
import { matchGlob } from '../policy/glob.js';
import { pathTrickProblem } from '../net/path-tricks.js';
import type { Logger } from '../log.js';
import type { FleetTokenBudget } from '../limits/fleet.js';
import type { ModelPolicy } from '../policy/team-policy.js';
import { REDACTED, type Redactor } from '../secrets/redact.js';
import type { SecretAccess } from '../tool.js';

export type ModelSection = ModelPolicy;

export interface ModelProxyLimits {
  /** Largest request body accepted (default 32 MiB). */
  maxRequestBytes: number;
  /**
   * Request bytes all model proxies of this process may hold at once while bodies arrive
   * (default 64 MiB); past it a request is refused with 503 rather than buffered, so slow
   * uploads on many connections cannot grow the broker without bound.
   */
  maxBufferedBytes: number;
  /** Upper bound for one upstream call, headers to last byte (default 10 min). */
  totalTimeoutMs: number;
  /** Longest silence from the upstream, before or between chunks (default 5 min). */
  idleTimeoutMs: number;
}

const DEFAULT_MODEL_PROXY_LIMITS: ModelProxyLimits = {
  maxRequestBytes: 32 * 1024 * 1024,
  maxBufferedBytes: 64 * 1024 * 1024,
  totalTimeoutMs: 10 * 60_000,
  idleTimeoutMs: 5 * 60_000,
};

export interface ModelProxyDeps {
  team: string;
  /** The team's current `servers.model` section (read per request, so policy reloads apply). */
  getSection: () => ModelSection | undefined;
  secrets: SecretAccess;
  audit: { append(entry: AuditEntry): Promise<unknown> };
  redactor: Redactor;
  log: Logger;
  /** Host state folder; usage is kept in `<stateDir>/model/<team>/usage.json`. */
  stateDir: string;
  /** Allow an upstream on loopback/private addresses (tests, an operator's local gateway). */
  upstreamAllowPrivate?: boolean;
  limits?: Partial<ModelProxyLimits>;
  /** The byte budget shared with the other teams' proxies (default: this process's). */
  bufferedBytes?: ByteBudget;
  /** `limits: { store: postgres }`: dailyTokenBudget counts fleet-wide there (and fails closed). */
  fleetBudget?: FleetTokenBudget;
}

/** Bytes held across connections (request bodies being read), against one cap. */
export class ByteBudget {
  private held = 0;
  constructor(private readonly max: number) {}
  /** Takes `n` bytes if they fit; false (nothing taken) if not. */
  take(n: number): boolean {
    if (this.held + n > this.max) return false;
    this.held += n;
    return true;
  }
  release(n: number): void {
    this.held = Math.max(0, this.held - n);
  }
  get inUse(): number {
    return this.held;
  }
}

const processBudgets = new Map<number, ByteBudget>();
/** One budget per cap for the whole process: every team's proxy draws on it. */
function processByteBudget(max: number): ByteBudget {
  let budget = processBudgets.get(max);
  if (!budget) processBudgets.set(max, (budget = new ByteBudget(max)));
  return budget;
}

/** Token counts as the Messages API reports them. */
export interface ModelUsage {
  input_tokens?: number;
  output_tokens?: number;
  cache_creation_input_tokens?: number;
  cache_read_input_tokens?: number;
}

const USAGE_KEYS = [
  'input_tokens',
  'output_tokens',
  'cache_creation_input_tokens',
  'cache_read_input_tokens',
] as const;

/** What a response costs against the daily budget: all input (cached or not) plus output. */
function usageTokens(u: ModelUsage): number {
  return USAGE_KEYS.reduce((sum, k) => sum + (u[k] ?? 0), 0);
}

const FORWARDED_METHODS = new Set(['GET', 'POST']);
/** Headers that describe one connection, or that the proxy sets itself. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  'host',
  'content-length',
  'accept-encoding',
  'forwarded',
  'via',
  'x-real-ip',
]);
/** Anything that looks like a client credential; the proxy's own key is the only one sent. */
const CREDENTIAL_HEADER = /auth|api[-_]?key|token|secret|cookie|credential|password/i;
/** Longest SSE event (or JSON body) the usage tap parses; longer ones are relayed but not read. */
const MAX_TAPPED_BYTES = 8 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The server

export function createModelProxy(deps: ModelProxyDeps): http.Server {
  const limits: ModelProxyLimits = { ...DEFAULT_MODEL_PROXY_LIMITS, ...deps.limits };
  const log = deps.log.child({ team: deps.team, server: 'model' });
  const scrub = (text: string) => deps.redactor.scrub(text);
  const usage = new DailyTokenUsage(path.join(deps.stateDir, 'model', deps.team, 'usage.json'), log);
  const buffered = deps.bufferedBytes ?? processByteBudget(limits.maxBufferedBytes);
  // Keep-alive to the upstream (TLS handshakes per request would add latency to every turn).
  // Pooled sockets were connected through the guarded lookup, so reuse skips no check.
  const agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };
  const sessions = new WeakMap<Socket, string>();

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error({ err: scrub(String((err as Error)?.message ?? err)) }, 'model proxy request failed');
      if (!res.headersSent)
        sendError(res, 500, 'api_error', 'error: internal error in the model proxy', deps.redactor);
      else res.destroy();
    });
  });
  // Each connection is one session in the audit log (Claude Code keeps its connection alive).
  server.on('connection', (socket: Socket) => sessions.set(socket, randomUUID()));
  server.on('close', () => {
    agents.http.destroy();
    agents.https.destroy();
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = performance.now();
    const elapsed = () => Math.round((performance.now() - started) * 10) / 10;
    const method = (req.method ?? '').toUpperCase();
    // Only the path and query are used; an absolute-form request line cannot pick the host.
    // WHATWG parsing also resolves dot segments (plain and %2e), so the glob sees the path the
    // upstream will see.
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://model.sock');
    } catch {
      url = new URL('http://model.sock/invalid-request-target');
    }
    const pathname = url.pathname;
    const target = pathname + url.search;
    const tool = pathname === '/v1/messages' ? 'messages' : scrub(pathname.slice(0, 200));
    const args: Record<string, unknown> = { method, path: scrub(target) };
    const base = {
      team: deps.team,
      server: 'model',
      tool,
      session: sessions.get(req.socket) ?? randomUUID(),
      call: randomUUID(),
      args,
    };

    const refuse = async (
      status: number,
      errorType: string,
      rule: string,
      reason: string,
      headers: Record<string, string> = {},
    ): Promise<void> => {
      try {
        await deps.audit.append({
          ...base,
          phase: 'result',
          decision: 'deny',
          rule,
          reason: scrub(reason),
          outcome: 'denied',
          status,
          durationMs: elapsed(),
        });
      } catch (err) {
        // Nothing was done; the denial still answers.
        log.error({ err: scrub((err as Error).message) }, 'audit write failed for a refused model call');
      }
      sendError(res, status, errorType, `denied: ${rule}: ${reason}`, deps.redactor, headers);
    };

    // Claude Code probes `HEAD /` on its base URL at start-up. It is answered here, reaches no
    // upstream and carries no credential, so it is not an audited call.
    if (method === 'HEAD' && pathname === '/') {
      res.writeHead(200, { 'content-length': '0' }).end();
      return;
    }

    // 1. Default deny: the section, the method, the path.
    const section = deps.getSection();
    if (!section) {
      return refuse(403, 'permission_error', 'model', `the model API is not enabled for team "${deps.team}"`);
    }
    const allowedPaths = section.paths.join(', ');
    if (!FORWARDED_METHODS.has(method)) {
      return refuse(
        403,
        'permission_error',
        'model.paths',
        `method ${method} is not forwarded (only GET and POST); allowed paths: ${allowedPaths}`,
      );
    }
    // An encoded slash, a `;` parameter and the like could mean another path to the upstream
    // than to the glob.
    const trick = pathTrickProblem(pathname);
    if (trick) {
      return refuse(
        403,
        'permission_error',
        'model.paths',
        `${method} ${trick}; allowed paths: ${allowedPaths}`,
      );
    }
    const pathIndex = section.paths.findIndex((p) => matchGlob(p, pathname));
    if (pathIndex < 0) {
      return refuse(
        403,
        'permission_error',
        'model.paths',
        `${method} ${pathname} is not an allowed path; allowed paths: ${allowedPaths}`,
      );
    }
    // The glob judged `pathname`; the upstream must get exactly that path (an absolute-form
    // target in a non-special scheme, "foo://x/a\..\b", parses differently under https:).
    const upstreamUrl = joinUpstream(section.upstream, pathname, url.search);
    if (!upstreamUrl) {
      return refuse(
        403,
        'permission_error',
        'model.paths',
        `${method} ${scrub((req.url ?? '').slice(0, 200))}: the request target does not name the same path upstream; send an origin-form path such as /v1/messages`,
      );
    }

    // 2. The body, whole and capped: the model name is audited, and an oversized request fails
    //    before anything is sent.
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limits.maxRequestBytes) {
      res.once('finish', () => req.destroy());
      return refuse(
        413,
        'request_too_large',
        'model.maxRequestBytes',
        `request body of ${declared} bytes exceeds the limit of ${limits.maxRequestBytes} bytes`,
        { connection: 'close' },
      );
    }
    // The body's bytes count against the process-wide budget until its response is over.
    const held = { bytes: 0 };
    res.once('close', () => buffered.release(held.bytes));
    const body = await readBody(req, limits.maxRequestBytes, buffered, held);
    if (body === 'over-budget') {
      res.once('finish', () => req.destroy());
      return refuse(
        503,
        'overloaded_error',
        'model.maxBufferedBytes',
        `the model proxy is holding ${limits.maxBufferedBytes} bytes of request bodies already; retry shortly`,
        { connection: 'close', 'retry-after': '1' },
      );
    }
    if (body === 'too-large') {
      res.once('finish', () => req.destroy());
      return refuse(
        413,
        'request_too_large',
        'model.maxRequestBytes',
        `request body exceeds the limit of ${limits.maxRequestBytes} bytes`,
        { connection: 'close' },
      );
    }
    if (body === 'aborted') return; // the client went away before sending its request; nothing to do
    const requested = parseRequestJson(body);
    if (requested.model !== undefined) args.model = scrub(requested.model);
    if (requested.stream !== undefined) args.stream = requested.stream;
    args.requestBytes = body.length;

    // 3. The daily token budget. What a request may cost (its input estimate plus max_tokens)
    //    is reserved before it is forwarded and settled to the real usage after, so concurrent
    //    requests see each other: together they overshoot the budget by at most one request.
    const reservation = estimateInputTokens(body) + (requested.maxTokens ?? 0);
    let fleetReservation: { settle(tokens: number): Promise<void> } | undefined;
    if (section.dailyTokenBudget !== undefined && deps.fleetBudget) {
      // Fleet-wide: the reservation is added to the team's row in the same statement that checks it.
      let reserved;
      try {
        reserved = await deps.fleetBudget.reserve(deps.team, section.dailyTokenBudget, reservation);
      } catch (err) {
        return refuse(503, 'api_error', 'model.dailyTokenBudget', (err as Error).message, {
          'retry-after': '5',
        });
      }
      if (!reserved.ok) {
        const wait = msUntilUtcMidnight(new Date());
        return refuse(
          429,
          'rate_limit_error',
          'model.dailyTokenBudget',
          `daily token budget of ${section.dailyTokenBudget} tokens for team "${deps.team}" is used up across the fleet ` +
            `(${reserved.used} used or reserved today); resets at 00:00 UTC (in ${formatHoursMinutes(wait)})`,
          { 'retry-after': String(Math.ceil(wait / 1000)) },
        );
      }
      fleetReservation = reserved;
    } else if (section.dailyTokenBudget !== undefined) {
      const today = await usage.current();
      const used = usageTokens(today);
      // No await between this check and the reservation: it is atomic on the event loop.
      if (used + usage.reserved >= section.dailyTokenBudget) {
        const wait = msUntilUtcMidnight(new Date());
        const inFlight = usage.reserved > 0 ? `, ${usage.reserved} reserved by requests in flight` : '';
        return refuse(
          429,
          'rate_limit_error',
          'model.dailyTokenBudget',
          `daily token budget of ${section.dailyTokenBudget} tokens for team "${deps.team}" is used up (${used} used today${inFlight}); ` +
            `resets at 00:00 UTC (in ${formatHoursMinutes(wait)})`,
          { 'retry-after': String(Math.ceil(wait / 1000)) },
        );
      }
    }
    usage.reserved += reservation;
    res.once('close', () => (usage.reserved -= reservation));

    // 4. Durable request record before anything reaches the upstream.
    const allowed = {
      ...base,
      decision: 'allow' as const,
      rule: `model.paths[${pathIndex}]`,
      ...(requested.model !== undefined ? { model: scrub(requested.model) } : {}),
    };
    try {
      await deps.audit.append({ ...allowed, phase: 'request' });
    } catch (err) {
      log.error({ err: scrub((err as Error).message) }, 'audit write failed; model call refused');
      return sendError(
        res,
        503,
        'api_error',
        `refused: the audit log is unavailable, so nothing was sent (${(err as Error).message})`,
        deps.redactor,
      );
    }

    // 5. Forward and relay.
    const progress = { sent: false, completed: false };
    const outcome = await forward({ req, res, section, upstreamUrl, method, body, progress });
    // A generation that started (input counted) but never reported its output — the client left
    // mid-stream, or the stream broke — is charged its max_tokens: the budget errs on the side of
    // the team's bill, never in favour of an agent that disconnects to dodge it.
    if (
      outcome.usage.input_tokens !== undefined &&
      !outcome.finalUsage &&
      requested.maxTokens !== undefined
    ) {
      outcome.usage.output_tokens = requested.maxTokens;
      outcome.usageEstimated = true;
    }
    // A request the upstream received but that reported no usage at all (the client left before
    // the first byte, the stream broke) is charged what was reserved for it.
    if (progress.sent && !progress.completed && Object.keys(outcome.usage).length === 0) {
      outcome.usage.input_tokens = estimateInputTokens(body);
      if (requested.maxTokens !== undefined) outcome.usage.output_tokens = requested.maxTokens;
      outcome.usageEstimated = true;
    }
    const tokens = usageTokens(outcome.usage);
    if (tokens > 0) await usage.add(outcome.usage);
    // Corrects the fleet row to what was really used (nothing, if nothing reached the upstream).
    if (fleetReservation) await fleetReservation.settle(tokens);

    // 6. Result record, then the end of the response (or a drop if it cannot be written).
    try {
      await deps.audit.append({
        ...allowed,
        phase: 'result',
        outcome: outcome.error === undefined ? 'ok' : 'error',
        ...(outcome.error !== undefined ? { error: scrub(outcome.error) } : {}),
        ...(outcome.errorDetail !== undefined ? { errorDetail: scrub(outcome.errorDetail) } : {}),
        ...(outcome.status !== undefined ? { status: outcome.status } : {}),
        durationMs: elapsed(),
        resultBytes: outcome.bytes,
        ...(outcome.model !== undefined ? { model: scrub(outcome.model) } : {}),
        ...(tokens > 0 || Object.keys(outcome.usage).length > 0 ? { usage: outcome.usage } : {}),
        ...(outcome.usageEstimated ? { usageEstimated: true } : {}),
      });
    } catch (err) {
      log.error({ err: scrub((err as Error).message) }, 'audit write failed; model response cut off');
      if (!res.writableEnded) res.destroy();
      return;
    }
    outcome.finish();
  }

  interface ForwardOutcome {
    status?: number;
    bytes: number;
    model?: string;
    usage: ModelUsage;
    /** The final output count arrived (see UsageTap.finalUsage). */
    finalUsage?: boolean;
    /** Output tokens were not reported and max_tokens was charged instead. */
    usageEstimated?: boolean;
    error?: string;
    /** Host detail of the error, for the audit record only. */
    errorDetail?: string;
    /** Ends the client response (called after the result record is durable). */
    finish: () => void;
  }

  async function forward(opts: {
    req: http.IncomingMessage;
    res: http.ServerResponse;
    section: ModelSection;
    upstreamUrl: URL;
    method: string;
    body: Buffer;
    /** Set as the request reaches the upstream and its answer is read to the end. */
    progress: { sent: boolean; completed: boolean };
  }): Promise<ForwardOutcome> {
    const { res, section } = opts;
    const fail = (status: number, type: string, message: string): ForwardOutcome => ({
      status,
      bytes: 0,
      usage: {},
      error: message,
      finish: () => sendError(res, status, type, `error: ${message}`, deps.redactor),
    });

    const controller = new AbortController();
    const clientGone = new Error('the client disconnected');
    const onClientClose = () => {
      if (!res.writableFinished) controller.abort(clientGone);
    };
    res.on('close', onClientClose);
    const totalTimer = setTimeout(
      () =>
        controller.abort(
          new UpstreamError(`the model API did not finish within ${formatDuration(limits.totalTimeoutMs)}`),
        ),
      limits.totalTimeoutMs,
    );
    const cleanup = () => {
      clearTimeout(totalTimer);
      res.off('close', onClientClose);
    };

    let key: string;
    try {
      key = await deps.secrets.get(section.credential);
    } catch (err) {
      cleanup();
      // The agent hears the secret's name at most; where it is kept goes to the log and audit.
      const detail = scrub(
        String((err as { operatorDetail?: unknown }).operatorDetail ?? (err as Error).message),
      );
      log.warn({ secret: section.credential, detail }, 'model API credential unavailable');
      return {
        ...fail(500, 'api_error', `credential "${section.credential}" is unavailable (ask the operator)`),
        errorDetail: detail,
      };
    }
    deps.redactor.add(key);

    const upstreamUrl = opts.upstreamUrl;
    const allowPrivate = deps.upstreamAllowPrivate === true || section.allowPrivateAddress === true;
    const literal = classifyHostname(upstreamUrl.hostname);
    const literalProblem = literal && addressProblem(upstreamUrl.hostname, literal, allowPrivate);
    if (literalProblem) {
      cleanup();
      return fail(502, 'api_error', literalProblem);
    }

    const headers = forwardedHeaders(opts.req.headers, key);
    if (opts.method === 'POST') headers['content-length'] = String(opts.body.length);

    let upstream: { req: http.ClientRequest; res: http.IncomingMessage };
    try {
      upstream = await openUpstream({
        url: upstreamUrl,
        method: opts.method,
        headers,
        body: opts.method === 'POST' ? opts.body : undefined,
        agent: upstreamUrl.protocol === 'https:' ? agents.https : agents.http,
        lookup: guardedLookup(allowPrivate),
        signal: controller.signal,
        onSent: () => (opts.progress.sent = true),
        idleTimeoutMs: limits.idleTimeoutMs,
        onIdle: () =>
          controller.abort(
            new UpstreamError(`the model API sent nothing for ${formatDuration(limits.idleTimeoutMs)}`),
          ),
      });
    } catch (err) {
      cleanup();
      if (controller.signal.reason === clientGone)
        return { ...fail(499, 'api_error', clientGone.message), finish: () => {} };
      const why = describeUpstreamError(err, controller.signal);
      log.warn({ err: scrub(why), upstream: upstreamUrl.origin }, 'model API request failed');
      return fail(502, 'api_error', `the model API at ${upstreamUrl.origin} could not be reached: ${why}`);
    }

    const upstreamRes = upstream.res;
    controller.signal.addEventListener(
      'abort',
      () => upstreamRes.destroy(controller.signal.reason as Error),
      { once: true },
    );
    const status = upstreamRes.statusCode ?? 502;
    const encoding = String(upstreamRes.headers['content-encoding'] ?? 'identity')
      .trim()
      .toLowerCase();
    const decoder = contentDecoder(encoding);
    if (decoder === null) {
      upstreamRes.destroy();
      cleanup();
      return fail(
        502,
        'api_error',
        `the model API answered with an unsupported content-encoding "${encoding}"`,
      );
    }
    const contentType = String(upstreamRes.headers['content-type'] ?? '');
    const isSse = /^text\/event-stream/i.test(contentType);
    const tap = new UsageTap(isSse ? 'sse' : /json/i.test(contentType) ? 'json' : 'none');
    const scrubber = new StreamScrubber(deps.redactor, key);

    res.writeHead(status, responseHeaders(upstreamRes.headers, deps.redactor));
    res.flushHeaders();
    let source: Readable = upstreamRes;
    if (decoder) {
      pipeline(upstreamRes, decoder, () => {});
      source = decoder;
    }

    let bytes = 0;
    let error: string | undefined;
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        tap.feed(chunk);
        const out = scrubber.push(chunk);
        if (out.length === 0) continue;
        bytes += out.length;
        if (!res.write(out)) await waitForDrain(res, controller.signal);
      }
      tap.end();
      opts.progress.completed = true;
    } catch (err) {
      tap.end();
      error =
        controller.signal.reason === clientGone
          ? clientGone.message
          : `the model API stream failed: ${describeUpstreamError(err, controller.signal)}`;
      if (controller.signal.reason !== clientGone) log.warn({ err: scrub(error) }, 'model API stream failed');
    } finally {
      cleanup();
    }

    const rest = scrubber.flush();
    if (error === undefined) {
      if (status >= 400)
        error = `the model API answered ${status}${tap.errorMessage ? `: ${tap.errorMessage}` : ''}`;
      else if (tap.errorMessage) error = `the model API stream reported an error: ${tap.errorMessage}`;
      return {
        status,
        bytes: bytes + rest.length,
        ...(tap.model !== undefined ? { model: tap.model } : {}),
        usage: tap.usage,
        finalUsage: tap.finalUsage,
        ...(error !== undefined ? { error } : {}),
        finish: () => res.end(rest),
      };
    }
    const failed = error;
    return {
      status,
      bytes,
      ...(tap.model !== undefined ? { model: tap.model } : {}),
      usage: tap.usage,
      finalUsage: tap.finalUsage,
      error: failed,
      finish: () => {
        if (res.destroyed) return;
        // Mid-stream, the status is gone; an SSE client understands an `error` event (the API's
        // own way of failing a stream), anything else sees the connection drop.
        if (isSse) {
          const event = { type: 'error', error: { type: 'api_error', message: `error: ${failed}` } };
          res.end(scrub(`${rest}event: error\ndata: ${JSON.stringify(event)}\n\n`));
        } else {
          res.destroy();
        }
      },
    };
  }

  return server;
}

// ---------------------------------------------------------------------------------------------
// Requests

async function readBody(
  req: http.IncomingMessage,
  max: number,
  budget: ByteBudget,
  held: { bytes: number },
): Promise<Buffer | 'too-large' | 'over-budget' | 'aborted'> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > max) return 'too-large';
      if (!budget.take(chunk.length)) {
        // This body is dropped: its bytes go back at once, not when its connection closes.
        budget.release(held.bytes);
        held.bytes = 0;
        return 'over-budget';
      }
      held.bytes += chunk.length;
      chunks.push(chunk);
    }
  } catch {
    return 'aborted';
  }
  if (!req.complete) return 'aborted';
  return Buffer.concat(chunks);
}

function parseRequestJson(body: Buffer): { model?: string; stream?: boolean; maxTokens?: number } {
  if (body.length === 0) return {};
  try {
    const parsed = JSON.parse(body.toString('utf8')) as {
      model?: unknown;
      stream?: unknown;
      max_tokens?: unknown;
    };
    const maxTokens = parsed?.max_tokens;
    return {
      ...(typeof parsed?.model === 'string' ? { model: parsed.model } : {}),
      ...(parsed && typeof parsed === 'object' ? { stream: parsed.stream === true } : {}),
      ...(typeof maxTokens === 'number' && Number.isFinite(maxTokens) && maxTokens > 0 ? { maxTokens } : {}),
    };
  } catch {
    return {}; // the upstream answers a malformed body with its own 400
  }
}

/**
 * The upstream base URL (which may carry a path prefix) joined with the request's path and
 * query, or undefined when the upstream would not read exactly the path the globs were matched
 * against. The join is textual (origin + path): resolving "//host/…" as a reference against the
 * origin would make it a protocol-relative URL to another host, carrying the key there.
 */
function joinUpstream(upstream: string, pathname: string, search: string): URL | undefined {
  const base = new URL(upstream);
  const prefix = base.pathname.replace(/\/+$/, '');
  let joined: URL;
  try {
    joined = new URL(base.origin + prefix + pathname + search);
  } catch {
    return undefined;
  }
  if (joined.origin !== base.origin || joined.pathname !== prefix + pathname) return undefined;
  return joined;
}

/** The client's headers minus connection-level and credential-looking ones, plus the key. */
function forwardedHeaders(
  incoming: http.IncomingHttpHeaders,
  key: string,
): Record<string, string | string[]> {
  const named = new Set(
    String(incoming.connection ?? '')
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    if (
      HOP_BY_HOP.has(lower) ||
      named.has(lower) ||
      lower.startsWith('x-forwarded-') ||
      lower.startsWith('proxy-')
    )
      continue;
    if (CREDENTIAL_HEADER.test(lower)) continue;
    out[lower] = value;
  }
  // Ask for an uncompressed body: the tap and the scrubber need the plain bytes.
  out['accept-encoding'] = 'identity';
  if (key.startsWith('sk-ant-oat')) out.authorization = `Bearer ${key}`;
  else out['x-api-key'] = key;
  return out;
}

function responseHeaders(
  incoming: http.IncomingHttpHeaders,
  redactor: Redactor,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    // Length and encoding describe the upstream's bytes, which the scrubber may change.
    if (HOP_BY_HOP.has(lower) || lower === 'content-encoding' || lower === 'set-cookie') continue;
    out[lower] = Array.isArray(value) ? value.map((v) => redactor.scrub(v)) : redactor.scrub(value);
  }
  return out;
}

function contentDecoder(
  encoding: string,
): zlib.Gunzip | zlib.Inflate | zlib.BrotliDecompress | undefined | null {
  switch (encoding) {
    case '':
    case 'identity':
      return undefined;
    case 'gzip':
    case 'x-gzip':
      return zlib.createGunzip();
    case 'deflate':
      return zlib.createInflate();
    case 'br':
      return zlib.createBrotliDecompress();
    default:
      return null;
  }
}

// ---------------------------------------------------------------------------------------------
// The upstream connection

class UpstreamError extends Error {
  override name = 'UpstreamError';
}

function addressProblem(host: string, cls: AddressClass, allowPrivate: boolean): string | undefined {
  if (cls.kind === 'metadata')
    return `upstream ${host} is a cloud metadata endpoint, which is never reachable`;
  if (cls.kind === 'private' && !allowPrivate) {
    return `upstream ${host} is a non-public address (${cls.range}); the model proxy only forwards to public addresses`;
  }
  return undefined;
}

/** A DNS lookup for the upstream connection that only returns addresses the proxy may reach. */
function guardedLookup(allowPrivate: boolean): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { all: true, verbatim: true, family: options.family ?? 0 }, (err, addresses) => {
      if (err) return callback(err, '', 0);
      const usable: LookupAddress[] = [];
      let problem: string | undefined;
      for (const a of addresses) {
        const p = addressProblem(`${hostname} (${a.address})`, classifyAddress(a.address), allowPrivate);
        if (p) problem ??= p;
        else usable.push(a);
      }
      if (usable.length === 0) {
        return callback(new UpstreamError(problem ?? `${hostname} has no address`), '', 0);
      }
      if (options.all) return callback(null, usable);
      callback(null, usable[0]!.address, usable[0]!.family);
    });
  };
}

function openUpstream(opts: {
  url: URL;
  method: string;
  headers: Record<string, string | string[]>;
  body: Buffer | undefined;
  agent: http.Agent;
  lookup: LookupFunction;
  signal: AbortSignal;
  /** The request (headers and body) was handed to the connection in full. */
  onSent: () => void;
  idleTimeoutMs: number;
  onIdle: () => void;
}): Promise<{ req: http.ClientRequest; res: http.IncomingMessage }> {
  return new Promise((resolve, reject) => {
    const client = opts.url.protocol === 'https:' ? https : http;
    const req = client.request(
      opts.url,
      {
        method: opts.method,
        headers: opts.headers,
        agent: opts.agent,
        lookup: opts.lookup,
        signal: opts.signal,
      },
      (res) => resolve({ req, res }),
    );
    req.on('error', reject);
    // An unrequested 101 makes Node drop the socket with neither a response nor an error, and
    // aborting a request that is already destroyed emits nothing: without these the call would
    // never settle. (Rejecting after the response arrived is a no-op.)
    req.on('upgrade', (_res, socket: Socket) => {
      socket.destroy();
      reject(
        new UpstreamError('the model API answered 101 Switching Protocols, which the proxy does not support'),
      );
    });
    req.on('close', () =>
      reject(new UpstreamError('the model API closed the connection without a response')),
    );
    opts.signal.addEventListener('abort', () => reject(opts.signal.reason), { once: true });
    // Socket inactivity: before the headers and between body chunks.
    req.setTimeout(opts.idleTimeoutMs, opts.onIdle);
    req.once('finish', opts.onSent);
    req.end(opts.body);
  });
}

function describeUpstreamError(err: unknown, signal: AbortSignal): string {
  if (signal.aborted && signal.reason instanceof Error) return signal.reason.message;
  if (err instanceof UpstreamError) return err.message;
  const e = err as NodeJS.ErrnoException;
  if (e?.cause instanceof UpstreamError) return e.cause.message;
  return e?.code
    ? `${e.code}${e.message && !e.message.includes(e.code) ? ` (${e.message})` : ''}`
    : String(e?.message ?? err);
}

function waitForDrain(res: http.ServerResponse, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const done = () => {
      signal.removeEventListener('abort', stop);
      resolve();
    };
    const stop = () => {
      res.off('drain', done);
      reject(signal.reason);
    };
    res.once('drain', done);
    signal.addEventListener('abort', stop, { once: true });
  });
}

// ---------------------------------------------------------------------------------------------
// Errors in Anthropic's shape

function sendError(
  res: http.ServerResponse,
  status: number,
  type: string,
  message: string,
  redactor: Redactor,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const body = redactor.scrub(JSON.stringify({ type: 'error', error: { type, message } }));
  const scrubbedHeaders = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, redactor.scrub(v)]));
  res.writeHead(status, {
    ...scrubbedHeaders,
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
  });
  res.end(body);
}

// ---------------------------------------------------------------------------------------------
// Redaction of a stream

/**
 * Scrubs a byte stream chunk by chunk without missing a key split across chunks: after each
 * chunk it holds back what could be the start of the key's longest form (never across a
 * newline, which no form of a one-line key contains). Works on latin1 text so bytes round-trip.
 */
export class StreamScrubber {
  private carry = '';
  private readonly holdback: number;
  private readonly lineSafe: boolean;
  private readonly forms: string[];

  constructor(
    private readonly redactor: Redactor,
    key: string,
  ) {
    const forms = secretFormsLatin1([key]);
    this.forms = forms;
    this.holdback = forms.length ? Math.max(...forms.map((f) => f.length)) - 1 : 0;
    this.lineSafe = !forms.some((f) => /[\r\n]/.test(f));
  }

  push(chunk: Buffer): Buffer {
    const text = this.redactor.scrub(this.carry + chunk.toString('latin1'));
    let cut = text.length - this.holdback;
    if (this.lineSafe) cut = Math.max(cut, text.lastIndexOf('\n') + 1);
    if (cut <= 0) {
      this.carry = text;
      return Buffer.alloc(0);
    }
    this.carry = text.slice(cut);
    return Buffer.from(text.slice(0, cut), 'latin1');
  }

  /** The rest, at the end of the stream. A stream cut inside a key must not hand out its start. */
  flush(): Buffer {
    const text = this.redactor.scrub(this.carry);
    const partial = secretTailStart(text, this.forms);
    this.carry = '';
    const out = partial < text.length ? text.slice(0, partial) + REDACTED : text;
    return Buffer.from(out, 'latin1');
  }
}

// ---------------------------------------------------------------------------------------------
// Reading model and usage from the response on the side

/** Parses SSE events (or a JSON body) for `model`, `usage` and an error message. Never alters data. */
export class UsageTap {
  model?: string;
  readonly usage: ModelUsage = {};
  /** The final output count arrived (message_delta, or a whole JSON message). */
  finalUsage = false;
  errorMessage?: string;
  private readonly decoder = new StringDecoder('utf8');
  private buffer = '';
  private eventData: string[] = [];
  private eventBytes = 0;
  private overflow = false;

  constructor(private readonly kind: 'sse' | 'json' | 'none') {}

  feed(chunk: Buffer): void {
    if (this.kind === 'none') return;
    const text = this.decoder.write(chunk);
    if (this.kind === 'json') {
      if (this.buffer.length + text.length > MAX_TAPPED_BYTES) this.overflow = true;
      else this.buffer += text;
      return;
    }
    this.buffer += text;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) !== -1) {
      const line = this.buffer.slice(0, nl).replace(/\r$/, '');
      this.buffer = this.buffer.slice(nl + 1);
      this.line(line);
    }
    if (this.buffer.length > MAX_TAPPED_BYTES) {
      this.buffer = '';
      this.overflow = true;
    }
  }

  end(): void {
    if (this.kind === 'none') return;
    const text = this.buffer + this.decoder.end();
    this.buffer = '';
    if (this.kind === 'json') {
      if (!this.overflow) this.message(text);
      return;
    }
    if (text) this.line(text);
    this.line('');
  }

  private line(line: string): void {
    if (line === '') {
      if (this.eventData.length && !this.overflow) this.message(this.eventData.join('\n'));
      this.eventData = [];
      this.eventBytes = 0;
      this.overflow = false;
      return;
    }
    if (!line.startsWith('data:')) return;
    const data = line.slice(5).replace(/^ /, '');
    this.eventBytes += data.length;
    if (this.eventBytes > MAX_TAPPED_BYTES) this.overflow = true;
    else this.eventData.push(data);
  }

  private message(text: string): void {
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return;
    }
    if (!obj || typeof obj !== 'object') return;
    switch (obj.type) {
      case 'message_start': {
        const message = obj.message as { model?: unknown; usage?: unknown } | undefined;
        if (typeof message?.model === 'string') this.model = message.model;
        this.mergeUsage(message?.usage);
        break;
      }
      case 'message_delta':
        this.mergeUsage(obj.usage);
        if (obj.usage) this.finalUsage = true;
        break;
      case 'message':
        if (typeof obj.model === 'string') this.model = obj.model;
        this.mergeUsage(obj.usage);
        if (obj.usage) this.finalUsage = true;
        break;
      case 'error': {
        const error = obj.error as { type?: unknown; message?: unknown } | undefined;
        this.errorMessage =
          [error?.type, error?.message].filter((x) => typeof x === 'string').join(': ') || 'error';
        break;
      }
    }
  }

  /** Counts in later events are running totals, so a later value replaces an earlier one. */
  private mergeUsage(raw: unknown): void {
    if (!raw || typeof raw !== 'object') return;
    for (const k of USAGE_KEYS) {
      const v = (raw as Record<string, unknown>)[k];
      if (typeof v === 'number' && Number.isFinite(v) && v >= 0) this.usage[k] = v;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The daily token budget

export interface DailyUsageRecord extends Required<ModelUsage> {
  /** UTC day, YYYY-MM-DD. */
  day: string;
  requests: number;
}

function utcDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

function emptyDay(day: string): DailyUsageRecord {
  return {
    day,
    input_tokens: 0,
    output_tokens: 0,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0,
    requests: 0,
  };
}

/** Per-team token usage for the current UTC day, persisted so a restart does not reset it. */
class DailyTokenUsage {
  /** Tokens reserved by requests in flight (not persisted: a restart ends them). */
  reserved = 0;
  private state: DailyUsageRecord | undefined;
  private loading: Promise<void> | undefined;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    readonly file: string,
    private readonly log: Logger,
  ) {}

  /** Today's usage (a fresh day starts at zero). */
  async current(): Promise<DailyUsageRecord> {
    await this.load();
    const today = utcDay(new Date());
    if (this.state!.day !== today) this.state = emptyDay(today);
    return { ...this.state! };
  }

  async add(u: ModelUsage): Promise<void> {
    await this.current();
    const s = this.state!;
    for (const k of USAGE_KEYS) s[k] += u[k] ?? 0;
    s.requests += 1;
    const snapshot = JSON.stringify(s) + '\n';
    // Writes are serialized; each replaces the file atomically.
    this.writing = this.writing.then(() => this.persist(snapshot));
    await this.writing;
  }

  private load(): Promise<void> {
    this.loading ??= (async () => {
      try {
        const parsed = JSON.parse(await readFile(this.file, 'utf8')) as Partial<DailyUsageRecord>;
        const state = emptyDay(typeof parsed.day === 'string' ? parsed.day : utcDay(new Date()));
        for (const k of [...USAGE_KEYS, 'requests'] as const) {
          const v = parsed[k];
          if (typeof v === 'number' && Number.isFinite(v) && v >= 0) state[k] = v;
        }
        this.state = state;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
          this.log.warn(
            { file: this.file, err: (err as Error).message },
            'model usage file unreadable; counting today from zero',
          );
        }
        this.state = emptyDay(utcDay(new Date()));
      }
    })();
    return this.loading;
  }

  private async persist(snapshot: string): Promise<void> {
    try {
      await mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
      const tmp = `${this.file}.${process.pid}.tmp`;
      await writeFile(tmp, snapshot, { mode: 0o600 });
      await rename(tmp, this.file);
    } catch (err) {
      this.log.warn({ file: this.file, err: (err as Error).message }, 'could not persist model token usage');
    }
  }
}

/**
 * A generous guess of a request's input tokens from its size (about 4 bytes a token for
 * English text and JSON); the upstream's count replaces it when the response reports usage.
 */
function estimateInputTokens(body: Buffer): number {
  return Math.ceil(body.length / 4);
}

function msUntilUtcMidnight(now: Date): number {
  const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  return midnight - now.getTime();
}

function formatHoursMinutes(ms: number): string {
  const minutes = Math.ceil(ms / 60_000);
  return `${Math.floor(minutes / 60)}h ${minutes % 60}m`;
}

function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120_000) return `${Math.round(ms / 100) / 10} s`;
  return `${Math.round(ms / 60_000)} min`;
}
