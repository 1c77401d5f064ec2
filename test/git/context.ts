// A hand-built ToolContext for calling git tools directly (no broker core in the loop).
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import type { z } from 'zod';
import { silentLogger } from '../../src/log.js';
import {
  ToolError,
  type AnyToolDefinition,
  type SecretAccess,
  type ToolContext,
  type ToolResult,
} from '../../src/tool.js';
import { gitSectionSchema, type GitSection } from '../../servers/git/policy.js';
import { startSmartHttpServer, type SmartHttpServer } from './smart-http-server.js';

export class MapSecrets implements SecretAccess {
  readonly requested: string[] = [];
  constructor(private readonly values: Record<string, string>) {}
  async get(name: string): Promise<string> {
    this.requested.push(name);
    const v = this.values[name];
    if (v === undefined) throw new Error(`secret "${name}" is not defined`);
    return v;
  }
}

export async function tempDir(prefix = 'airlock-git-'): Promise<string> {
  return fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), prefix)));
}

/**
 * Gives a folder to the agent (uid/gid 1000) when the tests run as root, as /srv/agents/<team>
 * is: a broker running as root refuses to create a work tree in a folder of group root (it
 * would be root-owned). Work trees made in it are then the agent's.
 */
export async function ownedByAgent(dir: string): Promise<void> {
  if (process.getuid?.() === 0) await fs.chown(dir, 1000, 1000);
}

export interface GitTestContextOptions {
  /** The `servers.git` section as written in a policy (parsed here, defaults applied). */
  section: z.input<typeof gitSectionSchema>;
  secrets?: Record<string, string>;
  /** `<stateDir>/git/<team>` is used as the tool's stateDir. */
  stateDir: string;
  team?: string;
  signal?: AbortSignal;
}

export function gitContext(opts: GitTestContextOptions): GitTestContext {
  const team = opts.team ?? 'payments';
  return {
    team,
    server: 'git',
    section: gitSectionSchema.parse(opts.section),
    options: {},
    secrets: new MapSecrets(opts.secrets ?? {}),
    signal: opts.signal ?? new AbortController().signal,
    stateDir: path.join(opts.stateDir, 'git', team),
    log: silentLogger(),
    runtime: undefined,
  };
}

export type GitTestContext = ToolContext<GitSection, unknown, unknown>;

export interface ApiWorkspaceOptions {
  stateDir: string;
  workTree: string;
  /** Defaults to the fixture server's `app.git`. */
  remote?: string;
  branch?: string;
  /** The value of the "github-token" secret; defaults to the server's password. */
  secret?: string;
  signal?: AbortSignal;
}

export interface GitRemoteFixture {
  /** Scratch folder of the test file (removed after it); bare repositories go in `repos`. */
  readonly root: string;
  readonly repos: string;
  /** Serves `repos` over smart HTTP behind Basic auth (x-access-token:<password>). */
  readonly server: SmartHttpServer;
  /** A context with one workspace "api" on the remote, its credential the secret "github-token". */
  context(opts: ApiWorkspaceOptions): GitTestContext;
}

/**
 * Registers beforeAll/afterAll hooks that make a scratch folder and start a smart-HTTP server
 * over `<root>/repos`; the fixture's fields are set once beforeAll has run.
 */
export function useGitRemote(password: string): GitRemoteFixture {
  let root: string | undefined;
  let server: SmartHttpServer | undefined;
  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('the git remote fixture is used before beforeAll ran');
    return value;
  };
  beforeAll(async () => {
    root = await tempDir();
    await ownedByAgent(root);
    await fs.mkdir(path.join(root, 'repos'));
    server = await startSmartHttpServer({
      root: path.join(root, 'repos'),
      username: 'x-access-token',
      password,
    });
  });
  afterAll(async () => {
    await server?.close();
    if (root) await fs.rm(root, { recursive: true, force: true });
  });
  return {
    get root() {
      return started(root);
    },
    get repos() {
      return path.join(started(root), 'repos');
    },
    get server() {
      return started(server);
    },
    context(opts) {
      return gitContext({
        stateDir: opts.stateDir,
        secrets: { 'github-token': opts.secret ?? password },
        signal: opts.signal,
        section: {
          workspaces: {
            api: {
              path: opts.workTree,
              remote: opts.remote ?? started(server).repoUrl('app.git'),
              credential: 'github-token',
              ...(opts.branch === undefined ? {} : { branch: opts.branch }),
            },
          },
        },
      });
    },
  };
}

export type CallOutcome =
  | { ok: true; result: ToolResult<Record<string, unknown>> }
  | { ok: false; denied: true; rule: string; reason: string; text: string }
  | { ok: false; denied: false; error: unknown; text: string };

/**
 * Calls a tool the way the pipeline does, minus audit: input and options parsed by their
 * schemas, authorize, run. Returns a rendered text for errors like the core's
 * ("denied: <rule>: …", "invalid argument: …", "error: …").
 */
export async function callTool(
  tool: AnyToolDefinition,
  ctx: GitTestContext,
  rawArgs: Record<string, unknown>,
  rawOptions: Record<string, unknown> = {},
): Promise<CallOutcome> {
  const parsed = tool.input.safeParse(rawArgs);
  if (!parsed.success) {
    return {
      ok: false,
      denied: false,
      error: parsed.error,
      text: `invalid argument: ${parsed.error.message}`,
    };
  }
  const options = tool.options.parse(rawOptions);
  const decision = tool.authorize(parsed.data, { team: ctx.team, section: ctx.section, options });
  if (!decision.allow) {
    return {
      ok: false,
      denied: true,
      rule: decision.rule,
      reason: decision.reason,
      text: `denied: ${decision.rule}: ${decision.reason}`,
    };
  }
  try {
    const result = await tool.run(parsed.data, { ...ctx, options });
    tool.output.parse(result.structured);
    return { ok: true, result };
  } catch (error) {
    if (error instanceof ToolError) {
      const text =
        error.kind === 'invalid'
          ? `invalid argument: ${error.message}`
          : error.kind === 'denied'
            ? `denied: ${error.rule ?? 'policy'}: ${error.message}`
            : `error: ${error.message}`;
      return {
        ok: false,
        denied: error.kind === 'denied',
        rule: error.rule ?? '',
        reason: error.message,
        error,
        text,
      } as CallOutcome;
    }
    return { ok: false, denied: false, error, text: `error: ${(error as Error).message}` };
  }
}

/** Calls a tool and returns its result, failing the test with the rendered error otherwise. */
export async function mustCall(
  tool: AnyToolDefinition,
  ctx: GitTestContext,
  args: Record<string, unknown>,
  options: Record<string, unknown> = {},
): Promise<ToolResult<Record<string, unknown>>> {
  const outcome = await callTool(tool, ctx, args, options);
  if (!outcome.ok) throw new Error(`${tool.name} failed: ${outcome.text}`);
  return outcome.result;
}
