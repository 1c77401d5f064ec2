// What the core sees of OpenTelemetry. Off (no `telemetry:` in airlock.yaml) there is no
// Telemetry object at all: the core holds `undefined`, each call costs one null check, and
// no @opentelemetry module is loaded (otel.ts, which imports them, is loaded only when on).
import type { Logger } from '../log.js';
import type { TelemetryConfig } from './config.js';

/** How a call ended, as its last audit record says. */
export type CallDecision = 'allow' | 'deny';
export type CallOutcome = 'ok' | 'denied' | 'error';

/** What the telemetry knows of the session a call came on (no secrets, no arguments). */
export interface CallSession {
  id: string;
  team: string;
  server: string;
  transport: 'socket' | 'stdio' | 'cli';
}

/** One tools/call in flight: its span, and its metrics once it ends. */
export interface ToolCallTelemetry {
  /** What the call's final audit record says; the last call before `end` wins. */
  settle(decision: CallDecision, outcome: CallOutcome, errorType?: string): void;
  /** Ends the span and records the call's metrics. Later calls do nothing. */
  end(): void;
}

/** One reading of an observable gauge: a value, or values with attributes. */
export type Observation = number | undefined | ReadonlyArray<{ value: number; attributes?: Attributes }>;
export type Attributes = Record<string, string | number | boolean>;

export interface Telemetry {
  /**
   * Starts the span of one tools/call. `meta` is the request's `params._meta` (its
   * `traceparent`/`tracestate` make the client's span the parent); nothing else of it is read.
   */
  startToolCall(
    session: CallSession,
    tool: string,
    requestId: string | number | undefined,
    meta: unknown,
  ): ToolCallTelemetry;
  /** airlock.sessions: +1 when an MCP session opens, -1 when it closes. */
  sessionOpened(session: CallSession): void;
  sessionClosed(session: CallSession): void;
  /** airlock.audit.fsync.duration: one audit batch's fdatasync, in seconds. */
  auditFsync(seconds: number): void;
  /**
   * An observable gauge read at each metric export, e.g.
   * `telemetry.observe('airlock.audit.shipping.lag', () => core.shipper.lag(), { unit: '{record}' })`.
   * A callback that throws or returns undefined reports nothing for that export.
   */
  observe(name: string, read: () => Observation, opts?: { unit?: string; description?: string }): void;
  /** Exports what is pending (bounded wait) and stops. */
  shutdown(): Promise<void>;
}

/** What otel.ts is given. */
export interface TelemetryDeps {
  log: Logger;
  /** Header name → value (already resolved from the secrets the config names). */
  headers: Record<string, string>;
  /** service.instance.id: the broker id when the core has one; else a random id per process. */
  instanceId?: string;
  /** Whether `tool` is a tool of `server` (unknown names are reported as `_OTHER` in metrics). */
  knownTool(server: string, tool: string): boolean;
  /** Removes known secret values from text (a tool name a client made up, an export error). */
  scrub(text: string): string;
}

export interface StartTelemetryOptions {
  log: Logger;
  /** The value of a secret named in `telemetry.otlp.headers` (SecretStore.brokerValue). */
  secretValue(name: string): Promise<string>;
  scrub(text: string): string;
  /** The servers loaded so far, by name, and their tools (SERVERS.loaded: a call names only a loaded one). */
  servers: ReadonlyMap<string, { tools: ReadonlyArray<{ name: string }> }>;
  instanceId?: string;
}

/**
 * Starts OpenTelemetry when `config` is set; undefined (and nothing loaded) when it is not.
 * A header secret that does not resolve leaves telemetry off (logged): calls never depend on it.
 */
export async function startTelemetry(
  config: TelemetryConfig | undefined,
  opts: StartTelemetryOptions,
): Promise<Telemetry | undefined> {
  if (!config) return undefined;
  const headers: Record<string, string> = {};
  for (const [header, secret] of Object.entries(config.otlp.headers)) {
    try {
      headers[header] = await opts.secretValue(secret);
    } catch {
      opts.log.error(
        { header, secret },
        'telemetry is off: the secret of a telemetry.otlp.headers entry does not resolve (see airlock doctor)',
      );
      return undefined;
    }
  }
  const { startOtel } = await import('./otel.js');
  const telemetry = startOtel(config, {
    log: opts.log,
    headers,
    ...(opts.instanceId !== undefined ? { instanceId: opts.instanceId } : {}),
    knownTool: (server, tool) => opts.servers.get(server)?.tools.some((t) => t.name === tool) ?? false,
    scrub: opts.scrub,
  });
  opts.log.info(
    { endpoint: config.otlp.endpoint, protocol: config.otlp.protocol },
    'telemetry on: exporting traces and metrics over OTLP',
  );
  return telemetry;
}
