// A stand-in for an OpenTelemetry collector: an HTTP server on loopback that takes OTLP/HTTP
// exports (/v1/traces, /v1/metrics) in JSON or protobuf, keeps every request's raw bytes, and
// decodes the spans and metric names out of them. Protobuf is decoded from the wire format
// (no .proto compiler is installed): only the fields the tests read.
import http from 'node:http';
import type net from 'node:net';

export type AttributeValue = string | number | boolean;

export interface CollectedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  /** OTLP SpanKind: 2 is SERVER. */
  kind: number;
  attributes: Record<string, AttributeValue>;
  /** OTLP status code: 0 unset, 1 ok, 2 error. */
  statusCode: number;
  resource: Record<string, AttributeValue>;
}

export interface CollectedRequest {
  path: string;
  contentType: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export interface Collector {
  endpoint: string;
  requests: CollectedRequest[];
  spans(): CollectedSpan[];
  /** Names of every metric received. */
  metricNames(): Set<string>;
  /** Data points (attributes and value) of metric `name`, across all exports. */
  metricPoints(name: string): Array<{ attributes: Record<string, AttributeValue>; value: number }>;
  close(): Promise<void>;
}

export async function startCollector(): Promise<Collector> {
  const requests: CollectedRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests.push({
        path: req.url ?? '',
        contentType: String(req.headers['content-type'] ?? ''),
        headers: req.headers,
        body: Buffer.concat(chunks),
      });
      // An empty ExportServiceResponse (full success) in the request's encoding.
      const json = String(req.headers['content-type']).includes('json');
      res.writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf' });
      res.end(json ? '{}' : Buffer.alloc(0));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const of = (signal: string) => requests.filter((r) => r.path === `/v1/${signal}`);
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    spans: () => of('traces').flatMap(decodeSpans),
    metricNames: () => new Set(of('metrics').flatMap((r) => decodeMetrics(r).map((m) => m.name))),
    metricPoints: (name) =>
      of('metrics')
        .flatMap(decodeMetrics)
        .filter((m) => m.name === name)
        .flatMap((m) => m.points),
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// OTLP JSON

interface JsonKeyValue {
  key: string;
  value: { stringValue?: string; boolValue?: boolean; intValue?: string | number; doubleValue?: number };
}

function jsonAttributes(list: JsonKeyValue[] | undefined): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const { key, value } of list ?? []) {
    if (value.stringValue !== undefined) out[key] = value.stringValue;
    else if (value.boolValue !== undefined) out[key] = value.boolValue;
    else if (value.intValue !== undefined) out[key] = Number(value.intValue);
    else if (value.doubleValue !== undefined) out[key] = value.doubleValue;
  }
  return out;
}

function decodeSpans(req: CollectedRequest): CollectedSpan[] {
  if (req.contentType.includes('json')) {
    const body = JSON.parse(req.body.toString('utf8')) as {
      resourceSpans: Array<{
        resource?: { attributes?: JsonKeyValue[] };
        scopeSpans: Array<{
          spans: Array<{
            traceId: string;
            spanId: string;
            parentSpanId?: string;
            name: string;
            kind: number;
            attributes?: JsonKeyValue[];
            status?: { code?: number };
          }>;
        }>;
      }>;
    };
    return body.resourceSpans.flatMap((rs) =>
      rs.scopeSpans.flatMap((ss) =>
        ss.spans.map((s) => ({
          traceId: s.traceId,
          spanId: s.spanId,
          parentSpanId: s.parentSpanId ?? '',
          name: s.name,
          kind: s.kind,
          attributes: jsonAttributes(s.attributes),
          statusCode: s.status?.code ?? 0,
          resource: jsonAttributes(rs.resource?.attributes),
        })),
      ),
    );
  }
  // ExportTraceServiceRequest.resource_spans = 1 → ResourceSpans { resource = 1, scope_spans = 2 }
  // → ScopeSpans { spans = 2 } → Span { trace_id 1, span_id 2, parent_span_id 4, name 5, kind 6,
  // attributes 9, status 15 { code 3 } }.
  return messages(req.body, 1).flatMap((rs) => {
    const resource = pbAttributes(messages(messages(rs, 1)[0] ?? Buffer.alloc(0), 1));
    return messages(rs, 2).flatMap((ss) =>
      messages(ss, 2).map((s) => {
        const f = fields(s);
        const status = f.get(15)?.[0];
        return {
          traceId: hex(f.get(1)?.[0]),
          spanId: hex(f.get(2)?.[0]),
          parentSpanId: hex(f.get(4)?.[0]),
          name: text(f.get(5)?.[0]),
          kind: Number(f.get(6)?.[0] ?? 0),
          attributes: pbAttributes(messages(s, 9)),
          statusCode: Buffer.isBuffer(status) ? Number(fields(status).get(3)?.[0] ?? 0) : 0,
          resource,
        };
      }),
    );
  });
}

interface DecodedMetric {
  name: string;
  points: Array<{ attributes: Record<string, AttributeValue>; value: number }>;
}

function decodeMetrics(req: CollectedRequest): DecodedMetric[] {
  if (req.contentType.includes('json')) {
    type Point = {
      attributes?: JsonKeyValue[];
      asInt?: string | number;
      asDouble?: number;
      count?: string | number;
    };
    const body = JSON.parse(req.body.toString('utf8')) as {
      resourceMetrics: Array<{
        scopeMetrics: Array<{
          metrics: Array<{
            name: string;
            sum?: { dataPoints: Point[] };
            gauge?: { dataPoints: Point[] };
            histogram?: { dataPoints: Point[] };
          }>;
        }>;
      }>;
    };
    return body.resourceMetrics.flatMap((rm) =>
      rm.scopeMetrics.flatMap((sm) =>
        sm.metrics.map((m) => ({
          name: m.name,
          points:
            (m.sum ?? m.gauge ?? m.histogram)?.dataPoints.map((p) => ({
              attributes: jsonAttributes(p.attributes),
              // A histogram point's value here is its count.
              value: Number(p.asInt ?? p.asDouble ?? p.count ?? 0),
            })) ?? [],
        })),
      ),
    );
  }
  // ExportMetricsServiceRequest.resource_metrics = 1 → ResourceMetrics { scope_metrics = 2 }
  // → ScopeMetrics { metrics = 2 } → Metric { name = 1 } (points are not decoded from protobuf).
  return messages(req.body, 1).flatMap((rm) =>
    messages(rm, 2).flatMap((sm) =>
      messages(sm, 2).map((m) => ({ name: text(fields(m).get(1)?.[0]), points: [] })),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Protobuf wire format

type WireValue = bigint | Buffer;

/** Every field of one message: number → values in order (varints as bigint, the rest as bytes). */
function fields(buf: Buffer): Map<number, WireValue[]> {
  const out = new Map<number, WireValue[]>();
  let pos = 0;
  const varint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      const byte = buf[pos++];
      if (byte === undefined) throw new Error('truncated varint');
      result |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return result;
      shift += 7n;
    }
  };
  while (pos < buf.length) {
    const key = Number(varint());
    const field = key >>> 3;
    let value: WireValue;
    switch (key & 7) {
      case 0:
        value = varint();
        break;
      case 1:
        value = buf.subarray(pos, (pos += 8));
        break;
      case 2: {
        const length = Number(varint());
        value = buf.subarray(pos, (pos += length));
        break;
      }
      case 5:
        value = buf.subarray(pos, (pos += 4));
        break;
      default:
        throw new Error(`unsupported wire type ${key & 7}`);
    }
    const list = out.get(field) ?? [];
    list.push(value);
    out.set(field, list);
  }
  return out;
}

function messages(buf: Buffer, field: number): Buffer[] {
  return (fields(buf).get(field) ?? []).filter((v): v is Buffer => Buffer.isBuffer(v));
}

const hex = (v: WireValue | undefined) => (Buffer.isBuffer(v) ? v.toString('hex') : '');
const text = (v: WireValue | undefined) => (Buffer.isBuffer(v) ? v.toString('utf8') : '');

/** KeyValue { key = 1, value = 2: AnyValue { string 1, bool 2, int 3, double 4 } }. */
function pbAttributes(list: Buffer[]): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const kv of list) {
    const f = fields(kv);
    const value = f.get(2)?.[0];
    if (!Buffer.isBuffer(value)) continue;
    const v = fields(value);
    const key = text(f.get(1)?.[0]);
    if (v.has(1)) out[key] = text(v.get(1)![0]);
    else if (v.has(2)) out[key] = v.get(2)![0] === 1n;
    else if (v.has(3)) out[key] = Number(v.get(3)![0]);
    else if (v.has(4)) out[key] = (v.get(4)![0] as Buffer).readDoubleLE(0);
  }
  return out;
}
