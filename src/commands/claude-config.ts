// `airlock claude-config --team T [--sandbox]`: the `.mcp.json` Claude Code needs for a team.
// With --sandbox the servers are reached through `airlock-bridge` on the sockets as mounted in
// the container (/run/airlock/<server>.sock); without it, Claude Code on the host runs
// `airlock stdio` directly.
import path from 'node:path';
import type { CommandContext } from '../cli.js';
import type { AirlockConfig } from '../config/airlock-yaml.js';
import { checkPolicyFiles } from '../policy/team-policy.js';
import { SERVERS } from '../servers.js';
import { UserError } from '../broker.js';
import type { ServerName } from '../tool.js';

/** Where `docker/run-agent.sh` mounts the team's socket folder inside the container. */
export const SANDBOX_SOCKET_DIR = '/run/airlock';
/** Where the model socket is exposed over loopback TCP inside the container. */
export const SANDBOX_MODEL_LISTEN = '127.0.0.1:8080';

export interface McpJson {
  mcpServers: Record<
    string,
    { type: 'stdio'; command: string; args: string[]; env?: Record<string, string> }
  >;
}

export function buildClaudeConfig(opts: {
  config: AirlockConfig;
  team: string;
  servers: ServerName[];
  sandbox: boolean;
  cliPath: string;
  socketDir?: string;
}): McpJson {
  const mcpServers: McpJson['mcpServers'] = {};
  for (const server of opts.servers) {
    mcpServers[server] = opts.sandbox
      ? {
          type: 'stdio',
          command: 'airlock-bridge',
          args: [path.posix.join(opts.socketDir ?? SANDBOX_SOCKET_DIR, `${server}.sock`)],
        }
      : {
          type: 'stdio',
          command: process.execPath,
          args: [opts.cliPath, 'stdio', server, '--team', opts.team, '--config', opts.config.file],
        };
  }
  return { mcpServers };
}

export async function claudeConfigCommand(opts: {
  config: AirlockConfig;
  team: string;
  sandbox: boolean;
  cliPath: string;
  /** Where the team's socket folder is mounted in the sandbox (default /run/airlock). */
  socketDir?: string;
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}): Promise<number> {
  const out = opts.out ?? process.stdout;
  const err = opts.err ?? process.stderr;
  // Only this team's policy matters: another team's broken file must not stop it.
  const { policies, issues } = await checkPolicyFiles(opts.config, SERVERS);
  const policy = policies.find((p) => p.team === opts.team);
  if (!policy && issues.length) {
    throw new UserError(
      `no valid policy for team "${opts.team}" in ${opts.config.policies}:\n` +
        issues.map((i) => `${i.file}:${i.line}:${i.col}: ${i.message}`).join('\n'),
    );
  }
  if (!policy) throw new UserError(`no policy for team "${opts.team}" in ${opts.config.policies}`);
  const servers = Object.keys(policy.servers).filter((s) => SERVERS.has(s));
  if (opts.socketDir !== undefined && !path.isAbsolute(opts.socketDir)) {
    throw new UserError(`--socket-dir must be an absolute path inside the sandbox, got "${opts.socketDir}"`);
  }
  const json = buildClaudeConfig({ ...opts, servers });
  const mounted = opts.socketDir ?? SANDBOX_SOCKET_DIR;
  out.write(JSON.stringify(json, null, 2) + '\n');
  const allow = servers.map((s) => `mcp__${s}__*`);
  err.write(
    `# Claude Code settings (.claude/settings.json): {"permissions":{"allow":${JSON.stringify(allow)}}}\n`,
  );
  if (opts.sandbox) {
    const hasModel = policy.model !== undefined;
    err.write(`# mount ${path.join(opts.config.socketDir, opts.team)} at ${mounted} in the container\n`);
    if (hasModel) {
      err.write(
        `# model API: run \`airlock-bridge --listen ${SANDBOX_MODEL_LISTEN} ${mounted}/model.sock\` in the container\n` +
          `ANTHROPIC_BASE_URL=http://${SANDBOX_MODEL_LISTEN}\n`,
      );
    }
  }
  return 0;
}

export async function claudeConfigMain(ctx: CommandContext): Promise<number> {
  const team = ctx.values.team;
  if (typeof team !== 'string') throw ctx.usageError('--team TEAM is required');
  const socketDir = ctx.values['socket-dir'];
  return claudeConfigCommand({
    config: await ctx.config(),
    team,
    sandbox: Boolean(ctx.values.sandbox),
    socketDir: typeof socketDir === 'string' ? socketDir : undefined,
    cliPath: ctx.cliPath,
  });
}
