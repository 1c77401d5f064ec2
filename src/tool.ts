// The contract between the broker core and a server (http, git, github, postgres).
// A server declares its policy section, its tools (schema, policy check, handler) and,
// optionally, per-team runtime state (connection pools). It never sees sockets, audit or
// other teams: the core pipeline (src/pipeline/pipeline.ts) wraps every call in
// authorize → resolve credential → call upstream → redact → audit.
import { z } from 'zod';
import { globSchema, matchAny } from './policy/glob.js';
import type { Logger } from './log.js';
import type { GithubTokenScope } from './secrets/github-app.js';

export type ServerName = 'git' | 'github' | 'postgres' | 'http';

export interface ToolAnnotations {
  title?: string;
  readOnlyHint: boolean;
  destructiveHint: boolean;
  idempotentHint?: boolean;
  openWorldHint: boolean;
}

/** The outcome of a policy check. `rule` names the policy path that decided (e.g. `http.hosts[0].methods`). */
export type Decision =
  { allow: true; rule: string; audit?: AuditDetail } | { allow: false; rule: string; reason: string };

/**
 * Facts a server adds to a call's audit record (e.g. the tables a SQL statement reads). Keys must
 * not collide with the record's own fields; values are redacted and truncated like arguments.
 */
export type AuditDetail = Record<string, unknown>;

export const allow = (rule: string, audit?: AuditDetail): Decision =>
  audit ? { allow: true, rule, audit } : { allow: true, rule };
export const deny = (rule: string, reason: string): Decision => ({ allow: false, rule, reason });

/** Secrets as a tool sees them: by name, for its own team only. Values are registered for redaction. */
export interface SecretAccess {
  /** Resolves a named secret for the calling team. Throws CredentialUnavailableError (a ToolError naming the secret only; the cause is kept for the operator). */
  get(name: string): Promise<string>;
  /**
   * A GitHub credential: a token secret's value, or for a githubApp secret an installation token
   * minted for `scope()` alone (one repository, the given permissions) and registered for
   * redaction. Absent where no GitHub App support is wired (then use `get`).
   */
  githubToken?(name: string, scope: () => GithubTokenScope): Promise<string>;
}

/** What a policy check may look at: the team's policy for this server and this tool, nothing live. */
export interface AuthorizeContext<Section = unknown, Options = unknown> {
  team: string;
  /** The server's parsed policy section for this team (including `tools`). */
  section: Section;
  /** This tool's parsed policy entry (its own options plus `rateLimit`). */
  options: Options;
}

export interface ToolContext<
  Section = unknown,
  Options = unknown,
  Runtime = unknown,
> extends AuthorizeContext<Section, Options> {
  server: ServerName;
  secrets: SecretAccess;
  /** Aborted when the session closes, the broker stops draining, or the call's own deadline passes. */
  signal: AbortSignal;
  /** Host-owned state folder for this server and team: `<stateDir>/<server>/<team>` (created on demand). */
  stateDir: string;
  log: Logger;
  /** Per-team runtime of this server (pools, caches), from ServerDefinition.createRuntime. */
  runtime: Runtime;
}

export interface ToolResult<Out = Record<string, unknown>> {
  /** Matches the tool's output schema; sent as `structuredContent`. */
  structured: Out;
  /** Human/agent readable rendering; sent as the text content. */
  text: string;
  /** Facts for the result record (e.g. rowCount); never the result itself. */
  audit?: AuditDetail;
}

/** Throw from a handler for an error the agent should see verbatim (after redaction). */
export class ToolError extends Error {
  constructor(
    message: string,
    /** `invalid` → text starts "invalid argument:"; `denied` → "denied: <rule>: ..."; `upstream` → "error: ...". */
    readonly kind: 'invalid' | 'denied' | 'upstream' = 'upstream',
    readonly rule?: string,
  ) {
    super(message);
    this.name = 'ToolError';
  }
}

/**
 * Runs `fn` with a signal that aborts when `parent` does, or after `ms` with a TimeoutError, and
 * clears its timer once `fn` settles. Not `AbortSignal.any([parent, AbortSignal.timeout(ms)])`: on
 * Node 20 the combined signal holds its sources weakly, so a garbage collection can take the
 * timeout signal and the deadline never comes (a CI run waited 30 s on a 500 ms one).
 */
export async function withDeadline<T>(
  parent: AbortSignal,
  ms: number,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  const onParentAbort = () => controller.abort(parent.reason);
  if (parent.aborted) onParentAbort();
  else parent.addEventListener('abort', onParentAbort, { once: true });
  const timer = setTimeout(
    () => controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')),
    ms,
  );
  try {
    return await fn(controller.signal);
  } finally {
    clearTimeout(timer);
    parent.removeEventListener('abort', onParentAbort);
  }
}

export interface ToolDefinition<
  In extends z.ZodObject = z.ZodObject,
  Out extends z.ZodObject = z.ZodObject,
  Options extends z.ZodObject = z.ZodObject,
  Section = unknown,
  Runtime = unknown,
> {
  name: string;
  title: string;
  /** Short and exact: what it does, what it needs, what it returns. */
  description: string;
  input: In;
  output: Out;
  /** The tool's own policy options (`rateLimit` is added by the core for every tool). Use `.strict()`. */
  options: Options;
  annotations: ToolAnnotations;
  /**
   * Conditions a policy may put in `approve: { when: {...} }` for this tool, over its own
   * arguments (e.g. git_push `branches`). All listed conditions must match for a call to wait.
   */
  approvalConditions?: Record<string, ApprovalCondition<z.output<In>>>;
  /**
   * Loads what authorize needs on the tool's first call (the postgres SQL parser), so a broker
   * that never calls the tool never loads it. Awaited before every authorize; cheap once loaded.
   */
  prepare?(): Promise<void>;
  /** Pure policy check on validated arguments. Runs before anything is audited as a request. */
  authorize(args: z.output<In>, ctx: AuthorizeContext<Section, z.output<Options>>): Decision;
  run(
    args: z.output<In>,
    ctx: ToolContext<Section, z.output<Options>, Runtime>,
  ): Promise<ToolResult<z.output<Out>>>;
}

/** One `approve.when` key: its policy schema and whether a call's arguments match it. */
export interface ApprovalCondition<Args = unknown, Value = unknown> {
  schema: z.ZodType<Value>;
  matches(value: Value, args: Args): boolean;
}

/**
 * The usual condition: a list of globs that one string of the arguments must match (a call
 * without that argument never matches).
 */
export function globCondition<Args>(
  description: string,
  pick: (args: Args) => string | undefined,
): ApprovalCondition<Args, string[]> {
  return {
    schema: z.array(globSchema).min(1).describe(description),
    matches: (patterns, args) => {
      const value = pick(args);
      return value !== undefined && matchAny(patterns, value) !== undefined;
    },
  };
}

/** A condition on one string of the arguments that must be one of the listed values. */
export function oneOfCondition<Args>(
  values: readonly [string, ...string[]],
  description: string,
  pick: (args: Args) => string | undefined,
): ApprovalCondition<Args, string[]> {
  return {
    schema: z.array(z.enum(values)).min(1).describe(description),
    matches: (listed, args) => {
      const value = pick(args);
      return value !== undefined && listed.includes(value);
    },
  };
}

// Handlers are stored type-erased in a server's tool list; defineTool keeps authors type-checked.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyToolDefinition = ToolDefinition<any, any, any, any, any>;

export function defineTool<
  In extends z.ZodObject,
  Out extends z.ZodObject,
  Options extends z.ZodObject,
  Section,
  Runtime = unknown,
>(
  def: ToolDefinition<In, Out, Options, Section, Runtime>,
): ToolDefinition<In, Out, Options, Section, Runtime> {
  return def;
}

/** A secret name referenced from a policy section, with its YAML path (for `file:line:col` errors). */
export interface SecretRef {
  name: string;
  path: (string | number)[];
}

export interface ServerRuntime {
  close(): Promise<void>;
  /** The runtime's connection pools as they stand (telemetry gauges); optional. */
  poolUse?(): PoolUse[];
}

export interface PoolUse {
  /** The pool's name within the runtime (a database name). */
  name: string;
  total: number;
  idle: number;
  /** Callers waiting for a connection. */
  waiting: number;
}

export interface ServerDefinition<Section = unknown, Runtime = unknown> {
  name: ServerName;
  /** One-line description used in `tools/list` server info and docs. */
  description: string;
  /**
   * The policy section without `tools` (the core adds `tools: { <tool>: options + rateLimit }`).
   * Must be a strict zod object so unknown keys are reported.
   */
  section: z.ZodObject;
  tools: AnyToolDefinition[];
  /** Secret names this section references, so policy check can report unknown or forbidden ones. */
  secretRefs(section: Section): SecretRef[];
  /** Optional per-team state (pools). Created on first call, closed on policy change and shutdown. */
  createRuntime?(ctx: {
    team: string;
    section: Section;
    secrets: SecretAccess;
    log: Logger;
  }): Promise<Runtime & ServerRuntime>;
}

export function defineServer<Section, Runtime = unknown>(
  def: ServerDefinition<Section, Runtime>,
): ServerDefinition<Section, Runtime> {
  return def;
}

/**
 * The servers a broker can run, by name, each loaded the first time something needs it. A
 * server's module builds every zod schema of its tools when it is evaluated (a third of
 * `airlock stdio`'s start-up for the four servers), while a broker runs the servers its policies
 * name, often one or two: policies are checked by loading the servers each file names, and only
 * `policy schema` and `init` need them all.
 */
export class ServerCatalog {
  /** The servers loaded so far, by name; it grows as policies name more of them. */
  readonly loaded = new Map<ServerName, ServerDefinition>();
  private readonly pending = new Map<ServerName, Promise<ServerDefinition>>();
  readonly names: readonly ServerName[];

  constructor(
    private readonly loaders: Readonly<Partial<Record<ServerName, () => Promise<ServerDefinition>>>>,
  ) {
    this.names = Object.keys(loaders) as ServerName[];
  }

  /** A catalog of servers already at hand (tests, and callers that pass definitions). */
  static of(servers: readonly ServerDefinition[]): ServerCatalog {
    const dup = servers.find((s, i) => servers.findIndex((t) => t.name === s.name) !== i);
    if (dup) throw new Error(`server "${dup.name}" is defined twice`);
    const catalog = new ServerCatalog(
      Object.fromEntries(servers.map((s) => [s.name, () => Promise.resolve(s)])),
    );
    for (const s of servers) catalog.loaded.set(s.name, s);
    return catalog;
  }

  has(name: string): name is ServerName {
    return (this.names as readonly string[]).includes(name);
  }

  /** The definitions of the named servers this catalog has (other names are skipped), in catalog order. */
  async load(names: Iterable<string>): Promise<ServerDefinition[]> {
    const wanted = new Set(names);
    return Promise.all(this.names.filter((n) => wanted.has(n)).map((n) => this.loadOne(n)));
  }

  all(): Promise<ServerDefinition[]> {
    return this.load(this.names);
  }

  private loadOne(name: ServerName): Promise<ServerDefinition> {
    const done = this.loaded.get(name);
    if (done) return Promise.resolve(done);
    let loading = this.pending.get(name);
    if (!loading) {
      loading = this.loaders[name]!().then((def) => {
        this.loaded.set(name, def);
        return def;
      });
      // A module that fails to load (a broken install) is tried again by the next caller.
      loading.catch(() => this.pending.delete(name));
      this.pending.set(name, loading);
    }
    return loading;
  }
}

/** Callers may pass definitions or a catalog. */
export function asCatalog(servers: readonly ServerDefinition[] | ServerCatalog): ServerCatalog {
  return servers instanceof ServerCatalog ? servers : ServerCatalog.of(servers);
}
