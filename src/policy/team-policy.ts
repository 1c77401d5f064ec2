// Team policy files (`policies/<team>.yaml`): the schema (built from the server definitions
// plugged into the core), validation with `file:line:col` positions, cross-checks against the
// config's secrets, and the runtime store that `airlock serve` reloads on change.
//
// Default deny lives here: a server section or tool that the schema does not know is an error,
// and a tool that a valid policy does not list does not exist for that team.
import { EventEmitter } from 'node:events';
import { watch as fsWatch, type FSWatcher } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import {
  ConfigError,
  groupId,
  groupSchema,
  MAX_CONFIG_FILE_BYTES,
  readRegularTextFile,
  type UnreadableFileError,
  type AirlockConfig,
} from '../config/airlock-yaml.js';
import { approveSchema, type ApprovePolicy } from '../approvals/policy.js';
import { globSchema } from './glob.js';
import type { Logger } from '../log.js';
import { rateLimitSchema, type RateLimit } from './ratelimit-spec.js';
import { secretNameSchema } from '../secrets/config.js';
import { asCatalog, type SecretRef, type ServerCatalog, type ServerDefinition } from '../tool.js';
import {
  formatIssue,
  issueAt,
  parseYaml,
  sortIssues,
  valuePosition,
  zodIssuesToPolicyIssues,
  type IssuePath,
  type PolicyIssue,
  type YamlSource,
} from '../config/yaml-positions.js';

export { formatIssue, type PolicyIssue } from '../config/yaml-positions.js';

export const TEAM_NAME_RE = /^[a-z0-9][a-z0-9-]*$/;

/** A policy file larger than this is refused unread (no real policy comes near it). */
export const MAX_POLICY_FILE_BYTES = MAX_CONFIG_FILE_BYTES;

export type ToolPolicy = { rateLimit?: RateLimit; approve?: ApprovePolicy } & Record<string, unknown>;
export type ServerPolicy = { tools: Record<string, ToolPolicy> } & Record<string, unknown>;

export interface TeamPolicy {
  team: string;
  /** Absolute path of the policy file it came from. */
  file: string;
  /** MCP server sections (git, github, postgres, http), each with its `tools`. */
  servers: Record<string, ServerPolicy>;
  /** The `servers.model` section (the model API proxy; HTTP, not MCP, so it has no tools). */
  model?: ModelPolicy;
  /** gid given to this team's sockets (overrides airlock.yaml's socketGroups/socketGroup). */
  socketGroup?: number;
}

// ---------------------------------------------------------------------------------------------
// Schema

export const DEFAULT_MODEL_UPSTREAM = 'https://api.anthropic.com';
export const DEFAULT_MODEL_PATHS = ['/v1/messages', '/v1/messages/count_tokens'];

const upstreamSchema = z
  .url({ protocol: /^https?$/, error: 'upstream must be an http(s) URL such as https://api.anthropic.com' })
  .superRefine((value, ctx) => {
    const url = new URL(value);
    if (url.username || url.password) {
      ctx.addIssue({ code: 'custom', message: 'upstream must not contain credentials; use `credential`' });
    }
    if (url.search || url.hash)
      ctx.addIssue({ code: 'custom', message: 'upstream must not have a query or fragment' });
  });

const urlPathGlobSchema = globSchema.refine((p) => p.startsWith('/'), { error: 'paths must start with "/"' });

export const modelSectionSchema = z
  .object({
    upstream: upstreamSchema.default(DEFAULT_MODEL_UPSTREAM).describe('Model API base URL'),
    credential: secretNameSchema.describe('Secret holding the API key (sent as x-api-key / Authorization)'),
    paths: z
      .array(urlPathGlobSchema)
      .min(1)
      .default(() => [...DEFAULT_MODEL_PATHS])
      .describe('Request paths the agent may call (globs)'),
    dailyTokenBudget: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('Input + output tokens per UTC day for this team; absent means unlimited'),
    allowPrivateAddress: z
      .boolean()
      .default(false)
      .describe('Allow an upstream on a loopback/private address (a local gateway or a test API)'),
  })
  .strict()
  .describe("The agent's own model API, served on model.sock (HTTP/1.1)");

export type ModelPolicy = z.output<typeof modelSectionSchema>;

const RESERVED_SECTIONS = new Set(['model']);

/**
 * A schema built the first time something reads it. A zod schema is built eagerly (and each
 * `.describe()` copies it): building every tool's entry of every server up front was most of a
 * policy check's time, while a policy lists a few tools. Built once, so walking it (yaml-positions
 * unwraps lazies to name allowed keys) sees one schema.
 */
function builtOnUse<T extends z.ZodType>(build: () => T): z.ZodLazy<T> {
  let built: T | undefined;
  return z.lazy(() => (built ??= build()));
}

function toolsSchema(server: ServerDefinition): z.ZodObject {
  const shape: Record<string, z.ZodType> = {};
  for (const tool of server.tools) {
    shape[tool.name] = builtOnUse(() =>
      tool.options
        .extend({ rateLimit: rateLimitSchema.optional(), approve: approveSchema(tool).optional() })
        .strict(),
    )
      .optional()
      .describe(`${tool.title}: ${tool.description}`);
  }
  return z
    .object(shape)
    .strict()
    .describe(`Tools of ${server.name} this team may call; unlisted tools do not exist`);
}

const sectionSchemas = new WeakMap<ServerDefinition, z.ZodObject>();

/** The schema of one server's section: its own fields plus `tools` (built once per server). */
export function serverSectionSchema(server: ServerDefinition): z.ZodObject {
  let schema = sectionSchemas.get(server);
  if (!schema) {
    schema = server.section
      .extend({ tools: toolsSchema(server) })
      .strict()
      .describe(server.description);
    sectionSchemas.set(server, schema);
  }
  return schema;
}

/**
 * The schema of a policy file whose server sections are those of `servers`. `names` lists every
 * server in order, loaded or not: a server the file does not name need not be loaded to check it,
 * so its key is there by name only (an unknown section's error still lists every server), and a
 * file that names one is checked with that server loaded instead.
 */
export function buildPolicySchema(
  servers: ServerDefinition[],
  names: readonly string[] = servers.map((s) => s.name),
): z.ZodObject {
  const byName = new Map<string, ServerDefinition>();
  for (const server of servers) {
    if (byName.has(server.name) || RESERVED_SECTIONS.has(server.name)) {
      throw new Error(`server "${server.name}" is defined twice or uses a reserved name`);
    }
    byName.set(server.name, server);
  }
  const sections: Record<string, z.ZodType> = {};
  for (const name of new Set([...names, ...byName.keys()])) {
    const server = byName.get(name);
    sections[name] = server ? serverSectionSchema(server).optional() : z.never().optional();
  }
  sections.model = modelSectionSchema.optional();
  return z
    .object({
      team: z
        .string()
        .regex(TEAM_NAME_RE, 'team must match [a-z0-9][a-z0-9-]* (lowercase letters, digits, "-")')
        .describe('Team name; must be unique across policy files (the file name is free)'),
      socketGroup: groupSchema
        .optional()
        .describe(
          "Group (name or gid) given to this team's sockets, so only its agents can connect; overrides airlock.yaml",
        ),
      servers: z
        .object(sections)
        .strict()
        .describe('Servers this team may use; absent ones do not exist for it'),
    })
    .strict();
}

export function policyJsonSchema(servers: ServerDefinition[]): object {
  const schema = buildPolicySchema(servers).meta({
    title: 'Airlock team policy',
    description: 'One team policy file (policies/<team>.yaml). See `airlock policy check`.',
  });
  // `io: input` describes what the author writes (before defaults and rate-limit parsing).
  return z.toJSONSchema(schema, { target: 'draft-07', io: 'input', unrepresentable: 'any' });
}

// ---------------------------------------------------------------------------------------------
// Checking files

/** Policy files are the `.yaml`/`.yml` files of the folder; dotfiles (editor locks) are not. */
export function isPolicyFileName(name: string): boolean {
  return !name.startsWith('.') && /\.ya?ml$/.test(name);
}

async function listPolicyFiles(dir: string): Promise<{ files: string[]; issues: PolicyIssue[] }> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    const files = entries
      .filter((e) => (e.isFile() || e.isSymbolicLink()) && isPolicyFileName(e.name))
      .map((e) => path.join(dir, e.name))
      .sort();
    return { files, issues: [] };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    return {
      files: [],
      issues: [{ file: dir, line: 1, col: 1, message: `cannot read policy folder (${code})` }],
    };
  }
}

async function expandPaths(paths: string[]): Promise<{ files: string[]; issues: PolicyIssue[] }> {
  const files: string[] = [];
  const issues: PolicyIssue[] = [];
  for (const p of paths) {
    const abs = path.resolve(p);
    try {
      if ((await stat(abs)).isDirectory()) {
        const listed = await listPolicyFiles(abs);
        files.push(...listed.files);
        issues.push(...listed.issues);
      } else {
        files.push(abs); // named explicitly: checked whatever its extension
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      issues.push({
        file: abs,
        line: 1,
        col: 1,
        message: code === 'ENOENT' ? 'no such file' : `cannot read (${code})`,
      });
    }
  }
  return { files: [...new Set(files)], issues };
}

interface FileCheck {
  file: string;
  issues: PolicyIssue[];
  /** The team the file declares, when it names a valid one (even if the rest is broken). */
  team?: string;
  policy?: TeamPolicy;
  src?: YamlSource;
  /** The policy's socketGroup as written (resolved to a gid by checkFiles). */
  group?: number | string;
}

/** A name-shape problem the schema already reported at the same place is not said twice. */
function reported(issues: PolicyIssue[], issue: PolicyIssue): boolean {
  return issues.some((i) => i.line === issue.line && i.col === issue.col && i.file === issue.file);
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

function joinOrNone(names: string[]): string {
  return names.length ? [...names].sort().join(', ') : '(none)';
}

/**
 * How secret references are checked: against the config's secrets, or (`names-only`, when
 * policies are checked without an airlock.yaml) by the shape of the name alone.
 */
export type SecretCheckMode = 'config' | 'names-only';

function checkSecretRef(
  src: YamlSource,
  config: AirlockConfig,
  team: string | undefined,
  name: string,
  where: IssuePath,
  mode: SecretCheckMode = 'config',
): PolicyIssue | undefined {
  if (mode === 'names-only') {
    const parsed = secretNameSchema.safeParse(name);
    return parsed.success
      ? undefined
      : issueAt(src, where, `invalid secret name "${name}": ${parsed.error.issues[0]?.message}`);
  }
  const secret = Object.prototype.hasOwnProperty.call(config.secrets, name)
    ? config.secrets[name]
    : undefined;
  if (!secret) {
    return issueAt(
      src,
      where,
      `unknown secret "${name}"; known secrets: ${joinOrNone(Object.keys(config.secrets))}`,
    );
  }
  if (team !== undefined && secret.teams && !secret.teams.includes(team)) {
    return issueAt(
      src,
      where,
      `secret "${name}" may not be used by team "${team}" (allowed: ${joinOrNone(secret.teams)})`,
    );
  }
  return undefined;
}

/** Secret names a raw section references: from its parse when it validates, else best effort. */
function sectionSecretRefs(server: ServerDefinition, rawSection: unknown): SecretRef[] {
  const parsed = serverSectionSchema(server).safeParse(rawSection);
  if (parsed.success) return server.secretRefs(parsed.data);
  try {
    // The section has other mistakes; still report secret problems in the same run when we can.
    return server.secretRefs(rawSection);
  } catch {
    return [];
  }
}

/** The policy schema for files that name these servers (the servers loaded), one per set of servers. */
class PolicySchemas {
  private readonly bySet = new Map<string, z.ZodObject>();
  constructor(private readonly catalog: ServerCatalog) {}

  async forServers(named: string[]): Promise<{ servers: ServerDefinition[]; schema: z.ZodObject }> {
    const servers = await this.catalog.load(named);
    const key = servers.map((s) => s.name).join(',');
    let schema = this.bySet.get(key);
    if (!schema) this.bySet.set(key, (schema = buildPolicySchema(servers, this.catalog.names)));
    return { servers, schema };
  }
}

async function checkFile(
  file: string,
  text: string,
  config: AirlockConfig,
  schemas: PolicySchemas,
  mode: SecretCheckMode,
): Promise<FileCheck> {
  const src = parseYaml(file, text);
  const issues = [...src.issues];
  if (!src.usable) return { file, issues };

  const root = asRecord(src.data);
  const team = typeof root?.team === 'string' && TEAM_NAME_RE.test(root.team) ? root.team : undefined;
  const rawServers = asRecord(root?.servers);
  const { servers, schema } = await schemas.forServers(Object.keys(rawServers ?? {}));

  const result = schema.safeParse(src.data, { jitless: true });
  if (!result.success) issues.push(...zodIssuesToPolicyIssues(src, result.error.issues, schema));

  // Secrets are checked even when other parts of the file are broken: every mistake at once.
  for (const server of servers) {
    const rawSection = rawServers?.[server.name];
    if (rawSection === undefined) continue;
    // A file that parsed whole has its sections validated already: not parsed a second time.
    const refs = result.success
      ? server.secretRefs((result.data.servers as Record<string, unknown>)[server.name])
      : sectionSecretRefs(server, rawSection);
    for (const ref of refs) {
      if (typeof ref?.name !== 'string') continue;
      const refPath = Array.isArray(ref.path) ? ref.path : [];
      const where = refPath[0] === 'servers' ? refPath : ['servers', server.name, ...refPath];
      const issue = checkSecretRef(src, config, team, ref.name, where, mode);
      if (issue && !reported(issues, issue)) issues.push(issue);
    }
  }
  const credential = asRecord(rawServers?.model)?.credential;
  if (typeof credential === 'string') {
    const issue = checkSecretRef(src, config, team, credential, ['servers', 'model', 'credential'], mode);
    if (issue && !reported(issues, issue)) issues.push(issue);
  }

  let policy: TeamPolicy | undefined;
  if (result.success && issues.length === 0) {
    const { model, ...mcpServers } = result.data.servers as Record<string, unknown>;
    policy = {
      team: result.data.team as string,
      file,
      servers: mcpServers as Record<string, ServerPolicy>,
      ...(model ? { model: model as ModelPolicy } : {}),
    };
    const group = result.data.socketGroup as number | string | undefined;
    if (group !== undefined) return { file, issues, team, policy, src, group };
  }
  return { file, issues, team, policy, src };
}

/** Policy files belong to root or the broker's user: anyone else could grant themselves tools. */
function policyOwnerProblem(uid: number): string | undefined {
  const own = process.getuid?.();
  if (uid === 0 || own === undefined || uid === own) return undefined;
  return `owned by uid ${uid}; policy files must be owned by root or the broker's user (uid ${own}), so it is not read`;
}

/** `dev:ino` → secret name, for every secret held in a file (a GitHub App key included). */
async function secretFileIdentities(config: AirlockConfig): Promise<Map<string, string>> {
  const byIdentity = new Map<string, string>();
  for (const [name, secret] of Object.entries(config.secrets)) {
    const file =
      'file' in secret
        ? secret.file
        : 'githubApp' in secret && 'file' in secret.githubApp.privateKey
          ? secret.githubApp.privateKey.file
          : undefined;
    if (file === undefined) continue;
    try {
      const st = await stat(file);
      byIdentity.set(`${st.dev}:${st.ino}`, name);
    } catch {
      // A secret file that does not exist cannot be mistaken for a policy file.
    }
  }
  return byIdentity;
}

async function checkFiles(
  config: AirlockConfig,
  servers: readonly ServerDefinition[] | ServerCatalog,
  paths?: string[],
  mode: SecretCheckMode = 'config',
): Promise<{ checks: FileCheck[]; issues: PolicyIssue[] }> {
  const listed = paths && paths.length ? await expandPaths(paths) : await listPolicyFiles(config.policies);
  // Policies from git: the folder is the commit `airlock serve` put in force, once it has one.
  if (config.policyGit && !(paths && paths.length) && listed.issues[0]?.message.endsWith('(ENOENT)')) {
    listed.issues[0].message = `no policy commit in force yet: airlock serve fetches ${config.policyGit.url} into this folder (see airlock policy status)`;
  }
  const issues = [...listed.issues];
  const schemas = new PolicySchemas(asCatalog(servers));
  const checks: FileCheck[] = [];
  const firstByTeam = new Map<string, string>();
  const secretFiles = await secretFileIdentities(config);
  for (const file of listed.files) {
    let text: string;
    try {
      text = await readRegularTextFile(
        file,
        MAX_POLICY_FILE_BYTES,
        (st) => {
          // A secret file taken for a policy (a wrong PATH): a YAML error would quote it.
          const secret = secretFiles.get(`${st.dev}:${st.ino}`);
          if (secret !== undefined)
            return `this is the file of secret "${secret}", not a policy file; its contents are not read`;
          return policyOwnerProblem(st.uid);
        },
        // A symlink could name any file the broker can read (/etc/shadow as root).
        { noFollow: true },
      );
    } catch (err) {
      const { code, message } = err as UnreadableFileError;
      const why =
        code === 'ELOOP'
          ? `is a symlink; policy files must be regular files (owned by root or the broker's user), so it is not read`
          : code !== undefined
            ? `cannot read policy file (${code})`
            : message.startsWith('larger than')
              ? `${message}; not a policy file`
              : message;
      const check: FileCheck = { file, issues: [{ file, line: 1, col: 1, message: why }] };
      checks.push(check);
      issues.push(...check.issues);
      continue;
    }
    const check = await checkFile(file, text, config, schemas, mode);
    if (check.group !== undefined && check.policy && check.src) {
      const gid = await groupId(check.group);
      if (gid === undefined) {
        check.issues.push(
          issueAt(check.src, ['socketGroup'], `unknown group "${check.group}" (not in /etc/group)`),
        );
        delete check.policy;
      } else check.policy.socketGroup = gid;
    }
    if (check.team !== undefined && check.src) {
      const first = firstByTeam.get(check.team);
      if (first !== undefined) {
        check.issues.push(
          issueAt(check.src, ['team'], `team "${check.team}" is already defined in ${first}`),
        );
        delete check.policy;
      } else {
        const pos = valuePosition(check.src, ['team']);
        firstByTeam.set(check.team, `${file}:${pos.line}:${pos.col}`);
      }
    }
    checks.push(check);
    issues.push(...check.issues);
  }
  return { checks, issues: sortIssues(issues) };
}

/**
 * Validates policy files (default: every `.yaml`/`.yml` file of the config's policy folder) and
 * returns the valid policies plus every issue found, each with its position.
 */
export async function checkPolicyFiles(
  config: AirlockConfig,
  servers: readonly ServerDefinition[] | ServerCatalog,
  paths?: string[],
  mode: SecretCheckMode = 'config',
): Promise<{ policies: TeamPolicy[]; issues: PolicyIssue[] }> {
  const { checks, issues } = await checkFiles(config, servers, paths, mode);
  const policies = checks.flatMap((c) => (c.policy ? [c.policy] : []));
  return { policies, issues };
}

// ---------------------------------------------------------------------------------------------
// Runtime store

const RELOAD_DEBOUNCE_MS = 100;

/** Where policies come from when not a watched folder (see PolicyStore.attachSource). */
export interface PolicySource {
  reload(): Promise<{ changed: string[]; errors: PolicyIssue[] }>;
  close(): void;
}

function samePolicy(a: TeamPolicy, b: TeamPolicy): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * The policies `airlock serve` runs on. Reloads keep a team's last good policy while its file
 * is broken (and log why), drop a team whose file is gone, and emit `change` with the teams
 * whose policy changed.
 */
export class PolicyStore extends EventEmitter<{ change: [teams: string[]] }> {
  private byTeam = new Map<string, TeamPolicy>();
  private watcher: FSWatcher | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private waiting: Promise<{ changed: string[]; errors: PolicyIssue[] }> | undefined;
  private closed = false;
  private source: PolicySource | undefined;

  private constructor(
    private readonly config: AirlockConfig,
    private readonly servers: ServerCatalog,
    private readonly log: Logger,
  ) {
    super();
  }

  static async load(
    config: AirlockConfig,
    servers: readonly ServerDefinition[] | ServerCatalog,
    log: Logger,
  ): Promise<PolicyStore> {
    const store = new PolicyStore(config, asCatalog(servers), log);
    const { policies, issues } = await checkPolicyFiles(config, store.servers);
    if (issues.length) throw new ConfigError(issues, `invalid policies in ${config.policies}:`);
    for (const policy of policies) store.byTeam.set(policy.team, policy);
    log.info(
      { teams: [...store.byTeam.keys()] },
      `loaded ${store.byTeam.size} team policies from ${config.policies}`,
    );
    return store;
  }

  /** A store with no teams yet, for a source that fills it with replaceAll. */
  static empty(
    config: AirlockConfig,
    servers: readonly ServerDefinition[] | ServerCatalog,
    log: Logger,
  ): PolicyStore {
    return new PolicyStore(config, asCatalog(servers), log);
  }

  get(team: string): TeamPolicy | undefined {
    return this.byTeam.get(team);
  }

  teams(): TeamPolicy[] {
    return [...this.byTeam.values()].sort((a, b) => (a.team < b.team ? -1 : a.team > b.team ? 1 : 0));
  }

  /**
   * Re-reads the policy folder. Reloads run one at a time, in order; requests that arrive while
   * one is waiting to start share it (it reads the folder after all of them), so a burst of
   * SIGHUPs or file events costs one reload, not one each.
   */
  reload(): Promise<{ changed: string[]; errors: PolicyIssue[] }> {
    if (this.source) return this.source.reload();
    if (this.waiting) return this.waiting;
    const run = this.queue.then(() => {
      this.waiting = undefined;
      return this.reloadNow();
    });
    this.waiting = run;
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async reloadNow(): Promise<{ changed: string[]; errors: PolicyIssue[] }> {
    const { checks, issues } = await checkFiles(this.config, this.servers);
    const folderBroken = issues.some((i) => i.file === this.config.policies);
    const next = new Map<string, TeamPolicy>();
    for (const check of checks) if (check.policy) next.set(check.policy.team, check.policy);

    // A broken file keeps the last good policy of the team it held (or, failing that, the team
    // it names), unless a valid file now provides that team.
    for (const check of checks) {
      if (check.policy || check.issues.length === 0) continue;
      const keptTeams = [...this.byTeam.values()].filter((p) => p.file === check.file).map((p) => p.team);
      if (keptTeams.length === 0 && check.team && this.byTeam.get(check.team)) keptTeams.push(check.team);
      for (const team of keptTeams) {
        if (next.has(team)) continue;
        next.set(team, this.byTeam.get(team)!);
        this.log.warn(
          { team, file: check.file },
          `policy of team "${team}" is broken; keeping its last good version`,
        );
      }
    }
    // A team claimed by two files is ambiguous: whichever sorts first must not win (a stray copy
    // named `0-x.yaml` would take the team over). Keep its last good policy, or none.
    const claims = new Map<string, number>();
    for (const check of checks) if (check.team) claims.set(check.team, (claims.get(check.team) ?? 0) + 1);
    for (const [team, count] of claims) {
      if (count < 2) continue;
      const kept = this.byTeam.get(team);
      if (kept) next.set(team, kept);
      else next.delete(team);
      this.log.warn(
        { team },
        `team "${team}" is defined in more than one file; ${kept ? 'keeping its last good version' : 'not loaded'}`,
      );
    }
    // The folder itself unreadable (e.g. mid-replace): keep everything rather than drop all teams.
    if (folderBroken) for (const [team, policy] of this.byTeam) if (!next.has(team)) next.set(team, policy);

    for (const issue of issues)
      this.log.error({ file: issue.file, line: issue.line, col: issue.col }, formatIssue(issue));

    return { changed: this.swapIn(next), errors: issues };
  }

  /** Puts `next` in force; emits `change` with the teams whose policy differs. */
  private swapIn(next: Map<string, TeamPolicy>): string[] {
    const changed: string[] = [];
    for (const [team, policy] of next) {
      const before = this.byTeam.get(team);
      if (!before || !samePolicy(before, policy)) changed.push(team);
    }
    for (const team of this.byTeam.keys()) if (!next.has(team)) changed.push(team);
    changed.sort();

    this.byTeam = next;
    if (changed.length) {
      this.log.info({ teams: changed }, `policies changed: ${changed.join(', ')}`);
      this.emit('change', changed);
    }
    return changed;
  }

  /**
   * Replaces the whole set at once (a policy source that validated every file first, e.g. a git
   * commit): teams absent from `policies` are dropped. Returns the teams that changed.
   */
  replaceAll(policies: TeamPolicy[]): string[] {
    return this.swapIn(new Map(policies.map((p) => [p.team, p])));
  }

  /**
   * Hands reloads (SIGHUP) and closing to another source of policies (git): the folder is then
   * not watched or re-read by the store itself.
   */
  attachSource(source: PolicySource): void {
    this.source = source;
  }

  /**
   * Watches the policy folder (not the files: editors that write a temp file and rename it over
   * the original replace the inode, which a per-file watch would lose). Events are debounced.
   */
  watch(): void {
    if (this.watcher || this.closed || this.source) return;
    try {
      this.watcher = fsWatch(this.config.policies, { persistent: false }, (_event, filename) => {
        if (filename && !isPolicyFileName(filename.toString())) return;
        this.scheduleReload();
      });
    } catch (err) {
      this.log.error(
        { err: (err as Error).message },
        `cannot watch ${this.config.policies}; use SIGHUP to reload`,
      );
      return;
    }
    this.watcher.on('error', (err) => {
      this.log.error({ err: err.message }, `watching ${this.config.policies} failed; use SIGHUP to reload`);
      this.watcher?.close();
      this.watcher = undefined;
    });
  }

  private scheduleReload(): void {
    if (this.closed) return;
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.reload().catch((err: unknown) =>
        this.log.error({ err: (err as Error).message }, 'policy reload failed'),
      );
    }, RELOAD_DEBOUNCE_MS);
  }

  close(): void {
    this.closed = true;
    this.source?.close();
    clearTimeout(this.debounce);
    this.debounce = undefined;
    this.watcher?.close();
    this.watcher = undefined;
  }
}
