// `airlock serve` (every team's sockets) and `airlock stdio SERVER --team T` (one session on
// stdin/stdout). Both load the whole broker, which is why they live apart from the light commands.
import type { CommandContext } from '../cli.js';
import { Broker, serveStdio, UserError } from '../broker.js';
import { LOG_FORMATS, defaultLogFormat, type LogFormat } from '../log.js';
import { SERVERS } from '../servers.js';

function logFormat(ctx: CommandContext): LogFormat {
  const given = ctx.values['log-format'];
  if (given === undefined) return defaultLogFormat();
  if (!LOG_FORMATS.includes(given as LogFormat)) {
    throw ctx.usageError(`--log-format must be ${LOG_FORMATS.join(' or ')}, not "${String(given)}"`);
  }
  return given as LogFormat;
}

export async function serveMain(ctx: CommandContext): Promise<number> {
  // Loaded here: `node:v8` is nothing airlock stdio needs.
  (await import('./heap-sizing.js')).sizeBrokerHeap();
  const format = logFormat(ctx);
  const broker = await Broker.start(await ctx.config(), {
    logFormat: format,
    strictSecrets: Boolean(ctx.values['strict-secrets']),
  });
  for (const s of broker.sockets()) broker.core.log.info({ socket: s }, 'ready');
  // A promise nobody handled is a bug, but one team's call must not end every team's broker
  // (Node's default exits): log it for the operator and carry on.
  process.on('unhandledRejection', (reason) => {
    const err = reason instanceof Error ? reason : new Error(String(reason));
    broker.core.log.error(
      { err: broker.core.redactor.scrub(err.message), stack: broker.core.redactor.scrub(err.stack ?? '') },
      'unhandled promise rejection (a bug: please report it); the broker carries on',
    );
  });
  // A reload that fails keeps the policies in force; it must never take the broker down.
  process.on('SIGHUP', () => {
    broker.reload().catch((err: Error) => broker.core.log.error({ err: err.message }, 'reload failed'));
  });
  await new Promise<void>((resolve) => {
    const stop = () => {
      void broker.stop().then(resolve);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  return 0;
}

export async function stdioMain(ctx: CommandContext): Promise<number> {
  const server = ctx.positionals[0]!;
  if (!SERVERS.has(server)) {
    throw new UserError(`unknown server "${server}"; available: ${SERVERS.names.join(', ')}`);
  }
  const team = ctx.values.team;
  if (typeof team !== 'string') throw ctx.usageError('--team TEAM is required');
  await serveStdio(await ctx.config(), server, team);
  return 0;
}
