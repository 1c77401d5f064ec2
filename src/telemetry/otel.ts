// The OpenTelemetry SDK behind src/telemetry/telemetry.ts, loaded only when `telemetry:` is set.
// Traces: one SERVER span per tools/call, following the OpenTelemetry semantic conventions for
// MCP (span `tools/call <tool>`, mcp.method.name, gen_ai.tool.name, gen_ai.operation.name,
// mcp.session.id, jsonrpc.request.id, error.type), parented on the client's span when the request's
// `params._meta` carries a W3C `traceparent`. Metrics: calls, denials, call latency, audit fsync
// latency, sessions, and any gauge the core registers with observe(). Nothing recorded here ever
// holds an argument value, a result or a secret: only names the policy and the protocol define.
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  type Context,
  type Span,
  type TextMapGetter,
} from '@opentelemetry/api';
import { setGlobalErrorHandler, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPMetricExporter, OTLPMetricExporterBase } from '@opentelemetry/exporter-metrics-otlp-http';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPExporterBase } from '@opentelemetry/otlp-exporter-base';
import {
  convertLegacyHttpOptions,
  createOtlpHttpExportDelegate,
} from '@opentelemetry/otlp-exporter-base/node-http';
import {
  MetricsExporterMetricsHelper,
  ProtobufMetricsSerializer,
  ProtobufTraceSerializer,
  TraceExporterMetricsHelper,
} from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  MeterProvider,
  PeriodicExportingMetricReader,
  type PushMetricExporter,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  type ReadableSpan,
  type SpanExporter,
} from '@opentelemetry/sdk-trace-base';
import { VERSION } from '../version.js';
import { signalUrl, type TelemetryConfig } from './config.js';
import type {
  Attributes,
  CallDecision,
  CallOutcome,
  CallSession,
  Telemetry,
  TelemetryDeps,
  ToolCallTelemetry,
} from './telemetry.js';

// Semantic-convention names (development status: the conventions recommend copying them rather
// than importing @opentelemetry/semantic-conventions/incubating).
const MCP_METHOD_NAME = 'mcp.method.name';
const MCP_SESSION_ID = 'mcp.session.id';
const JSONRPC_REQUEST_ID = 'jsonrpc.request.id';
const GEN_AI_TOOL_NAME = 'gen_ai.tool.name';
const GEN_AI_OPERATION_NAME = 'gen_ai.operation.name';
const NETWORK_TRANSPORT = 'network.transport';
const ERROR_TYPE = 'error.type';
/** Tool names that are no tool of the server (a client can send any text): one metric series. */
const OTHER = '_OTHER';
/** A made-up tool name on a span is cut to this length (after scrubbing). */
const MAX_UNKNOWN_TOOL_NAME = 64;

/** The conventions' advice for mcp.server.operation.duration (seconds). */
const OPERATION_BUCKETS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300];
/** An fdatasync takes tens of microseconds on a fast disk and a second on a sick one. */
const FSYNC_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
];
const SESSION_BUCKETS = [1, 10, 60, 300, 1800, 3600, 4 * 3600, 24 * 3600];
/** Longest an export may take, and the most shutdown waits for the last one. */
const EXPORT_TIMEOUT_MS = 5000;
/** Export errors (collector down) are logged at most this often. */
const ERROR_LOG_INTERVAL_MS = 60_000;

const NETWORK: Record<CallSession['transport'], string | undefined> = {
  socket: 'unix',
  stdio: 'pipe',
  cli: undefined,
};

/** Reads only `traceparent` and `tracestate`, and only string values, from `_meta`. */
const META_GETTER: TextMapGetter<Record<string, unknown>> = {
  get: (carrier, key) => {
    const value = Object.hasOwn(carrier, key) ? carrier[key] : undefined;
    return typeof value === 'string' ? value : undefined;
  },
  keys: () => ['traceparent', 'tracestate'],
};

function traceExporter(config: TelemetryConfig, headers: Record<string, string>): SpanExporter {
  const options = {
    url: signalUrl(config.otlp.endpoint, 'traces'),
    headers,
    timeoutMillis: EXPORT_TIMEOUT_MS,
  };
  if (config.otlp.protocol === 'http/json') return new OTLPTraceExporter(options);
  // What @opentelemetry/exporter-trace-otlp-proto does, with the serializer the JSON exporter's
  // own dependency ships (one package less).
  return new OTLPExporterBase<ReadableSpan[]>(
    createOtlpHttpExportDelegate(
      convertLegacyHttpOptions(options, 'TRACES', 'v1/traces', { 'Content-Type': 'application/x-protobuf' }),
      ProtobufTraceSerializer,
      'otlp_http_span_exporter',
      TraceExporterMetricsHelper,
      undefined,
    ),
  );
}

function metricExporter(config: TelemetryConfig, headers: Record<string, string>): PushMetricExporter {
  const options = {
    url: signalUrl(config.otlp.endpoint, 'metrics'),
    headers,
    timeoutMillis: EXPORT_TIMEOUT_MS,
  };
  if (config.otlp.protocol === 'http/json') return new OTLPMetricExporter(options);
  return new OTLPMetricExporterBase(
    createOtlpHttpExportDelegate<ResourceMetrics, unknown>(
      convertLegacyHttpOptions(options, 'METRICS', 'v1/metrics', {
        'Content-Type': 'application/x-protobuf',
      }),
      ProtobufMetricsSerializer,
      'otlp_http_metric_exporter',
      MetricsExporterMetricsHelper,
      undefined,
    ),
    options,
  );
}

export function startOtel(config: TelemetryConfig, deps: TelemetryDeps): Telemetry {
  let lastErrorLog = 0;
  setGlobalErrorHandler((err) => {
    const now = Date.now();
    if (now - lastErrorLog < ERROR_LOG_INTERVAL_MS) return;
    lastErrorLog = now;
    const message = err instanceof Error ? err.message : String(err);
    deps.log.warn(
      { err: deps.scrub(message), endpoint: config.otlp.endpoint },
      'telemetry export failed (calls are unaffected)',
    );
  });

  const resource = resourceFromAttributes({
    'service.name': config.serviceName,
    'service.version': VERSION,
    'service.instance.id': deps.instanceId ?? randomUUID(),
    'host.name': os.hostname(),
  });
  const tracerProvider = new BasicTracerProvider({
    resource,
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.sampleRatio) }),
    spanProcessors: [
      new BatchSpanProcessor(traceExporter(config, deps.headers), {
        scheduledDelayMillis: Math.min(5000, config.exportIntervalMs),
        exportTimeoutMillis: EXPORT_TIMEOUT_MS,
      }),
    ],
  });
  const meterProvider = new MeterProvider({
    resource,
    readers: [
      new PeriodicExportingMetricReader({
        exporter: metricExporter(config, deps.headers),
        exportIntervalMillis: config.exportIntervalMs,
        exportTimeoutMillis: Math.min(EXPORT_TIMEOUT_MS, config.exportIntervalMs),
      }),
    ],
  });
  const tracer = tracerProvider.getTracer('airlock', VERSION);
  const meter = meterProvider.getMeter('airlock', VERSION);
  const propagator = new W3CTraceContextPropagator();

  const calls = meter.createCounter('airlock.calls', {
    unit: '{call}',
    description: 'Tool calls, by team, server, tool, decision and outcome',
  });
  const denials = meter.createCounter('airlock.denials', {
    unit: '{call}',
    description: 'Tool calls the policy (or a limit) refused',
  });
  const duration = meter.createHistogram('mcp.server.operation.duration', {
    unit: 's',
    description: 'Time from a tools/call request to its answer',
    advice: { explicitBucketBoundaries: OPERATION_BUCKETS },
  });
  const fsync = meter.createHistogram('airlock.audit.fsync.duration', {
    unit: 's',
    description: 'fdatasync of one audit batch (every call waits for one or two)',
    advice: { explicitBucketBoundaries: FSYNC_BUCKETS },
  });
  const sessions = meter.createUpDownCounter('airlock.sessions', {
    unit: '{session}',
    description: 'MCP sessions open',
  });
  const sessionDuration = meter.createHistogram('mcp.server.session.duration', {
    unit: 's',
    description: 'How long MCP sessions stayed open',
    advice: { explicitBucketBoundaries: SESSION_BUCKETS },
  });
  const sessionStarts = new Map<string, number>();

  const sessionAttributes = (s: CallSession): Attributes => {
    const network = NETWORK[s.transport];
    return {
      'airlock.team': s.team,
      'airlock.server': s.server,
      ...(network ? { [NETWORK_TRANSPORT]: network } : {}),
    };
  };

  const startToolCall = (
    session: CallSession,
    tool: string,
    requestId: string | number | undefined,
    meta: unknown,
  ): ToolCallTelemetry => {
    const started = performance.now();
    const known = deps.knownTool(session.server, tool);
    const metricTool = known ? tool : OTHER;
    const network = NETWORK[session.transport];
    const parent: Context =
      meta !== null && typeof meta === 'object'
        ? propagator.extract(ROOT_CONTEXT, meta as Record<string, unknown>, META_GETTER)
        : ROOT_CONTEXT;
    const attributes: Attributes = {
      [MCP_METHOD_NAME]: 'tools/call',
      [GEN_AI_OPERATION_NAME]: 'execute_tool',
      [GEN_AI_TOOL_NAME]: known ? tool : deps.scrub(tool).slice(0, MAX_UNKNOWN_TOOL_NAME),
      'airlock.team': session.team,
      'airlock.server': session.server,
    };
    if (session.transport !== 'cli') attributes[MCP_SESSION_ID] = session.id;
    if (requestId !== undefined) attributes[JSONRPC_REQUEST_ID] = String(requestId);
    if (network) attributes[NETWORK_TRANSPORT] = network;
    // No low-cardinality target for a name that is no tool: the span is named by the method alone.
    const span: Span = tracer.startSpan(
      known ? `tools/call ${tool}` : 'tools/call',
      { kind: SpanKind.SERVER, attributes },
      parent,
    );
    let decision: CallDecision = 'deny';
    let outcome: CallOutcome = 'error';
    let errorType: string | undefined = 'internal';
    let ended = false;
    return {
      settle(d, o, type) {
        decision = d;
        outcome = o;
        // A result with isError set is a `tool_error` in the conventions: denials are too.
        errorType = o === 'ok' ? undefined : (type ?? 'tool_error');
      },
      end() {
        if (ended) return;
        ended = true;
        span.setAttribute('airlock.decision', decision);
        span.setAttribute('airlock.outcome', outcome);
        if (errorType !== undefined) {
          span.setAttribute(ERROR_TYPE, errorType);
          span.setStatus({ code: SpanStatusCode.ERROR, message: outcome });
        }
        span.end();
        const base = {
          'airlock.team': session.team,
          'airlock.server': session.server,
          [GEN_AI_TOOL_NAME]: metricTool,
        };
        calls.add(1, { ...base, 'airlock.decision': decision, 'airlock.outcome': outcome });
        if (decision === 'deny') denials.add(1, base);
        duration.record((performance.now() - started) / 1000, {
          ...base,
          [MCP_METHOD_NAME]: 'tools/call',
          [GEN_AI_OPERATION_NAME]: 'execute_tool',
          ...(network ? { [NETWORK_TRANSPORT]: network } : {}),
          ...(errorType !== undefined ? { [ERROR_TYPE]: errorType } : {}),
        });
      },
    };
  };

  return {
    startToolCall,
    sessionOpened(session) {
      sessionStarts.set(session.id, performance.now());
      sessions.add(1, sessionAttributes(session));
    },
    sessionClosed(session) {
      const started = sessionStarts.get(session.id);
      if (started === undefined) return;
      sessionStarts.delete(session.id);
      const attributes = sessionAttributes(session);
      sessions.add(-1, attributes);
      sessionDuration.record((performance.now() - started) / 1000, attributes);
    },
    auditFsync(seconds) {
      fsync.record(seconds);
    },
    observe(name, read, opts = {}) {
      meter.createObservableGauge(name, opts).addCallback((result) => {
        let value;
        try {
          value = read();
        } catch {
          return; // nothing to report this time
        }
        if (typeof value === 'number') {
          if (Number.isFinite(value)) result.observe(value);
        } else if (value) {
          for (const v of value) if (Number.isFinite(v.value)) result.observe(v.value, v.attributes);
        }
      });
    },
    async shutdown() {
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, EXPORT_TIMEOUT_MS + 1000);
      });
      await Promise.race([
        Promise.allSettled([tracerProvider.shutdown(), meterProvider.shutdown()]).then(() => undefined),
        bound,
      ]);
      clearTimeout(timer);
    },
  };
}
