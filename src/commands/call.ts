// `airlock call SERVER TOOL --team T [--json ARGS]`: one tool call through the same pipeline a
// session uses (default deny, validation, policy, rate limit, durable audit, redaction), so an
// operator can try a policy without writing JSON-RPC. Audited with `transport: "cli"`.
import { randomUUID } from 'node:crypto';
import type { CommandContext } from '../cli.js';
import { createCore, UserError } from '../broker.js';
import { SERVERS } from '../servers.js';
import type { ServerName } from '../tool.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks).toString('utf8');
}

/** The tool arguments: a JSON object (never anything else: the pipeline would refuse it anyway). */
export function parseCallArgs(text: string | undefined): Record<string, unknown> {
  if (text === undefined || text.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UserError(`--json is not valid JSON (${(err as Error).message})`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new UserError('--json must be a JSON object of tool arguments, e.g. \'{"workspace":"api"}\'');
  }
  return value as Record<string, unknown>;
}

export async function callMain(ctx: CommandContext): Promise<number> {
  const [server, tool] = ctx.positionals as [string, string];
  const team = ctx.values.team;
  if (typeof team !== 'string') throw ctx.usageError('--team TEAM is required');
  if (!SERVERS.has(server)) {
    throw new UserError(`unknown server "${server}"; available: ${SERVERS.names.join(', ')}`);
  }
  const json = ctx.values.json;
  const args = parseCallArgs(json === '-' ? await readStdin() : (json as string | undefined));
  const config = await ctx.config();
  // Warnings only: the result is the output. No policy watcher: one call, then exit.
  const core = await createCore(config, { watch: false, logLevel: process.env.AIRLOCK_LOG_LEVEL ?? 'warn' });
  try {
    const policy = core.policies.get(team);
    if (!policy) throw new UserError(`no policy for team "${team}" in ${config.policies}`);
    if (!policy.servers[server]) throw new UserError(`team "${team}" does not enable the ${server} server`);
    const session = { id: randomUUID(), team, server: server as ServerName, transport: 'cli' as const };
    const controller = new AbortController();
    const abort = () => controller.abort();
    process.once('SIGINT', abort);
    process.once('SIGTERM', abort);
    const result = await core.pipeline.call(session, tool, args, controller.signal);
    process.off('SIGINT', abort);
    process.off('SIGTERM', abort);
    for (const c of result.content)
      if (c.type === 'text') process.stdout.write(c.text.endsWith('\n') ? c.text : `${c.text}\n`);
    // Denied or failed: the text says why; the exit code lets scripts tell.
    return result.isError ? 1 : 0;
  } finally {
    await core.close();
  }
}
