// One MCP session = one SDK Server instance bound to one team and one server, on one transport.
// We use the SDK's low-level Server rather than McpServer.registerTool: McpServer answers calls to
// unregistered tools and arguments that fail its schema itself, before any code of ours runs,
// so those calls could not be audited. Here every tools/call goes through the pipeline.
import { randomUUID } from 'node:crypto';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import {
  CallToolRequestSchema,
  ErrorCode,
  ListToolsRequestSchema,
  McpError,
} from '@modelcontextprotocol/sdk/types.js';
import type { CallPipeline, SessionInfo } from './pipeline.js';
import type { ServerName } from './tool.js';
import { VERSION } from './version.js';

export interface McpSession {
  server: Server;
  /** Tells the client its tool list changed (policy reload). */
  notifyToolsChanged(): void;
  close(): Promise<void>;
  closed: Promise<void>;
}

export async function openSession(
  pipeline: CallPipeline,
  opts: {
    team: string;
    server: ServerName;
    transport: Transport;
    kind: 'socket' | 'stdio';
  },
): Promise<McpSession> {
  const info: SessionInfo = { id: randomUUID(), team: opts.team, server: opts.server, transport: opts.kind };
  const server = new Server(
    { name: `airlock-${opts.server}`, version: VERSION },
    {
      capabilities: { tools: { listChanged: true } },
      instructions:
        `Airlock ${opts.server} tools for team "${opts.team}". Calls run outside your sandbox under the team's ` +
        `policy and are audited. A result starting with "denied:" names the policy rule that refused it.`,
    },
  );
  // MCP's lifecycle: nothing but ping before initialize. The SDK's low-level Server does not
  // enforce it, and a client that skipped the handshake must not get to call tools.
  const requireInitialized = () => {
    if (!server.getClientVersion()) {
      throw new McpError(ErrorCode.InvalidRequest, 'the session is not initialized; send initialize first');
    }
  };
  server.setRequestHandler(ListToolsRequestSchema, async () => {
    requireInitialized();
    return { tools: pipeline.listTools(opts.team, opts.server) };
  });
  server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
    requireInitialized();
    // A call waiting for approval tells a client that asked for progress that it is alive, so
    // the client's request timeout does not end it (MCP progress, resetTimeoutOnProgress).
    const token = request.params._meta?.progressToken;
    const progress =
      token === undefined
        ? undefined
        : (done: number, total: number, message: string) =>
            void extra
              .sendNotification({
                method: 'notifications/progress',
                params: { progressToken: token, progress: done, total, message },
              })
              .catch(() => undefined);
    return pipeline.call(info, request.params.name, request.params.arguments ?? {}, extra.signal, progress);
  });
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  server.onclose = () => resolveClosed();
  await server.connect(opts.transport);
  return {
    server,
    closed,
    notifyToolsChanged: () => void server.sendToolListChanged().catch(() => undefined),
    close: () => server.close(),
  };
}
