#!/usr/bin/env node
// The `airlock` command. Exit codes: 0 ok, 1 user error (bad input, bad policy), 2 internal error.
import { realpathSync } from 'node:fs';
import { parseArgs } from 'node:util';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Broker, serveStdio, UserError } from './broker.js';
import { ConfigError, loadConfig, type AirlockConfig } from './config.js';
import { auditTailCommand, auditVerifyCommand } from './commands/audit.js';
import { policyCheckCommand, policySchemaCommand } from './commands/policy.js';
import { secretsCommand } from './commands/secrets.js';
import { doctorCommand } from './commands/doctor.js';
import { claudeConfigCommand } from './commands/claude-config.js';
import { SERVERS, SERVER_MAP } from './servers.js';
import type { ServerName } from './tool.js';
import { VERSION } from './version.js';
import bridge from './bridge.cjs';

const HELP = `airlock ${VERSION} — credential broker for AI coding agents

usage:
  airlock serve [--config FILE]
  airlock stdio SERVER --team TEAM [--config FILE]
  airlock bridge SOCKET
  airlock bridge --listen HOST:PORT SOCKET
  airlock policy check [--config FILE] [PATH...]
  airlock policy schema
  airlock secrets set NAME | list | delete NAME      (set reads the value from stdin)
  airlock audit verify [--file FILE] [--config FILE]
  airlock audit tail [-f] [--team T] [--decision allow|deny] [--json] [-n N] [--file FILE]
  airlock claude-config --team TEAM [--sandbox [--socket-dir DIR]] [--config FILE]
  airlock approvals list [--team T] [--json]
  airlock approve ID [--for DURATION]
  airlock deny ID [--reason TEXT]
  airlock ui [--listen 127.0.0.1:PORT | unix:PATH]    (token from AIRLOCK_UI_TOKEN, or a random one)
  airlock doctor [--config FILE]

Every command accepts --config FILE (default ./airlock.yaml).`;

const CLI_PATH = fileURLToPath(import.meta.url);

type OptionSpec = NonNullable<Parameters<typeof parseArgs>[0]>['options'];
type Parsed = { values: Record<string, string | boolean | undefined>; positionals: string[] };

function parse(args: string[], options: OptionSpec = {}): Parsed {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      // liftConfig took every `--config FILE` out; one left here has no value, an error.
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      ...options,
    },
  });
  return { values: values as Parsed['values'], positionals };
}

/**
 * `--config FILE` may stand anywhere (`airlock --config F audit verify` as well as
 * `airlock audit verify --config F`): it is lifted out, so each command sees only its own arguments.
 */
function liftConfig(argv: string[]): { args: string[]; config: string | undefined } {
  const out: string[] = [];
  let config: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (arg === '--config' && i + 1 < argv.length) config = argv[++i];
    else if (arg.startsWith('--config=')) config = arg.slice('--config='.length);
    else out.push(arg);
  }
  return { args: out, config };
}

export async function main(rawArgv: string[]): Promise<number> {
  const lifted = liftConfig(rawArgv);
  const configFile = path.resolve(lifted.config ?? 'airlock.yaml');
  const config = (): Promise<AirlockConfig> => loadConfig(configFile);
  const [command, ...rest] = lifted.args;
  switch (command) {
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(HELP + '\n');
      return command === undefined ? 1 : 0;
    case '--version':
    case 'version':
      process.stdout.write(VERSION + '\n');
      return 0;

    case 'serve': {
      parse(rest);
      const broker = await Broker.start(await config());
      for (const s of broker.sockets()) broker.core.log.info({ socket: s }, 'ready');
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

    case 'stdio': {
      const { values, positionals } = parse(rest, { team: { type: 'string' } });
      const server = positionals[0];
      if (!server || positionals.length !== 1) throw new UserError('usage: airlock stdio SERVER --team TEAM');
      if (!SERVER_MAP.has(server as ServerName)) {
        throw new UserError(`unknown server "${server}"; available: ${[...SERVER_MAP.keys()].join(', ')}`);
      }
      if (!values.team) throw new UserError('--team TEAM is required');
      await serveStdio(await config(), server as ServerName, values.team as string);
      return 0;
    }

    case 'bridge':
      // The bridge takes its own simple argv; --config (lifted out above) is accepted and ignored.
      return bridge.runBridge(rest);

    case 'policy': {
      const [sub, ...more] = rest;
      const { positionals } = parse(more);
      if (sub === 'check') {
        return policyCheckCommand({
          config: configFile,
          paths: positionals,
          servers: SERVERS,
        });
      }
      if (sub === 'schema') return policySchemaCommand({ servers: SERVERS });
      throw new UserError('usage: airlock policy check [PATH...] | airlock policy schema');
    }

    case 'secrets': {
      const [sub, ...more] = rest;
      const [name, ...extraArgs] = parse(more).positionals;
      if (sub !== 'set' && sub !== 'list' && sub !== 'delete') {
        throw new UserError('usage: airlock secrets set NAME | list | delete NAME');
      }
      // The command checks its arguments itself (a value given as an argument gets its own warning).
      return secretsCommand({ action: sub, name, extraArgs, stdin: process.stdin });
    }

    case 'audit': {
      const [sub, ...more] = rest;
      const { values, positionals } = parse(more, {
        file: { type: 'string' },
        follow: { type: 'boolean', short: 'f' },
        team: { type: 'string' },
        decision: { type: 'string' },
        json: { type: 'boolean' },
        lines: { type: 'string', short: 'n' },
      });
      if (positionals.length) throw new UserError(`unexpected argument "${positionals[0]}"`);
      const file = values.file ? path.resolve(values.file as string) : (await config()).audit.file;
      if (sub === 'verify') return auditVerifyCommand({ file });
      if (sub === 'tail') {
        const decision = values.decision as string | undefined;
        if (decision !== undefined && decision !== 'allow' && decision !== 'deny') {
          throw new UserError('--decision must be allow or deny');
        }
        const controller = new AbortController();
        process.once('SIGINT', () => controller.abort());
        process.once('SIGTERM', () => controller.abort());
        return auditTailCommand({
          file,
          follow: Boolean(values.follow),
          team: values.team as string | undefined,
          decision,
          json: Boolean(values.json),
          lines: values.lines !== undefined ? Number(values.lines) : undefined,
          signal: controller.signal,
        });
      }
      throw new UserError('usage: airlock audit verify | airlock audit tail');
    }

    case 'claude-config': {
      const { values } = parse(rest, {
        team: { type: 'string' },
        sandbox: { type: 'boolean' },
        'socket-dir': { type: 'string' },
      });
      if (!values.team) throw new UserError('--team TEAM is required');
      return claudeConfigCommand({
        config: await config(),
        team: values.team as string,
        sandbox: Boolean(values.sandbox),
        socketDir: values['socket-dir'] as string | undefined,
        cliPath: CLI_PATH,
      });
    }

    case 'approvals':
    case 'approve':
    case 'deny': {
      const { values, positionals } = parse(rest, {
        team: { type: 'string' },
        json: { type: 'boolean' },
        for: { type: 'string' },
        reason: { type: 'string' },
      });
      const { approvalsCommand } = await import('./commands/approvals.js');
      return approvalsCommand(command, positionals, values, (await config()).stateDir);
    }

    case 'ui': {
      const { values, positionals } = parse(rest, { listen: { type: 'string' } });
      if (positionals.length) throw new UserError(`unexpected argument "${positionals[0]}"`);
      const { uiCommand } = await import('./commands/ui.js');
      return uiCommand({ config: await config(), listen: values.listen as string | undefined });
    }

    case 'doctor': {
      parse(rest);
      return doctorCommand({ configFile });
    }

    default:
      throw new UserError(`unknown command "${command}"\n\n${HELP}`);
  }
}

function isUserError(err: unknown): boolean {
  if (err instanceof UserError || err instanceof ConfigError) return true;
  const code = (err as { code?: string })?.code;
  // util.parseArgs reports unknown options and missing values with these codes.
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS');
}

if (process.argv[1] && realpathSync(path.resolve(process.argv[1])) === realpathSync(CLI_PATH)) {
  // `airlock audit tail | head` closes the pipe early: that is the reader's choice, not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
  });
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: Error) => {
      if (err instanceof ConfigError) {
        for (const i of err.issues) process.stderr.write(`${i.file}:${i.line}:${i.col}: ${i.message}\n`);
        if (err.issues.length === 0) process.stderr.write(`airlock: ${err.message}\n`);
      } else {
        process.stderr.write(`airlock: ${err.message}\n`);
      }
      process.exitCode = isUserError(err) ? 1 : 2;
    },
  );
}
