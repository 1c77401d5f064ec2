#!/usr/bin/env node
// The `airlock` command. Exit codes: 0 ok, 1 user error (bad input, bad policy), 2 internal error.
//
// Every command is one entry of COMMANDS: its usage line, its options (with the help text for
// each) and a `run` that imports its implementation from src/commands/<name>.ts only when that
// command runs. This file imports nothing but Node built-ins, so `airlock --help`, `policy
// check` or `bridge` never pay for loading the broker, the MCP SDK or every server.
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { AirlockConfig } from './config/airlock-yaml.js';
import { VERSION } from './version.js';

export interface OptionDef {
  type: 'string' | 'boolean';
  short?: string;
  /** Placeholder shown in help for a string option (`--team TEAM`). */
  value?: string;
  help: string;
  multiple?: boolean;
  /** The command cannot run without it (shown without brackets in usage). */
  required?: boolean;
}

export type OptionValues = Record<string, string | boolean | string[] | undefined>;

/** What a command's implementation gets: its parsed arguments and the config, loaded on demand. */
export interface CommandContext {
  /** The command's words, e.g. `audit tail`. */
  name: string;
  values: OptionValues;
  positionals: string[];
  /** Absolute path of the config file (`--config FILE`, default ./airlock.yaml). */
  configFile: string;
  /** Whether `--config` was given (commands that can run without a config need to know). */
  configGiven: boolean;
  config(): Promise<AirlockConfig>;
  /** This file, for commands that print command lines that run airlock again. */
  cliPath: string;
  /** A user error (exit 1) that ends with the command's usage line. */
  usageError(message: string): Error;
}

export interface CommandSpec {
  /** The words that select it: `doctor`, `audit tail`. */
  name: string;
  /** Positional arguments as shown in usage: `SERVER TOOL`, `[PATH...]`. */
  args?: string;
  summary: string;
  options?: Record<string, OptionDef>;
  /** Arguments go to the implementation unparsed (the bridge has its own syntax); --help still works. */
  raw?: boolean;
  /** Positionals past `args` go to the command, which checks them (and must never echo them). */
  extraArgs?: boolean;
  run(ctx: CommandContext): Promise<number>;
}

const TEAM = {
  type: 'string',
  value: 'TEAM',
  help: 'the team whose policy applies',
  required: true,
} as const;
const JSON_OUT = { type: 'boolean', help: 'print machine-readable JSON instead of text' } as const;
const AUDIT_FILE = {
  type: 'string',
  value: 'FILE',
  help: 'audit log to read (default: audit.file of the config; no config needed when given)',
} as const;

/** Every command. Adding one is one entry here plus its implementation in src/commands/. */
export const COMMANDS: CommandSpec[] = [
  {
    name: 'serve',
    summary:
      "serves every team's sockets; reloads policies on change or SIGHUP; drains in-flight calls on SIGTERM",
    options: {
      'log-format': {
        type: 'string',
        value: 'json|pretty',
        help: 'log lines as JSON (default when stderr is not a terminal) or readable lines with local times',
      },
      'strict-secrets': {
        type: 'boolean',
        help: 'refuse to start when any secret does not resolve (also `secrets: { strict: true }`)',
      },
    },
    run: async (ctx) => (await import('./commands/serve.js')).serveMain(ctx),
  },
  {
    name: 'stdio',
    args: 'SERVER',
    summary: 'serves one server on stdin/stdout (Claude Code on the host, no sandbox)',
    options: { team: TEAM },
    run: async (ctx) => (await import('./commands/serve.js')).stdioMain(ctx),
  },
  {
    name: 'bridge',
    args: '[--listen HOST:PORT] SOCKET',
    summary:
      'relays stdin/stdout to a Unix socket (exits when either side closes); with --listen, forwards loopback TCP connections to it',
    raw: true,
    run: async (ctx) => (await import('./bridge.cjs')).default.runBridge(ctx.positionals),
  },
  {
    name: 'init',
    summary:
      'creates airlock.yaml, a commented team policy and the folders (right owners and modes), then prints the next commands',
    options: {
      dir: { type: 'string', value: 'DIR', help: 'where to create airlock.yaml and policies/ (default: .)' },
      team: { type: 'string', value: 'TEAM', help: 'name of the first team (default: my-team)' },
    },
    run: async (ctx) => (await import('./commands/init.js')).initMain(ctx),
  },
  {
    name: 'call',
    args: 'SERVER TOOL',
    summary:
      'runs one tool call through the same pipeline as a session (policy, rate limit, audit as transport "cli") and prints the result',
    options: {
      team: TEAM,
      json: {
        type: 'string',
        value: 'ARGS',
        help: 'the tool arguments as a JSON object (default {}; - reads stdin)',
      },
    },
    run: async (ctx) => (await import('./commands/call.js')).callMain(ctx),
  },
  {
    name: 'policy check',
    args: '[PATH...]',
    summary:
      "validates policy files (default: the config's policy folder) against the config's secrets; without a config, PATHs are checked with secret names by shape only",
    options: { json: JSON_OUT },
    run: async (ctx) => (await import('./commands/policy.js')).policyCheckMain(ctx),
  },
  {
    name: 'policy status',
    summary:
      'shows where policies come from; for a git source the commit in force, its signer, the last fetch and the last error',
    options: { json: JSON_OUT },
    run: async (ctx) => (await import('./commands/policy.js')).policyStatusMain(ctx),
  },
  {
    name: 'policy schema',
    summary: 'prints the JSON Schema of the policy format (for editors)',
    run: async () => (await import('./commands/policy.js')).policySchemaMain(),
  },
  {
    name: 'secrets set',
    args: 'NAME',
    // A value given as an argument gets the command's own warning, which never echoes it.
    extraArgs: true,
    summary:
      'stores a secret in the OS keychain (service "airlock"); the value is read from stdin, never argv',
    run: async (ctx) => (await import('./commands/secrets.js')).secretsMain(ctx, 'set'),
  },
  {
    name: 'secrets list',
    summary: 'lists the names of the secrets in the OS keychain',
    run: async (ctx) => (await import('./commands/secrets.js')).secretsMain(ctx, 'list'),
  },
  {
    name: 'secrets delete',
    args: 'NAME',
    summary: 'deletes a secret from the OS keychain',
    run: async (ctx) => (await import('./commands/secrets.js')).secretsMain(ctx, 'delete'),
  },
  {
    name: 'audit verify',
    summary:
      'checks the hash chain (several files: a rotated log, oldest first); prints the record count and interrupted calls, or the first bad line and exits 1',
    options: {
      file: {
        type: 'string',
        value: 'FILE',
        multiple: true,
        help: 'audit log to read, repeatable for rotated files in order (default: audit.file of the config)',
      },
      from: { type: 'string', value: 'SEQ:HASH', help: 'the head a file starting mid-chain continues' },
      'expect-head': {
        type: 'string',
        value: 'SEQ:HASH|HEADFILE',
        help: 'a head taken earlier (or a signed head file from audit head --json) that must be in the chain',
      },
      key: { type: 'string', value: 'PEM', help: "the host's public key (default: the one in stateDir)" },
      postgres: {
        type: 'boolean',
        help: "checks every broker's chain in the audit.postgres table instead (one line per broker)",
      },
      json: JSON_OUT,
    },
    run: async (ctx) => (await import('./commands/audit.js')).auditChainMain('verify', ctx),
  },
  {
    name: 'audit head',
    summary: "prints the last record's SEQ:HASH, signed with the host key in stateDir",
    options: { file: AUDIT_FILE, json: JSON_OUT },
    run: async (ctx) => (await import('./commands/audit.js')).auditChainMain('head', ctx),
  },
  {
    name: 'audit rotate',
    summary: 'starts a new audit file whose first record continues the chain of the last',
    options: { file: AUDIT_FILE },
    run: async (ctx) => (await import('./commands/audit.js')).auditChainMain('rotate', ctx),
  },
  {
    name: 'audit tail',
    summary: 'prints the last audit records as a table fitted to the terminal (colour on a terminal only)',
    options: {
      follow: { type: 'boolean', short: 'f', help: 'keep printing records as they are appended' },
      lines: {
        type: 'string',
        short: 'n',
        value: 'N',
        help: 'how many matching records to print first (default 10)',
      },
      team: { type: 'string', value: 'TEAM', help: 'only records of this team' },
      server: { type: 'string', value: 'SERVER', help: 'only records of this server (git, http, model, …)' },
      tool: { type: 'string', value: 'TOOL', help: 'only records of this tool' },
      session: { type: 'string', value: 'ID', help: 'only records of this session (a prefix is enough)' },
      decision: { type: 'string', value: 'allow|deny', help: 'only allowed or only denied calls' },
      since: {
        type: 'string',
        value: 'TIME',
        help: 'only records at or after TIME: an ISO time (2026-11-25T22:00) or a duration back from now (90s, 15m, 2h, 7d)',
      },
      json: { type: 'boolean', help: 'print the records as JSON lines' },
      file: AUDIT_FILE,
      postgres: {
        type: 'boolean',
        help: "every broker's records from the audit.postgres table (with a BROKER column)",
      },
    },
    run: async (ctx) => (await import('./commands/audit.js')).auditTailMain(ctx),
  },
  {
    name: 'audit migrate',
    summary:
      'creates the audit.postgres table (idempotent): append-only triggers, INSERT and SELECT only for the shipping role',
    options: {
      admin: {
        type: 'string',
        value: 'SECRET',
        help: 'secret holding the URL of the role that owns the table (default: audit.postgres.connection)',
      },
    },
    run: async (ctx) => (await import('./commands/audit.js')).auditMigrateMain(ctx),
  },
  {
    name: 'limits migrate',
    summary:
      'creates the fleet-wide limit table (airlock_limits) in the PostgreSQL of limits.connection; safe to run again',
    run: async (ctx) => (await import('./limits/migrate-command.js')).limitsMigrateMain(ctx),
  },
  {
    name: 'claude-config',
    summary:
      "prints a .mcp.json for a team's servers (bridge commands with --sandbox, stdio commands without)",
    options: {
      team: TEAM,
      sandbox: { type: 'boolean', help: 'reach the servers through airlock-bridge on the mounted sockets' },
      'socket-dir': {
        type: 'string',
        value: 'DIR',
        help: 'where the socket folder is mounted in the sandbox (default /run/airlock; with --sandbox)',
      },
    },
    run: async (ctx) => (await import('./commands/claude-config.js')).claudeConfigMain(ctx),
  },
  {
    name: 'approvals list',
    summary: 'lists the calls waiting for a human decision (host side only)',
    options: { team: { type: 'string', value: 'TEAM', help: 'only this team' }, json: JSON_OUT },
    run: async (ctx) =>
      (await import('./commands/approvals.js')).approvalsListCommand({
        stateDir: (await ctx.config()).stateDir,
        team: typeof ctx.values.team === 'string' ? ctx.values.team : undefined,
        json: ctx.values.json === true,
      }),
  },
  {
    name: 'approve',
    args: 'ID',
    summary: 'approves one pending call (audited with your user name)',
    options: {
      for: {
        type: 'string',
        value: 'DURATION',
        help: 'also approve identical calls (same digest) for this long, e.g. 30m',
      },
    },
    run: async (ctx) =>
      (await import('./commands/approvals.js')).approveCommand({
        stateDir: (await ctx.config()).stateDir,
        id: ctx.positionals[0]!,
        for: typeof ctx.values.for === 'string' ? ctx.values.for : undefined,
      }),
  },
  {
    name: 'deny',
    args: 'ID',
    summary: 'denies one pending call (audited with your user name)',
    options: { reason: { type: 'string', value: 'TEXT', help: 'why, shown to the agent and audited' } },
    run: async (ctx) =>
      (await import('./commands/approvals.js')).denyCommand({
        stateDir: (await ctx.config()).stateDir,
        id: ctx.positionals[0]!,
        reason: typeof ctx.values.reason === 'string' ? ctx.values.reason : undefined,
      }),
  },
  {
    name: 'ui',
    summary: 'local audit viewer and approval page on loopback (token printed at start, or AIRLOCK_UI_TOKEN)',
    options: {
      listen: {
        type: 'string',
        value: '127.0.0.1:PORT|unix:PATH',
        help: 'loopback address to listen on (default 127.0.0.1:8787), or unix:PATH for a 0600 socket (an ssh forward)',
      },
    },
    run: async (ctx) =>
      (await import('./commands/ui.js')).uiCommand({
        config: await ctx.config(),
        listen: typeof ctx.values.listen === 'string' ? ctx.values.listen : undefined,
      }),
  },
  {
    name: 'doctor',
    summary:
      'checks what serve needs: config, policies, every secret (never printed), git, socket, state, work-tree and audit folders, and that each read-only Postgres role really is read-only',
    options: { json: JSON_OUT },
    run: async (ctx) => (await import('./commands/doctor.js')).doctorMain(ctx),
  },
];

const CLI_PATH = fileURLToPath(import.meta.url);

class UsageError extends Error {
  // The name is what marks a user error (exit 1) without importing the module that defines UserError.
  override name = 'UserError';
}

/** `--team TEAM`, `-n|--lines N` (with `short` as the separator), `--json`. */
function flagText(name: string, o: OptionDef, short?: string): string {
  const flag = o.short && short !== undefined ? `-${o.short}${short}--${name}` : `--${name}`;
  return `${flag}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}`;
}

/** The usage line of a command, options included. */
export function usageLine(spec: CommandSpec): string {
  const opts = Object.entries(spec.options ?? {}).map(([name, o]) => {
    const text = flagText(name, o, '|');
    return o.required ? text : `[${text}]`;
  });
  return ['airlock', spec.name, ...(spec.args ? [spec.args] : []), ...opts].join(' ');
}

function commandHelp(spec: CommandSpec): string {
  const lines = [`usage: ${usageLine(spec)}`, '', spec.summary, '', 'options:'];
  const rows: [string, string][] = Object.entries(spec.options ?? {}).map(([name, o]) => [
    flagText(name, o, ', '),
    o.help,
  ]);
  rows.push(['-h, --help', 'show this help (and run nothing)']);
  rows.push(['--config FILE', 'airlock.yaml to use (default ./airlock.yaml); accepted by every command']);
  const width = Math.max(...rows.map(([flag]) => flag.length));
  for (const [flag, help] of rows) lines.push(`  ${flag.padEnd(width)}  ${help}`);
  return lines.join('\n');
}

function groupHelp(group: string, specs: CommandSpec[]): string {
  return [
    `usage:`,
    ...specs.map((s) => `  ${usageLine(s)}`),
    '',
    `run 'airlock ${group} COMMAND --help' for details`,
  ].join('\n');
}

/** `stdio SERVER --team TEAM`: the words, the arguments and the options a command cannot do without. */
function synopsis(spec: CommandSpec): string {
  const required = Object.entries(spec.options ?? {})
    .filter(([, o]) => o.required)
    .map(([name, o]) => flagText(name, o));
  return [spec.name, ...(spec.args ? [spec.args] : []), ...required].join(' ');
}

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => synopsis(c).length));
  return [
    `airlock ${VERSION} — credential broker for AI coding agents`,
    '',
    'usage: airlock COMMAND [options]',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${synopsis(c).padEnd(width)}  ${c.summary}`),
    '',
    "run 'airlock COMMAND --help' for a command's options. Every command accepts --config FILE",
    '(default ./airlock.yaml). Exit codes: 0 ok, 1 user error, 2 internal error.',
  ].join('\n');
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
    if (arg === '--config') {
      if (i + 1 >= argv.length || argv[i + 1]!.startsWith('-')) throw new UsageError('--config needs a FILE');
      config = argv[++i];
    } else if (arg.startsWith('--config=')) config = arg.slice('--config='.length);
    else out.push(arg);
  }
  return { args: out, config };
}

/** The command named by the leading words of `args` (the longest match), and the rest. */
function findCommand(args: string[]): { spec?: CommandSpec; rest: string[]; group?: string } {
  const first = args[0];
  const second = args[1];
  if (first !== undefined && second !== undefined) {
    const spec = COMMANDS.find((c) => c.name === `${first} ${second}`);
    if (spec) return { spec, rest: args.slice(2) };
  }
  const spec = COMMANDS.find((c) => c.name === first);
  if (spec) return { spec, rest: args.slice(1) };
  if (first !== undefined && COMMANDS.some((c) => c.name.startsWith(`${first} `)))
    return { rest: args.slice(1), group: first };
  return { rest: args };
}

function wantsHelp(args: string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '-h' || a === '--help') return true;
  }
  return false;
}

/** Positional argument bounds from the usage text: `SERVER TOOL` → 2..2, `[PATH...]` → 0..∞. */
function positionalBounds(args: string | undefined): { min: number; max: number; names: string[] } {
  const names = (args ?? '').split(' ').filter((w) => w && !w.startsWith('[-') && !w.startsWith('--'));
  const required = names.filter((w) => !w.startsWith('['));
  return {
    min: required.length,
    max: names.some((w) => w.includes('...')) ? Infinity : names.length,
    names: required,
  };
}

/** Node's parseArgs messages, rewritten short and specific. */
function argumentProblem(err: unknown): string | undefined {
  const e = err as { code?: string; message?: string };
  if (typeof e?.code !== 'string' || !e.code.startsWith('ERR_PARSE_ARGS')) return undefined;
  // Node names the option as `'-n, --lines <value>'` or `'--json'`: keep the long form.
  const option = /'(?:-\w, )?(-{1,2}[^' ,]+)/.exec(e.message ?? '')?.[1];
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option ${option ?? ''}`.trim();
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      return /argument missing/.test(e.message ?? '')
        ? `${option ?? 'an option'} needs a value`
        : `${option ?? 'an option'} takes no value`;
    default:
      return 'cannot read the arguments';
  }
}

function parseCommandArgs(
  spec: CommandSpec,
  args: string[],
): { values: OptionValues; positionals: string[] } {
  if (spec.raw) return { values: {}, positionals: args };
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const [name, o] of Object.entries(spec.options ?? {})) {
    options[name] = {
      type: o.type,
      ...(o.short ? { short: o.short } : {}),
      ...(o.multiple ? { multiple: true } : {}),
    };
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    const problem = argumentProblem(err);
    if (problem === undefined) throw err;
    throw usageErrorFor(spec, problem);
  }
  const { min, max, names } = positionalBounds(spec.args);
  if (parsed.positionals.length < min)
    throw usageErrorFor(spec, `missing ${names.slice(parsed.positionals.length).join(' ')}`);
  if (parsed.positionals.length > max && !spec.extraArgs) {
    throw usageErrorFor(spec, `unexpected argument "${parsed.positionals[max]}"`);
  }
  for (const [name, o] of Object.entries(spec.options ?? {})) {
    if (o.required && parsed.values[name] === undefined) {
      throw usageErrorFor(spec, `${flagText(name, o)} is required`);
    }
  }
  return { values: parsed.values as OptionValues, positionals: parsed.positionals };
}

function usageErrorFor(spec: CommandSpec, message: string): Error {
  return new UsageError(`airlock ${spec.name}: ${message}\nusage: ${usageLine(spec)}`);
}

export async function main(rawArgv: string[]): Promise<number> {
  const out = process.stdout;
  const lifted = liftConfig(rawArgv);
  const args = lifted.args;
  const first = args[0];
  if (first === undefined || first === 'help' || first === '--help' || first === '-h') {
    out.write(mainHelp() + '\n');
    return first === undefined ? 1 : 0;
  }
  if (first === '--version' || first === '-V' || first === 'version') {
    out.write(VERSION + '\n');
    return 0;
  }
  const { spec, rest, group } = findCommand(args);
  if (!spec && group !== undefined) {
    const specs = COMMANDS.filter((c) => c.name.startsWith(`${group} `));
    if (wantsHelp(rest) || rest.length === 0) {
      (rest.length === 0 ? process.stderr : out).write(groupHelp(group, specs) + '\n');
      return rest.length === 0 ? 1 : 0;
    }
    const subs = specs.map((s) => s.name.slice(group.length + 1));
    throw new UsageError(
      `unknown command "airlock ${group} ${rest[0]}"; ${group} commands: ${subs.join(', ')}`,
    );
  }
  if (!spec) {
    throw new UsageError(`unknown command "${first}"; run 'airlock --help' for the list`);
  }
  if (wantsHelp(rest)) {
    out.write(commandHelp(spec) + '\n');
    return 0;
  }
  const { values, positionals } = parseCommandArgs(spec, rest);
  const configFile = path.resolve(lifted.config ?? 'airlock.yaml');
  let loaded: Promise<AirlockConfig> | undefined;
  return spec.run({
    name: spec.name,
    values,
    positionals,
    configFile,
    configGiven: lifted.config !== undefined,
    config: () => (loaded ??= import('./config/airlock-yaml.js').then((m) => m.loadConfig(configFile))),
    cliPath: CLI_PATH,
    usageError: (message) => usageErrorFor(spec, message),
  });
}

function isUserError(err: unknown): boolean {
  const name = (err as Error | undefined)?.name;
  return name === 'UserError' || name === 'ConfigError';
}

/** How an error reaches the terminal: a config error as `file:line:col: message` lines. */
function printError(err: Error): void {
  const issues = (err as { issues?: { file: string; line: number; col: number; message: string }[] }).issues;
  if (err.name === 'ConfigError' && issues?.length) {
    for (const i of issues) process.stderr.write(`${i.file}:${i.line}:${i.col}: ${i.message}\n`);
  } else {
    // Usage errors already start with `airlock <command>:`.
    process.stderr.write(
      err.message.startsWith('airlock ') ? `${err.message}\n` : `airlock: ${err.message}\n`,
    );
  }
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
      printError(err);
      process.exitCode = isUserError(err) ? 1 : 2;
    },
  );
}
