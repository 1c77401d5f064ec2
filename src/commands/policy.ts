// `airlock policy check [PATH…]`, `airlock policy schema` and `airlock policy status`.
import { access, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { CommandContext } from '../cli.js';
import {
  ConfigError,
  DEFAULT_MAX_SESSIONS,
  DEFAULT_MAX_SESSIONS_PER_TEAM,
  loadConfig,
  type AirlockConfig,
} from '../config/airlock-yaml.js';
import {
  checkPolicyFiles,
  policyJsonSchema,
  type PolicyIssue,
  type SecretCheckMode,
  type TeamPolicy,
} from '../policy/team-policy.js';
import type { ServerCatalog, ServerDefinition } from '../tool.js';

/** Paths under the working directory print relative (shorter, still clickable); others absolute. */
function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}

function printIssue(issue: PolicyIssue): string {
  return `${displayPath(issue.file)}:${issue.line}:${issue.col}: ${issue.message}`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function summarize(policy: TeamPolicy): string {
  const parts = Object.entries(policy.servers).map(
    ([name, section]) => `${name} (${plural(Object.keys(section.tools).length, 'tool')})`,
  );
  if (policy.model) parts.push('model');
  return `ok ${policy.team} ${displayPath(policy.file)}: ${parts.length ? parts.join(', ') : 'no servers'}`;
}

function policyJson(policy: TeamPolicy): object {
  return {
    team: policy.team,
    file: policy.file,
    servers: Object.fromEntries(
      Object.entries(policy.servers).map(([name, section]) => [name, { tools: Object.keys(section.tools) }]),
    ),
    model: policy.model !== undefined,
  };
}

/** A config that names no secrets, for checking policy files when there is no airlock.yaml. */
function configless(): AirlockConfig {
  const cwd = process.cwd();
  return {
    file: '',
    dir: cwd,
    socketDir: cwd,
    stateDir: cwd,
    policies: cwd,
    audit: { file: '' },
    secrets: {},
    socketGroups: {},
    sessions: { maxPerTeam: DEFAULT_MAX_SESSIONS_PER_TEAM, maxTotal: DEFAULT_MAX_SESSIONS },
  };
}

/**
 * Validates policy files against the config's secrets. Prints every issue as
 * `file:line:col: message` on `out` (a tally on `err`) and returns 1 if there is any; otherwise
 * prints one summary line per team and returns 0. A broken config is a user error too (1).
 * With `configOptional` and PATHs, a missing config file is no error: secret references are
 * then checked by name shape only, and a note on `err` says so (a policy repository's own CI).
 * `json` prints one object `{ok, config, secrets, policies, issues}` instead.
 */
export async function policyCheckCommand(opts: {
  config: string;
  paths: string[];
  servers: readonly ServerDefinition[] | ServerCatalog;
  configOptional?: boolean;
  json?: boolean;
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}): Promise<number> {
  const out = opts.out ?? process.stdout;
  const err = opts.err ?? process.stderr;
  let issues: PolicyIssue[];
  let policies: TeamPolicy[];
  let mode: SecretCheckMode = 'config';
  const report = (ok: boolean, config: string | null) =>
    out.write(
      JSON.stringify({
        ok,
        config,
        secrets: mode === 'config' ? 'checked against the config' : 'names checked by shape only (no config)',
        policies: policies.map(policyJson),
        issues,
      }) + '\n',
    );
  try {
    let config: AirlockConfig;
    if (opts.configOptional && opts.paths.length > 0 && !(await exists(opts.config))) {
      mode = 'names-only';
      config = configless();
      if (!opts.json) {
        err.write(
          `note: no config at ${displayPath(opts.config)}; secret references are checked by name only ` +
            `(pass --config FILE to check them against its secrets)\n`,
        );
      }
    } else {
      config = await loadConfig(opts.config);
    }
    ({ policies, issues } = await checkPolicyFiles(config, opts.servers, opts.paths, mode));
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    policies = [];
    issues = e.issues;
    if (opts.json) {
      report(false, opts.config);
      return 1;
    }
    for (const issue of e.issues) out.write(printIssue(issue) + '\n');
    const missing =
      opts.configOptional && e.issues.some((i) => i.message.startsWith('config file not found'));
    err.write(
      missing
        ? `no config file; pass --config FILE, or name the policy files or folders to check without one\n`
        : `config is invalid: ${plural(e.issues.length, 'error')}\n`,
    );
    return 1;
  }
  if (opts.json) {
    report(issues.length === 0, mode === 'config' ? opts.config : null);
    return issues.length ? 1 : 0;
  }
  if (issues.length) {
    for (const issue of issues) out.write(printIssue(issue) + '\n');
    const files = new Set(issues.map((i) => i.file)).size;
    err.write(`${plural(issues.length, 'error')} in ${plural(files, 'file')}\n`);
    return 1;
  }
  if (policies.length === 0) {
    out.write('no policy files found\n');
    return 0;
  }
  for (const policy of policies) out.write(summarize(policy) + '\n');
  return 0;
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

export async function policyCheckMain(ctx: CommandContext): Promise<number> {
  const { SERVERS } = await import('../servers.js');
  return policyCheckCommand({
    config: ctx.configFile,
    paths: ctx.positionals,
    servers: SERVERS,
    configOptional: !ctx.configGiven,
    json: Boolean(ctx.values.json),
  });
}

export async function policySchemaMain(): Promise<number> {
  const { SERVERS } = await import('../servers.js');
  return policySchemaCommand({ servers: await SERVERS.all() });
}

export function policySchemaCommand(opts: {
  servers: ServerDefinition[];
  out?: NodeJS.WritableStream;
}): number {
  const out = opts.out ?? process.stdout;
  out.write(JSON.stringify(policyJsonSchema(opts.servers), null, 2) + '\n');
  return 0;
}

/**
 * `airlock policy status [--json]`: where the policies come from and, for a git source, the
 * commit in force, its signer, the last fetch and the last error — read from the status file
 * the broker writes (so it works while `airlock serve` runs as another process). Exit 0 when a
 * commit is in force and the last check found nothing wrong, 1 otherwise.
 */
export async function policyStatusCommand(opts: {
  config: AirlockConfig;
  json?: boolean;
  out?: NodeJS.WritableStream;
}): Promise<number> {
  const out = opts.out ?? process.stdout;
  const { config } = opts;
  if (!config.policyGit) {
    if (opts.json) out.write(JSON.stringify({ source: { folder: config.policies } }) + '\n');
    else out.write(`source:     folder ${config.policies} (not from git; see airlock policy check)\n`);
    return 0;
  }
  const { policyGitStatusFile } = await import('../policy/git-source.js');
  const file = policyGitStatusFile(config.stateDir);
  let status: import('../policy/git-source.js').PolicyGitStatus | undefined;
  try {
    status = JSON.parse(await readFile(file, 'utf8')) as import('../policy/git-source.js').PolicyGitStatus;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? `no status yet: airlock serve has not fetched ${config.policyGit.url} (no ${file})`
        : `cannot read ${file} (${code ?? (err as Error).message})`;
    if (opts.json) out.write(JSON.stringify({ source: { git: config.policyGit.url }, error: why }) + '\n');
    else out.write(`${why}\n`);
    return 1;
  }
  const running = processRunning(status.pid);
  if (opts.json) {
    out.write(JSON.stringify({ ...status, brokerRunning: running }) + '\n');
  } else {
    const s = status.source;
    const signed = s.requireSignedBy.length
      ? `signatures required (${plural(s.requireSignedBy.length, 'key')})`
      : 'signatures not required';
    const lines = [
      `source:     git ${s.git} ref ${s.ref}${s.path ? ` path ${s.path}` : ''}, every ${s.every}, ${signed}`,
      `commit:     ${status.commit ? `${status.commit}${status.subject ? ` "${status.subject}"` : ''}` : 'none (no teams)'}`,
      ...(status.commit ? [`in force:   since ${status.appliedAt}`] : []),
      `signer:     ${status.signer ?? (status.commit ? 'not checked (no requireSignedBy)' : '-')}`,
      `teams:      ${status.teams.length ? status.teams.join(', ') : '(none)'}`,
      `fetched:    ${status.fetchedAt ?? 'never'} (last check ${status.checkedAt ?? 'never'})`,
      `broker:     pid ${status.pid}${running ? '' : ' (not running: this status may be stale)'}`,
      `last error: ${status.lastError ? `${status.lastError.at}: ${status.lastError.message}` : 'none'}`,
    ];
    out.write(lines.join('\n') + '\n');
  }
  return status.commit && !status.lastError ? 0 : 1;
}

function processRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function policyStatusMain(ctx: CommandContext): Promise<number> {
  return policyStatusCommand({ config: await ctx.config(), json: Boolean(ctx.values.json) });
}
