// airlock.yaml: the operator's host config. Parsed with positions so every mistake is reported
// as `file:line:col: message`, all at once. Relative paths resolve against the config file's
// folder (never the working directory, never `~`, never environment variables).
import { constants as fsConstants, type Stats } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { BROKER_ID } from '../audit/broker-id.js';
import { secretConfigSchema, secretNameSchema, type SecretConfig } from '../secrets/config.js';
import { telemetryConfigSchema, type TelemetryConfig } from '../telemetry/config.js';
import { policyGitSchema, resolvePolicyGit, type PolicyGitConfig } from '../policy/git-source-config.js';
import {
  formatIssue,
  issueAt,
  parseYaml,
  sortIssues,
  validateYaml,
  type PolicyIssue,
} from './yaml-positions.js';

export type { PolicyIssue } from './yaml-positions.js';

export interface AirlockConfig {
  /** Absolute path of the config file. */
  file: string;
  /** Its folder (the base of every relative path in it). */
  dir: string;
  socketDir: string;
  /** gid given to the sockets (a group name in the file is resolved through /etc/group). */
  socketGroup?: number;
  /** Per-team gids (`socketGroups: { team: group }`); a team policy's own `socketGroup` wins. */
  socketGroups: Record<string, number>;
  stateDir: string;
  /** gid whose members may decide approvals (control socket 0660 to that group). */
  approvers?: number;
  /**
   * Absolute path of the policy folder. With `policyGit`, the folder of the commit in force
   * (`<stateDir>/policy-git/current`), which `airlock serve` keeps up to date.
   */
  policies: string;
  /** `policies: { git: … }`: policies come from a git repository (src/policy/git-source.ts). */
  policyGit?: PolicyGitConfig;
  audit: {
    file: string;
    /** Central audit: every record is also shipped to this PostgreSQL table (src/audit/shipper.ts). */
    postgres?: AuditPostgresConfig;
  };
  /** `brokerId`: overrides the id made once in <stateDir>/broker-id (src/audit/broker-id.ts). */
  brokerId?: string;
  secrets: Record<string, SecretConfig>;
  /** `secrets: { strict: true }`: serve refuses to start while any secret does not resolve. */
  strictSecrets?: boolean;
  /** MCP sessions open at once: per team (all its servers) and for the whole broker. */
  sessions: { maxPerTeam: number; maxTotal: number };
  /** OpenTelemetry export (src/telemetry); absent: off, and no @opentelemetry module is loaded. */
  telemetry?: TelemetryConfig;
  /** Where rateLimit and dailyTokenBudget count: this host (absent, or store local) or PostgreSQL for the fleet. */
  limits?: LimitsConfig;
}

export interface AuditPostgresConfig {
  /** Name of the secret holding the postgres:// URL of the shipping role. */
  connection: string;
  /** Table name, optionally schema-qualified (`audit.airlock_audit`). */
  table: string;
}

export const DEFAULT_AUDIT_TABLE = 'airlock_audit';

/** `limits:` (src/limits): `connection` is set whenever `store` is postgres. */
export interface LimitsConfig {
  store: 'local' | 'postgres';
  /** Name of the secret holding the postgres:// URL. */
  connection?: string;
  /** Longest wait for the store on one check; past it the call fails closed. */
  timeoutMs: number;
}

export const DEFAULT_LIMITS_TIMEOUT_MS = 2000;

export const DEFAULT_MAX_SESSIONS_PER_TEAM = 256;
export const DEFAULT_MAX_SESSIONS = 1024;

export class ConfigError extends Error {
  readonly issues: PolicyIssue[];
  constructor(issues: PolicyIssue[], headline?: string) {
    const sorted = sortIssues(issues);
    super([...(headline ? [headline] : []), ...sorted.map(formatIssue)].join('\n'));
    this.name = 'ConfigError';
    this.issues = sorted;
  }
}

const pathSchema = (what: string) => z.string().min(1, `${what} must not be empty`);
/** A group as written in a file: a gid or a name from /etc/group. */
export const groupSchema = z.union([z.number().int().nonnegative(), z.string().min(1)]);

export const configSchema = z
  .object({
    socketDir: pathSchema('socketDir').describe('Sockets are created at <socketDir>/<team>/<server>.sock'),
    socketGroup: groupSchema
      .optional()
      .describe('Group (name or gid) given to the sockets so the agent uid can connect'),
    socketGroups: z
      .record(z.string().regex(/^[a-z0-9][a-z0-9-]*$/, 'team names match [a-z0-9][a-z0-9-]*'), groupSchema)
      .default({})
      .describe(
        "Per-team socket groups (team → group name or gid), overriding socketGroup for that team's sockets",
      ),
    stateDir: pathSchema('stateDir').describe('Host-owned state (git dirs, rate-limit counters)'),
    approvers: groupSchema
      .optional()
      .describe('Group (name or gid) whose members may decide approvals besides the broker user'),
    policies: z
      .union([pathSchema('policies').describe('Folder of team policy files'), policyGitSchema])
      .default('./policies')
      .describe('Folder of team policy files, or { git: <url>, … } to take them from a git repository'),
    audit: z
      .object({
        file: pathSchema('audit.file').describe('Append-only JSON lines audit log'),
        postgres: z
          .object({
            connection: secretNameSchema.describe('Secret holding the postgres:// URL of the shipping role'),
            table: z
              .string()
              .regex(
                /^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$/,
                'table names are lower-case identifiers, optionally schema.table',
              )
              .default(DEFAULT_AUDIT_TABLE),
          })
          .strict()
          .optional()
          .describe('Central audit: every record is also shipped to this PostgreSQL table'),
      })
      .strict(),
    brokerId: z
      .string()
      .regex(
        BROKER_ID,
        'broker ids use letters, digits, ".", "_" and "-" (at most 64, not starting with one of ".", "_", "-")',
      )
      .optional()
      .describe("This broker's id in audit records (default: made once in <stateDir>/broker-id)"),
    secrets: z.record(secretNameSchema, secretConfigSchema).default({}).describe('Named secrets'),
    sessions: z
      .object({
        maxPerTeam: z.number().int().positive().default(DEFAULT_MAX_SESSIONS_PER_TEAM),
        maxTotal: z.number().int().positive().default(DEFAULT_MAX_SESSIONS),
      })
      .strict()
      .default({ maxPerTeam: DEFAULT_MAX_SESSIONS_PER_TEAM, maxTotal: DEFAULT_MAX_SESSIONS })
      .describe('MCP sessions open at once, per team and in total; past them a connection is refused'),
    telemetry: telemetryConfigSchema.optional(),
    limits: z
      .object({
        store: z.enum(['local', 'postgres']).default('local'),
        connection: secretNameSchema
          .optional()
          .describe('Secret holding the postgres:// URL (store: postgres)'),
        timeoutMs: z.number().int().min(50).max(60_000).default(DEFAULT_LIMITS_TIMEOUT_MS),
      })
      .strict()
      .default({ store: 'local', timeoutMs: DEFAULT_LIMITS_TIMEOUT_MS })
      .describe(
        'Where rateLimit and model dailyTokenBudget count: local (this host) or postgres (fleet-wide; fails closed when unreachable)',
      ),
  })
  .strict();

/** The config or a policy file: larger is a mistake (a log or a disk image named by accident). */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024;

/** Why a file that should hold YAML was not read; `code` is the errno code when there is one. */
export class UnreadableFileError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'UnreadableFileError';
  }
}

/**
 * Reads a regular text file of at most `maxBytes`. A FIFO, socket or device (a symlink to
 * /dev/zero, a named pipe nobody writes to) is refused without blocking, and nothing past the
 * cap is read. `refuse` may veto the file by its identity before any byte of it is read.
 */
export async function readRegularTextFile(
  file: string,
  maxBytes: number,
  refuse?: (stat: Stats) => string | undefined,
  opts: { noFollow?: boolean } = {},
): Promise<string> {
  let handle;
  try {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    const flags =
      fsConstants.O_RDONLY |
      fsConstants.O_NONBLOCK |
      fsConstants.O_NOCTTY |
      (opts.noFollow ? fsConstants.O_NOFOLLOW : 0);
    handle = await open(file, flags);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    if (code === 'ELOOP' && opts.noFollow) throw new UnreadableFileError('is a symlink; not read', code);
    throw new UnreadableFileError(code === 'ENOENT' ? 'no such file' : `cannot read (${code})`, code);
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new UnreadableFileError('not a regular file');
    const vetoed = refuse?.(stat);
    if (vetoed) throw new UnreadableFileError(vetoed);
    if (stat.size > maxBytes) throw new UnreadableFileError(`larger than ${maxBytes} bytes`);
    // Read one byte past the cap so a file that grew after the stat is still refused.
    const buf = Buffer.alloc(maxBytes + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buf, length, buf.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > maxBytes) throw new UnreadableFileError(`larger than ${maxBytes} bytes`);
    }
    return buf.subarray(0, length).toString('utf8');
  } catch (err) {
    if (err instanceof UnreadableFileError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new UnreadableFileError(`cannot read (${code})`, code);
  } finally {
    await handle.close();
  }
}

/** The gid of a group as written in a file (a number, a numeric string or a name). */
export async function groupId(group: number | string): Promise<number | undefined> {
  if (typeof group === 'number') return group;
  return /^\d+$/.test(group) ? Number(group) : resolveGroup(group);
}

/** Reads /etc/group (or `groupFile`) and returns the gid of `name`. */
export async function resolveGroup(name: string, groupFile = '/etc/group'): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(groupFile, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const [groupName, , gid] = line.split(':');
    if (groupName === name && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  return undefined;
}

function resolveSecretPaths(secret: SecretConfig, dir: string): SecretConfig {
  if ('file' in secret) return { ...secret, file: path.resolve(dir, secret.file) };
  if ('githubApp' in secret && 'file' in secret.githubApp.privateKey) {
    return {
      ...secret,
      githubApp: {
        ...secret.githubApp,
        privateKey: { file: path.resolve(dir, secret.githubApp.privateKey.file) },
      },
    };
  }
  return secret;
}

export async function loadConfig(file: string): Promise<AirlockConfig> {
  const absFile = path.resolve(file);
  const dir = path.dirname(absFile);
  let text: string;
  try {
    text = await readRegularTextFile(absFile, MAX_CONFIG_FILE_BYTES);
  } catch (err) {
    const { code, message } = err as UnreadableFileError;
    const why =
      code === 'ENOENT'
        ? 'config file not found (pass --config FILE)'
        : code !== undefined
          ? `cannot read config file (${code})`
          : `config file is ${message}`;
    throw new ConfigError([{ file: absFile, line: 1, col: 1, message: why }]);
  }
  const src = parseYaml(absFile, text);
  const issues = [...src.issues];
  if (!src.usable) throw new ConfigError(issues);
  // `secrets: { strict: true }` is an option, not a secret: no secret's config is a boolean.
  const strict = takeStrictOption(src.data);
  const result = validateYaml(strict.src === undefined ? src : { ...src, data: strict.src }, configSchema);
  if (!result.success) throw new ConfigError([...issues, ...result.issues]);
  const raw = result.data;

  let socketGroup: number | undefined;
  if (raw.socketGroup !== undefined) {
    socketGroup = await groupId(raw.socketGroup);
    if (socketGroup === undefined) {
      issues.push(issueAt(src, ['socketGroup'], `unknown group "${raw.socketGroup}" (not in /etc/group)`));
    }
  }
  const socketGroups: Record<string, number> = {};
  for (const [team, group] of Object.entries(raw.socketGroups)) {
    const gid = await groupId(group);
    if (gid === undefined)
      issues.push(issueAt(src, ['socketGroups', team], `unknown group "${group}" (not in /etc/group)`));
    else socketGroups[team] = gid;
  }
  let approvers: number | undefined;
  if (raw.approvers !== undefined) {
    approvers = await groupId(raw.approvers);
    if (approvers === undefined)
      issues.push(issueAt(src, ['approvers'], `unknown group "${raw.approvers}" (not in /etc/group)`));
  }
  const stateDir = path.resolve(dir, raw.stateDir);
  let policyGit: PolicyGitConfig | undefined;
  if (typeof raw.policies === 'object') {
    const resolved = await resolvePolicyGit(raw.policies, src, dir, raw.secrets, (f, max) =>
      readRegularTextFile(f, max),
    );
    issues.push(...resolved.issues);
    policyGit = resolved.config;
  }
  for (const [header, secret] of Object.entries(raw.telemetry?.otlp.headers ?? {})) {
    const where = ['telemetry', 'otlp', 'headers', header];
    const config = raw.secrets[secret];
    if (!config) issues.push(issueAt(src, where, `unknown secret "${secret}" (not in secrets:)`));
    else if ('githubApp' in config)
      issues.push(issueAt(src, where, `secret "${secret}" is a GitHub App, not a value for a header`));
  }
  const centralAudit = raw.audit.postgres;
  if (centralAudit && !Object.hasOwn(raw.secrets, centralAudit.connection))
    issues.push(
      issueAt(
        src,
        ['audit', 'postgres', 'connection'],
        `unknown secret "${centralAudit.connection}" (not in secrets)`,
      ),
    );
  issues.push(...limitsIssues(src, raw));
  if (issues.length) throw new ConfigError(issues);

  const secrets: Record<string, SecretConfig> = {};
  for (const [name, secret] of Object.entries(raw.secrets)) secrets[name] = resolveSecretPaths(secret, dir);

  return {
    file: absFile,
    dir,
    socketDir: path.resolve(dir, raw.socketDir),
    ...(socketGroup !== undefined ? { socketGroup } : {}),
    socketGroups,
    ...(approvers !== undefined ? { approvers } : {}),
    stateDir,
    policies:
      typeof raw.policies === 'string'
        ? path.resolve(dir, raw.policies)
        : path.join(stateDir, 'policy-git', 'current'),
    ...(policyGit ? { policyGit } : {}),
    audit: {
      file: path.resolve(dir, raw.audit.file),
      ...(centralAudit
        ? { postgres: { connection: centralAudit.connection, table: centralAudit.table } }
        : {}),
    },
    ...(raw.brokerId !== undefined ? { brokerId: raw.brokerId } : {}),
    secrets,
    ...(strict.value !== undefined ? { strictSecrets: strict.value } : {}),
    sessions: raw.sessions,
    ...(raw.telemetry ? { telemetry: raw.telemetry } : {}),
    limits: raw.limits,
  };
}

/** A postgres store needs a connection secret that exists and holds a plain value. */
function limitsIssues(src: Parameters<typeof issueAt>[0], raw: z.infer<typeof configSchema>): PolicyIssue[] {
  const { store, connection } = raw.limits;
  if (connection === undefined) {
    return store === 'postgres'
      ? [
          issueAt(
            src,
            ['limits'],
            'limits.connection is required when store is postgres: name the secret holding the postgres:// URL',
          ),
        ]
      : [];
  }
  const secret = raw.secrets[connection];
  if (!secret)
    return [
      issueAt(
        src,
        ['limits', 'connection'],
        `unknown secret "${connection}"; known secrets: ${Object.keys(raw.secrets).join(', ') || 'none'}`,
      ),
    ];
  if ('githubApp' in secret)
    return [
      issueAt(
        src,
        ['limits', 'connection'],
        `secret "${connection}" is a GitHub App; the limits store needs a secret holding a postgres:// URL`,
      ),
    ];
  return [];
}

/** Splits a boolean `secrets.strict` off the data (which is then validated without it). */
function takeStrictOption(data: unknown): { value?: boolean; src?: unknown } {
  const root = data as { secrets?: unknown } | null;
  const secrets = root?.secrets as Record<string, unknown> | null | undefined;
  if (!secrets || typeof secrets !== 'object' || typeof secrets.strict !== 'boolean') return {};
  const { strict, ...rest } = secrets;
  return { value: strict as boolean, src: { ...root, secrets: rest } };
}
