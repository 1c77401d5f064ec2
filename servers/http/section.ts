// The `servers.http` policy section (without `tools`, which the core adds):
//
//   hosts:
//     - origin: https://api.stripe.com     # scheme://host[:port], exactly as URL.origin writes it
//       methods: [GET]                      # upper-case; default [GET] (read-only unless asked)
//       paths: ["/v1/charges*"]             # globs on the URL path (query not matched); default ["/**"]
//       inject: { header: Authorization, value: "Bearer ${secret:stripe-key}" }
//       allowPrivateAddress: false          # default; true lets this origin resolve to loopback/private
//   maxResponseBytes: 1048576               # default 1 MiB, on the wire and after decompression
//   timeoutMs: 10000                        # default 10 s, for the whole call including redirects
//
// Several entries may name the same origin (e.g. GET on /** and POST on one path); a request is
// allowed when one entry matches its origin, method and path, and that entry's `inject` and
// `allowPrivateAddress` apply.
import { z } from 'zod';
import { globSchema } from '../../src/policy/glob.js';
import type { SecretRef } from '../../src/tool.js';
import { classifyHostname } from '../../src/net/addresses.js';

/** Methods a policy may allow. TRACE and CONNECT are left out: TRACE echoes injected credentials. */
export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

/** RFC 9110 field-name token. */
export const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Headers the client itself controls (framing, connection, routing): never taken from a caller or policy. */
export const CLIENT_CONTROLLED_HEADERS: ReadonlySet<string> = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'te',
  'trailer',
  'upgrade',
  'expect',
  'keep-alive',
  'accept-encoding',
]);

/** `${secret:NAME}`, the only substitution in a policy. */
export const SECRET_REF = /\$\{secret:([A-Za-z0-9][A-Za-z0-9._-]*)\}/g;

export const DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;
export const DEFAULT_TIMEOUT_MS = 10_000;

function originProblem(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `origin ${JSON.stringify(value)} is not a URL; write scheme://host[:port]`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    return `origin must use http: or https:, not ${url.protocol}`;
  if (url.username || url.password) return 'origin must not contain user info; use inject for credentials';
  if (value !== url.origin)
    return `write the origin as ${url.origin} (scheme://host[:port] only: no path, query or user)`;
  if (classifyHostname(url.hostname)?.kind === 'metadata')
    return `${url.hostname} is a cloud metadata endpoint, which is never reachable`;
  return undefined;
}

const originSchema = z
  .string()
  .superRefine((value, ctx) => {
    const problem = originProblem(value);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  })
  .describe('scheme://host[:port] of the upstream, e.g. https://api.stripe.com');

function injectValueProblem(value: string): string | undefined {
  if (/[\0\r\n]/.test(value)) return 'inject value must not contain CR, LF or NUL';
  const withoutRefs = value.replace(SECRET_REF, '');
  if (withoutRefs.includes('${'))
    return 'the only substitution is ${secret:NAME} (NAME: letters, digits, ".", "_", "-")';
  return undefined;
}

const injectSchema = z
  .object({
    header: z
      .string()
      .regex(HEADER_NAME, 'header must be an HTTP header name')
      .refine(
        (h) => !CLIENT_CONTROLLED_HEADERS.has(h.toLowerCase()),
        'this header is set by the client itself',
      )
      .describe('Request header to add, e.g. Authorization'),
    value: z
      .string()
      .superRefine((value, ctx) => {
        const problem = injectValueProblem(value);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      })
      .describe('Header value; ${secret:NAME} is replaced by the named secret on the host'),
  })
  .strict();

export const hostEntrySchema = z
  .object({
    origin: originSchema,
    methods: z
      .array(z.enum(HTTP_METHODS))
      .min(1)
      .default(['GET'])
      .describe('Allowed methods (upper-case); default [GET]'),
    paths: z.array(globSchema).min(1).default(['/**']).describe('Allowed URL path globs; default ["/**"]'),
    inject: injectSchema.optional().describe('A header added on the host for this origin only'),
    allowPrivateAddress: z
      .boolean()
      .default(false)
      .describe(
        'Allow this origin to resolve to loopback/private/link-local addresses (never cloud metadata)',
      ),
  })
  .strict();

export const httpSectionSchema = z
  .object({
    hosts: z.array(hostEntrySchema).min(1).describe('Upstreams the team may call'),
    maxResponseBytes: z
      .number()
      .int()
      .positive()
      .max(16 * 1024 * 1024)
      .default(DEFAULT_MAX_RESPONSE_BYTES)
      .describe('Response body cap in bytes, on the wire and after decompression; default 1 MiB'),
    timeoutMs: z
      .number()
      .int()
      .positive()
      .max(300_000)
      .default(DEFAULT_TIMEOUT_MS)
      .describe('Deadline for the whole call (DNS, connect, redirects, body); default 10000'),
  })
  .strict();

export type HttpSection = z.output<typeof httpSectionSchema>;
export type HostEntry = HttpSection['hosts'][number];

/** Every `${secret:NAME}` used by inject values, with its YAML path. */
export function httpSecretRefs(section: HttpSection): SecretRef[] {
  const refs: SecretRef[] = [];
  section.hosts.forEach((entry, index) => {
    if (!entry.inject) return;
    for (const match of entry.inject.value.matchAll(SECRET_REF)) {
      refs.push({ name: match[1]!, path: ['hosts', index, 'inject', 'value'] });
    }
  });
  return refs;
}
