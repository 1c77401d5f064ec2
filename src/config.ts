// airlock.yaml: the operator's host config. Parsed with positions so every mistake is reported
// as `file:line:col: message`, all at once. Relative paths resolve against the config file's
// folder (never the working directory, never `~`, never environment variables).
import { constants as fsConstants, type Stats } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { secretConfigSchema, secretNameSchema, type SecretConfig } from './secret-config.js';
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
  stateDir: string;
  /** gid whose members may decide approvals (control socket 0660 to that group). */
  approvers?: number;
  /** Absolute path of the policy folder. */
  policies: string;
  audit: { file: string };
  secrets: Record<string, SecretConfig>;
}

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

export const configSchema = z
  .object({
    socketDir: pathSchema('socketDir').describe('Sockets are created at <socketDir>/<team>/<server>.sock'),
    socketGroup: z
      .union([z.number().int().nonnegative(), z.string().min(1)])
      .optional()
      .describe('Group (name or gid) given to the sockets so the agent uid can connect'),
    stateDir: pathSchema('stateDir').describe('Host-owned state (git dirs, rate-limit counters)'),
    approvers: z
      .union([z.number().int().nonnegative(), z.string().min(1)])
      .optional()
      .describe('Group (name or gid) whose members may decide approvals besides the broker user'),
    policies: pathSchema('policies').default('./policies').describe('Folder of team policy files'),
    audit: z.object({ file: pathSchema('audit.file').describe('Append-only JSON lines audit log') }).strict(),
    secrets: z.record(secretNameSchema, secretConfigSchema).default({}).describe('Named secrets'),
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
): Promise<string> {
  let handle;
  try {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
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
  const result = validateYaml(src, configSchema);
  if (!result.success) throw new ConfigError([...issues, ...result.issues]);
  const raw = result.data;

  /** A group given by name or gid; a name is resolved through /etc/group. */
  const groupField = async (key: 'socketGroup' | 'approvers'): Promise<number | undefined> => {
    const value = raw[key];
    if (value === undefined || typeof value === 'number') return value;
    const gid = /^\d+$/.test(value) ? Number(value) : await resolveGroup(value);
    if (gid === undefined) issues.push(issueAt(src, [key], `unknown group "${value}" (not in /etc/group)`));
    return gid;
  };
  const socketGroup = await groupField('socketGroup');
  const approvers = await groupField('approvers');
  if (issues.length) throw new ConfigError(issues);

  const secrets: Record<string, SecretConfig> = {};
  for (const [name, secret] of Object.entries(raw.secrets)) secrets[name] = resolveSecretPaths(secret, dir);

  return {
    file: absFile,
    dir,
    socketDir: path.resolve(dir, raw.socketDir),
    ...(socketGroup !== undefined ? { socketGroup } : {}),
    ...(approvers !== undefined ? { approvers } : {}),
    stateDir: path.resolve(dir, raw.stateDir),
    policies: path.resolve(dir, raw.policies),
    audit: { file: path.resolve(dir, raw.audit.file) },
    secrets,
  };
}
