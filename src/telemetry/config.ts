// `telemetry:` in airlock.yaml: where traces and metrics go over OTLP/HTTP. Validated with the
// rest of the config (file:line:col errors); nothing here loads an @opentelemetry package.
import { z } from 'zod';
import { secretNameSchema } from '../secrets/config.js';

export const OTLP_PROTOCOLS = ['http/protobuf', 'http/json'] as const;
export type OtlpProtocol = (typeof OTLP_PROTOCOLS)[number];

export const DEFAULT_SERVICE_NAME = 'airlock';
export const DEFAULT_EXPORT_INTERVAL_MS = 60_000;
export const MIN_EXPORT_INTERVAL_MS = 100;

/** An HTTP header name (RFC 9110 token). */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** The OTLP/HTTP base URL (`/v1/traces` and `/v1/metrics` are appended), or why it is refused. */
export function endpointProblem(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `"${text}" is not a URL (write http://collector:4318 or https://…)`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    return `must be an http:// or https:// URL (OTLP/HTTP), not ${url.protocol}`;
  if (url.username || url.password)
    return 'must not carry credentials; put them in telemetry.otlp.headers as a secret';
  if (url.search || url.hash) return 'must not have a query or a fragment';
  if (/\/v1\/(traces|metrics|logs)\/?$/.test(url.pathname))
    return 'is the base URL: /v1/traces and /v1/metrics are appended, so leave them out';
  return undefined;
}

/** `http://c:4318` → `http://c:4318/v1/traces` (a base path is kept: `http://c/otlp/v1/traces`). */
export function signalUrl(endpoint: string, signal: 'traces' | 'metrics'): string {
  const url = new URL(endpoint);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/v1/${signal}`;
  return url.href;
}

export const telemetryConfigSchema = z
  .object({
    // The SPEC's short form, `otlp: http://collector:4318`, is the endpoint with the defaults.
    otlp: z.preprocess(
      (value) => (typeof value === 'string' ? { endpoint: value } : value),
      z
        .object({
          endpoint: z
            .string()
            .superRefine((text, ctx) => {
              const problem = endpointProblem(text);
              if (problem) ctx.addIssue({ code: 'custom', message: problem });
            })
            .describe(
              'OTLP/HTTP base URL, e.g. http://collector:4318 (/v1/traces, /v1/metrics are appended)',
            ),
          protocol: z
            .enum(OTLP_PROTOCOLS)
            .default('http/protobuf')
            .describe('OTLP/HTTP encoding: http/protobuf (default) or http/json'),
          headers: z
            .record(z.string().regex(HEADER_NAME, 'header names are HTTP tokens'), secretNameSchema)
            .default({})
            .describe('Headers sent to the collector: header name → name of a secret in secrets:'),
        })
        .strict()
        .describe('Where traces and metrics are exported (OTLP over HTTP); a URL alone is the endpoint'),
    ),
    serviceName: z.string().min(1).max(255).default(DEFAULT_SERVICE_NAME).describe('service.name'),
    sampleRatio: z
      .number()
      .min(0)
      .max(1)
      .default(1)
      .describe('Share of new traces sampled (a client-sent traceparent decides for its own trace)'),
    exportIntervalMs: z
      .number()
      .int()
      .min(MIN_EXPORT_INTERVAL_MS)
      .max(3_600_000)
      .default(DEFAULT_EXPORT_INTERVAL_MS)
      .describe('How often metrics are exported'),
  })
  .strict()
  .describe('OpenTelemetry traces and metrics over OTLP/HTTP; absent means off');

export type TelemetryConfig = z.output<typeof telemetryConfigSchema>;
