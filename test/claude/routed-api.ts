// A Messages API stand-in for a real Claude Code session: a front server that sends each request
// either to the scripted conversation (`main`, whose queue of replies drives the agent loop) or
// to a second scripted API that answers everything with its fallback (`side`). Claude Code makes
// side requests besides the agent loop (a connectivity HEAD, titles, small-model calls); they
// must not consume the scripted replies. A request belongs to the agent loop when it offers the
// model an MCP tool (`tools[].name` starting with `mcp__`), which only the main loop does.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startScriptedApi, type ScriptedApi, type ScriptedApiOptions } from '../model/scripted-api.js';

export interface FrontRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  /** Parsed JSON body, the raw text, or undefined when empty. */
  body: unknown;
  route: 'main' | 'side';
}

export interface RoutedApi {
  url: string;
  /** Every request that reached the front server, in arrival order. */
  requests: FrontRequest[];
  /** The agent loop's API: its queue holds the scripted conversation. */
  main: ScriptedApi;
  /** Everything else, answered with `sideFallback`. */
  side: ScriptedApi;
  close(): Promise<void>;
}

export function offersMcpTools(body: unknown): boolean {
  const tools = (body as { tools?: unknown } | undefined)?.tools;
  return (
    Array.isArray(tools) &&
    tools.some(
      (t) =>
        typeof (t as { name?: unknown })?.name === 'string' &&
        (t as { name: string }).name.startsWith('mcp__'),
    )
  );
}

export async function startRoutedApi(opts: {
  apiKey: string;
  replies: NonNullable<ScriptedApiOptions['replies']>;
  sideFallback?: ScriptedApiOptions['fallback'];
  /** Called (before forwarding) with each agent-loop request and its 1-based number. */
  onMainRequest?: (request: FrontRequest, count: number) => void;
}): Promise<RoutedApi> {
  const main = await startScriptedApi({ apiKey: opts.apiKey, replies: opts.replies });
  const side = await startScriptedApi({ apiKey: opts.apiKey, fallback: opts.sideFallback ?? { text: 'OK' } });
  const requests: FrontRequest[] = [];
  let mainCount = 0;

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      let body: unknown = undefined;
      if (raw.length) {
        try {
          body = JSON.parse(raw.toString('utf8'));
        } catch {
          body = raw.toString('utf8');
        }
      }
      const route = req.method === 'POST' && offersMcpTools(body) ? 'main' : 'side';
      const record: FrontRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body,
        route,
      };
      requests.push(record);
      if (route === 'main') opts.onMainRequest?.(record, ++mainCount);
      const target = route === 'main' ? main : side;
      const forward = http.request(
        { host: '127.0.0.1', port: target.port, method: req.method, path: req.url, headers: req.headers },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      forward.on('error', () => res.destroy());
      res.on('close', () => forward.destroy());
      forward.end(raw);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    main,
    side,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await main.close();
      await side.close();
    },
  };
}
