// The call pipeline every server plugs into, in this order:
//   find tool (default deny) → validate arguments → authorize (policy) → rate limit
//   → audit "request" (durable) → resolve credential + call upstream (the tool's handler)
//   → redact → audit "result" (durable) → answer.
// Nothing reaches an upstream unless its request record is on disk, and no result goes back
// unless its result record is; a denial writes one record. Servers never see audit or sockets.
import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { CallToolResult, Tool } from '@modelcontextprotocol/sdk/types.js';
import { holdForApproval, type ProgressSink } from '../approvals/gate.js';
import type { ApprovalService } from '../approvals/service.js';
import type { ApprovePolicy } from '../approvals/policy.js';
import { AUDIT_CALL_FIELDS, truncateForAudit, type AuditEntry } from '../audit/log.js';
import { argumentBoundProblem, unrecordedSummary } from './bounds.js';
import type { Logger } from '../log.js';
import { untilAborted } from './abort.js';
import type { Redactor } from '../secrets/redact.js';
import type { Telemetry, ToolCallTelemetry } from '../telemetry/telemetry.js';
import { formatWait, type RateDecision, type RateLimitSpec } from '../policy/ratelimit.js';
import type { SharedRateLimiter } from '../limits/fleet.js';
import {
  ToolError,
  type AnyToolDefinition,
  type AuditDetail,
  type PoolUse,
  type SecretAccess,
  type ServerDefinition,
  type ServerName,
  type ServerRuntime,
} from '../tool.js';

export interface SessionInfo {
  id: string;
  team: string;
  server: ServerName;
  /** How the session reached the broker; `cli` is `airlock call` (one call, no MCP session). */
  transport: 'socket' | 'stdio' | 'cli';
}

/** The team policy as the pipeline reads it (parsed and validated by src/policy/team-policy.ts). */
export interface PolicyView {
  get(team: string):
    | {
        servers: Record<
          string,
          | ({
              tools: Record<
                string,
                { rateLimit?: RateLimitSpec; approve?: ApprovePolicy } & Record<string, unknown>
              >;
            } & Record<string, unknown>)
          | undefined
        >;
      }
    | undefined;
}

export interface PipelineDeps {
  servers: ReadonlyMap<ServerName, ServerDefinition>;
  policies: PolicyView;
  audit: { append(entry: AuditEntry): Promise<unknown> };
  secrets: { forTeam(team: string): SecretAccess };
  redactor: Redactor;
  /** The buckets shared by the host's Airlock processes, or by the fleet (src/limits). */
  rateLimiter: SharedRateLimiter;
  stateDir: string;
  log: Logger;
  /** Holds calls whose policy says `approve` until a human decides (absent: such calls are refused). */
  approvals?: Pick<ApprovalService, 'await'>;
  /** Upper bound for one call, whatever the tool does (a hung upstream never holds a session forever). */
  callTimeoutMs?: number;
  /** OpenTelemetry (src/telemetry); absent when off, so a call costs one null check. */
  telemetry?: Telemetry;
}

const DEFAULT_CALL_TIMEOUT_MS = 5 * 60_000;
/** Calls one session may have in flight; more are refused, so one session cannot hog the broker. */
export const MAX_CALLS_PER_SESSION = 16;

/** The JSON text of results the pipeline answered with (it serializes each once to count its bytes). */
const serializedResults = new WeakMap<CallToolResult, string>();

/** JSON.stringify(result) for a result this pipeline returned unchanged, else undefined. */
export function serializedResult(result: CallToolResult): string | undefined {
  return serializedResults.get(result);
}

/** Record fields a server's audit detail may not set. */
const RESERVED_AUDIT_KEYS: ReadonlySet<string> = new Set([
  ...AUDIT_CALL_FIELDS,
  'args',
  'reason',
  'error',
  'errorDetail',
  'transport',
  'broker',
]);

/** The fields every record of one call shares. */
type AuditHead = Pick<AuditEntry, 'team' | 'server' | 'tool' | 'session' | 'call' | 'args' | 'transport'>;

export class CallPipeline {
  private readonly schemaCache = new WeakMap<AnyToolDefinition, Tool>();
  private readonly runtimes = new Map<string, Promise<ServerRuntime & object>>();
  /** The runtimes that are up, by `team/server` (telemetry reads their pools without waiting). */
  private readonly runtimesUp = new Map<string, ServerRuntime>();
  private inFlight = 0;
  private readonly perSession = new Map<string, number>();
  private readonly idleWaiters: Array<() => void> = [];
  private readonly drainController = (() => {
    const c = new AbortController();
    // One listener per in-flight call (removed when it ends), so many at once is normal.
    setMaxListeners(0, c.signal);
    return c;
  })();

  constructor(private readonly deps: PipelineDeps) {}

  get activeCalls(): number {
    return this.inFlight;
  }

  get telemetry(): Telemetry | undefined {
    return this.deps.telemetry;
  }

  /** The tools this team's policy enables on this server: nothing else exists for the session. */
  listTools(team: string, server: ServerName): Tool[] {
    const def = this.deps.servers.get(server);
    const section = this.deps.policies.get(team)?.servers[server];
    if (!def || !section) return [];
    return def.tools.filter((t) => section.tools[t.name] !== undefined).map((t) => this.describe(t));
  }

  private describe(tool: AnyToolDefinition): Tool {
    let described = this.schemaCache.get(tool);
    if (!described) {
      described = {
        name: tool.name,
        title: tool.title,
        description: tool.description,
        inputSchema: toObjectSchema(tool.input, 'input'),
        outputSchema: toObjectSchema(tool.output, 'output'),
        annotations: { title: tool.title, ...tool.annotations },
      };
      this.schemaCache.set(tool, described);
    }
    return described;
  }

  /**
   * One tools/call. `requestId` and `meta` (the request's `params._meta`, for its `traceparent`)
   * are read only by telemetry.
   */
  call(
    session: SessionInfo,
    name: string,
    rawArgs: unknown,
    signal?: AbortSignal,
    progress?: ProgressSink,
    requestId?: string | number,
    meta?: unknown,
  ): Promise<CallToolResult> {
    const span = this.deps.telemetry?.startToolCall(session, name, requestId, meta);
    if (span === undefined) return this.admit(session, name, rawArgs, signal, progress);
    return this.admit(session, name, rawArgs, signal, progress, span).finally(() => span.end());
  }

  private async admit(
    session: SessionInfo,
    name: string,
    rawArgs: unknown,
    signal?: AbortSignal,
    progress?: ProgressSink,
    span?: ToolCallTelemetry,
  ): Promise<CallToolResult> {
    const active = this.perSession.get(session.id) ?? 0;
    if (active >= MAX_CALLS_PER_SESSION) {
      const reason = `at most ${MAX_CALLS_PER_SESSION} calls may run at once in one session; wait for one to finish`;
      return this.refuse(
        auditHead(session, name, this.safeAuditArgs(rawArgs)),
        { rule: 'session.concurrency', reason, outcome: 'denied' },
        `denied: session.concurrency: ${reason}`,
        span,
      );
    }
    this.perSession.set(session.id, active + 1);
    this.inFlight++;
    try {
      return await this.run(session, name, rawArgs ?? {}, signal, progress, span);
    } catch (err) {
      // A bug or an input no check foresaw: still one audited, redacted refusal, never a crash.
      const message = this.deps.redactor.scrub((err as Error)?.message ?? String(err));
      this.deps.log.error(
        { team: session.team, server: session.server, tool: name, err: message },
        'call failed unexpectedly',
      );
      return this.refuse(
        auditHead(session, name, this.safeAuditArgs(rawArgs)),
        { rule: 'internal', reason: message, outcome: 'error', error: message },
        `error: the call could not be handled (${message})`,
        span,
      );
    } finally {
      const left = (this.perSession.get(session.id) ?? 1) - 1;
      if (left === 0) this.perSession.delete(session.id);
      else this.perSession.set(session.id, left);
      if (--this.inFlight === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }

  private async run(
    session: SessionInfo,
    name: string,
    rawArgs: unknown,
    signal?: AbortSignal,
    progress?: ProgressSink,
    span?: ToolCallTelemetry,
  ): Promise<CallToolResult> {
    const started = performance.now();
    const { team, server } = session;
    // Bounded before anything walks them (redaction, truncation, hashing): see src/pipeline/bounds.ts.
    const tooLarge = argumentBoundProblem(rawArgs);
    if (tooLarge) {
      return this.refuse(
        auditHead(session, name, unrecordedSummary(rawArgs, tooLarge)),
        { rule: 'session.arguments', reason: tooLarge, outcome: 'denied' },
        `invalid argument: ${tooLarge}`,
        span,
      );
    }
    const base = auditHead(session, name, this.auditArgs(rawArgs));
    const { call } = base;
    const elapsed = () => round(performance.now() - started);
    const redactor = this.deps.redactor;
    const deny = (rule: string, reason: string, text = `denied: ${rule}: ${reason}`) =>
      this.refuse(
        base,
        { rule, reason: redactor.scrub(reason), outcome: 'denied', durationMs: elapsed() },
        redactor.scrub(text),
        span,
      );

    // 1. Default deny: a tool the team's policy does not list does not exist for it.
    const def = this.deps.servers.get(server);
    const section = this.deps.policies.get(team)?.servers[server];
    const tool = def?.tools.find((t) => t.name === name);
    const options = section?.tools[name];
    if (!def || !section || !tool || !options) {
      const enabled = section ? Object.keys(section.tools).join(', ') || 'none' : 'none';
      return deny(
        `${server}.tools`,
        `tool "${name}" is not enabled for team "${team}" on the ${server} server; enabled tools: ${enabled}`,
      );
    }
    const rulePrefix = `${server}.tools.${name}`;

    // 2. Arguments are hostile until the schema says otherwise.
    const parsed = tool.input.safeParse(rawArgs);
    if (!parsed.success) {
      const reason = formatZodError(parsed.error);
      return deny(`${rulePrefix}.input`, `invalid argument: ${reason}`, `invalid argument: ${reason}`);
    }
    const args = parsed.data;

    // 3. Policy.
    if (tool.prepare) await tool.prepare();
    let decision;
    try {
      decision = tool.authorize(args, { team, section, options });
    } catch (err) {
      if (err instanceof ToolError) return deny(err.rule ?? rulePrefix, err.message, toolErrorText(err));
      throw err;
    }
    if (!decision.allow) return deny(decision.rule, decision.reason);

    // 4. Rate limit (only allowed calls spend a token).
    if (options.rateLimit) {
      const limiter = this.deps.rateLimiter;
      let rl: RateDecision;
      try {
        rl = await limiter.take(team, `${server}/${name}`, options.rateLimit);
      } catch (err) {
        // The counters cannot be reached (the fleet store is down or slow): refused, never
        // counted somewhere else instead.
        return deny(`${rulePrefix}.rateLimit`, (err as Error).message);
      }
      if (!rl.ok) {
        const where = limiter.scope === 'fleet' ? ' across the fleet' : '';
        return deny(
          `${rulePrefix}.rateLimit`,
          `rate limit ${options.rateLimit.text} reached${where}; next call allowed in ${formatWait(rl.retryAfterMs)}`,
        );
      }
    }

    // 5. Durable request record before anything reaches the upstream.
    const allowed = { ...base, decision: 'allow' as const, rule: decision.rule };
    const requestDetail = decision.audit ? this.auditDetail(decision.audit) : undefined;
    try {
      await this.deps.audit.append({ ...allowed, ...requestDetail, phase: 'request' });
    } catch (err) {
      this.deps.log.error(
        { err: (err as Error).message, team, server, tool: name },
        'audit write failed; call refused',
      );
      span?.settle('allow', 'error', 'audit_unavailable');
      return errorResult(
        `refused: the audit log is unavailable, so nothing was done (${(err as Error).message})`,
      );
    }

    // 5b. A call the policy holds for a human waits for an out-of-band decision (src/approvals).
    if (options.approve) {
      const refused = await holdForApproval(this.deps.approvals, {
        tool,
        policy: options.approve,
        head: base,
        args,
        rule: `${rulePrefix}.approve`,
        signal,
        progress,
        section,
        currentSection: () => this.deps.policies.get(team)?.servers[server],
      });
      if (refused) return deny(refused.rule, refused.reason);
    }

    // 6. The upstream call, bounded by the session, the broker's drain and a hard deadline.
    // (One controller and one timer, released when the call ends: AbortSignal.any/timeout cost
    // more than the rest of the pipeline on a fast call.)
    const callController = new AbortController();
    const callSignal = callController.signal;
    const abortCall = (reason: unknown) => callController.abort(reason);
    const onSessionAbort = () => abortCall(signal!.reason);
    const onDrain = () => abortCall(this.drainController.signal.reason);
    if (signal?.aborted) abortCall(signal.reason);
    signal?.addEventListener('abort', onSessionAbort, { once: true });
    this.drainController.signal.addEventListener('abort', onDrain, { once: true });
    const deadline = setTimeout(() => {
      const timeout = new Error('the call exceeded its time limit');
      timeout.name = 'TimeoutError';
      abortCall(timeout);
    }, this.deps.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS);
    let result: CallToolResult;
    let outcome: 'ok' | 'error' | 'denied' = 'ok';
    let errorText: string | undefined;
    // Some refusals need I/O first (DNS for a private address, a redirect target, the state of a
    // branch): they come after the request record, and the result record says "deny".
    let lateDenial: { rule: string; reason: string } | undefined;
    let resultDetail: AuditDetail | undefined;
    // Host detail of a failure (where a secret is kept) for the operator: audit and log only.
    let operatorDetail: string | undefined;
    try {
      const runtime = def.createRuntime ? await this.runtime(def, team, section) : undefined;
      const stateDir = path.join(this.deps.stateDir, server, team);
      const parentLog = this.deps.log;
      let log: Logger | undefined;
      const out = await untilAborted(
        tool.run(args, {
          team,
          server,
          section,
          options,
          secrets: this.deps.secrets.forTeam(team),
          signal: callSignal,
          stateDir,
          // Made on first use: most calls never log.
          get log() {
            return (log ??= parentLog.child({ team, server, tool: name, call }));
          },
          runtime,
        }),
        callSignal,
      );
      // 7. Redact everything that goes back, whatever the tool did.
      const structured = this.deps.redactor.scrubDeep(out.structured);
      const text = this.deps.redactor.scrub(out.text);
      if (out.audit) resultDetail = this.auditDetail(out.audit);
      result = {
        content: [{ type: 'text', text }],
        structuredContent: structured as Record<string, unknown>,
      };
    } catch (err) {
      const refused =
        err instanceof ToolError && (err.kind === 'denied' || err.kind === 'invalid') && !callSignal.aborted;
      outcome = refused ? 'denied' : 'error';
      errorText = this.deps.redactor.scrub(describeError(err, callSignal));
      if (refused) {
        lateDenial = {
          rule: err.kind === 'invalid' ? `${rulePrefix}.input` : (err.rule ?? rulePrefix),
          reason: errorText,
        };
      }
      result = errorResult(
        err instanceof ToolError ? this.deps.redactor.scrub(toolErrorText(err)) : `error: ${errorText}`,
      );
      const detail = (err as { operatorDetail?: unknown } | undefined)?.operatorDetail;
      if (typeof detail === 'string') operatorDetail = this.deps.redactor.scrub(detail);
      if (!(err instanceof ToolError) || operatorDetail !== undefined)
        this.deps.log.warn(
          {
            team,
            server,
            tool: name,
            call,
            err: errorText,
            ...(operatorDetail ? { detail: operatorDetail } : {}),
          },
          'tool call failed',
        );
    } finally {
      clearTimeout(deadline);
      signal?.removeEventListener('abort', onSessionAbort);
      this.drainController.signal.removeEventListener('abort', onDrain);
    }

    // 8. Durable result record before the answer goes back.
    const resultJson = JSON.stringify(result);
    const resultBytes = Buffer.byteLength(resultJson);
    span?.settle(lateDenial ? 'deny' : 'allow', outcome);
    try {
      await this.deps.audit.append({
        ...allowed,
        ...resultDetail,
        phase: 'result',
        ...(lateDenial
          ? { decision: 'deny' as const, rule: lateDenial.rule, reason: lateDenial.reason }
          : errorText !== undefined
            ? { error: errorText, ...(operatorDetail !== undefined ? { errorDetail: operatorDetail } : {}) }
            : {}),
        outcome,
        durationMs: elapsed(),
        resultBytes,
      });
      serializedResults.set(result, resultJson);
    } catch (err) {
      this.deps.log.error(
        { err: (err as Error).message, team, server, tool: name, call },
        'audit write failed; result withheld',
      );
      span?.settle('allow', 'error', 'audit_unavailable');
      return errorResult(
        `refused: the audit log is unavailable, so the result is withheld (${(err as Error).message})`,
      );
    }
    return result;
  }

  /**
   * The one record of a call refused before it reached the upstream (phase "result", decision
   * "deny"), then the answer. A refusal whose record cannot be written still answers (nothing was
   * done), but says so.
   */
  private async refuse(
    head: AuditHead,
    refusal: {
      rule: string;
      reason: string;
      outcome: 'denied' | 'error';
      error?: string;
      durationMs?: number;
    },
    text: string,
    span?: ToolCallTelemetry,
  ): Promise<CallToolResult> {
    span?.settle('deny', refusal.outcome, refusal.outcome === 'error' ? 'internal' : undefined);
    try {
      await this.deps.audit.append({ ...head, phase: 'result', decision: 'deny', ...refusal });
      return errorResult(text);
    } catch (err) {
      this.deps.log.error({ err: (err as Error).message }, 'audit write failed for a refused call');
      return errorResult(`refused: the audit log is unavailable (${(err as Error).message})`);
    }
  }

  /** The arguments for a record written after something went wrong: never throws. */
  private safeAuditArgs(raw: unknown): unknown {
    try {
      const tooLarge = argumentBoundProblem(raw);
      return tooLarge ? unrecordedSummary(raw, tooLarge) : this.auditArgs(raw);
    } catch {
      return '[unrecordable arguments]';
    }
  }

  /** A server's extra record fields, redacted and truncated like arguments; core fields win. */
  private auditDetail(detail: AuditDetail): AuditDetail {
    const out: AuditDetail = {};
    for (const [key, value] of Object.entries(detail)) {
      if (RESERVED_AUDIT_KEYS.has(key)) continue;
      out[key] = this.auditArgs(value);
    }
    return out;
  }

  private auditArgs(raw: unknown): unknown {
    // The audit log's own truncation: long strings keep a prefix and a digest, long lists a count.
    return truncateForAudit(this.deps.redactor.scrubDeep(raw));
  }

  private runtime(def: ServerDefinition, team: string, section: unknown): Promise<ServerRuntime & object> {
    const key = `${team}/${def.name}`;
    let rt = this.runtimes.get(key);
    if (!rt) {
      const created = def.createRuntime!({
        team,
        section,
        secrets: this.deps.secrets.forTeam(team),
        log: this.deps.log.child({ team, server: def.name }),
      }) as Promise<ServerRuntime & object>;
      rt = created.then(
        (up) => {
          if (this.runtimes.get(key) === rt) this.runtimesUp.set(key, up);
          return up;
        },
        (err) => {
          this.runtimes.delete(key);
          throw err;
        },
      );
      this.runtimes.set(key, rt);
      void mkdir(path.join(this.deps.stateDir, def.name, team), { recursive: true, mode: 0o700 }).catch(
        () => undefined,
      );
    }
    return rt;
  }

  /** Drops a team's runtimes (pools) after its policy changed; they are rebuilt on next use. */
  async resetRuntimes(team?: string): Promise<void> {
    const closing: Promise<void>[] = [];
    for (const [key, rt] of this.runtimes) {
      if (team === undefined || key.startsWith(`${team}/`)) {
        this.runtimes.delete(key);
        this.runtimesUp.delete(key);
        closing.push(rt.then((r) => r.close()).catch(() => undefined));
      }
    }
    await Promise.all(closing);
  }

  /** The connection pools of every runtime that is up (telemetry gauges). */
  poolUse(): Array<PoolUse & { team: string; server: string }> {
    const out: Array<PoolUse & { team: string; server: string }> = [];
    for (const [key, rt] of this.runtimesUp) {
      const [team = '', server = ''] = key.split('/');
      for (const use of rt.poolUse?.() ?? []) out.push({ ...use, team, server });
    }
    return out;
  }

  /** Waits for in-flight calls to finish; after `timeoutMs` aborts them. */
  async drain(timeoutMs: number): Promise<boolean> {
    if (this.inFlight === 0) return true;
    const idle = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const clean = await Promise.race([idle.then(() => true as const), timedOut]);
    clearTimeout(timer);
    if (!clean) {
      this.drainController.abort(new Error('broker is shutting down'));
      await Promise.race([idle, new Promise((r) => setTimeout(r, 2000))]);
    }
    return clean;
  }
}

function auditHead(session: SessionInfo, tool: string, args: unknown): AuditHead {
  return {
    team: session.team,
    server: session.server,
    tool,
    session: session.id,
    call: randomUUID(),
    transport: session.transport,
    args,
  };
}

function toObjectSchema(schema: z.ZodType, io: 'input' | 'output'): Tool['inputSchema'] {
  const json = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Record<string, unknown>;
  delete json.$schema;
  return { ...json, type: 'object' } as Tool['inputSchema'];
}

function errorResult(text: string): CallToolResult {
  return { content: [{ type: 'text', text }], isError: true };
}

function toolErrorText(err: ToolError): string {
  if (err.kind === 'invalid')
    return err.message.startsWith('invalid argument') ? err.message : `invalid argument: ${err.message}`;
  if (err.kind === 'denied') return `denied: ${err.rule ?? 'policy'}: ${err.message}`;
  return `error: ${err.message}`;
}

function describeError(err: unknown, signal: AbortSignal): string {
  if (signal.aborted) {
    const reason = signal.reason as Error | undefined;
    if (reason?.name === 'TimeoutError') return 'the call exceeded its time limit and was aborted';
    return `the call was aborted: ${reason?.message ?? 'cancelled'}`;
  }
  if (err instanceof Error) return err.message;
  return String(err);
}

export function formatZodError(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => {
      const where = i.path.length ? i.path.join('.') : 'arguments';
      if (i.code === 'unrecognized_keys')
        return `${where}: unknown field(s) ${i.keys.map((k) => `"${k}"`).join(', ')}`;
      return `${where}: ${i.message}`;
    })
    .join('; ');
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
