// A hand-built ToolContext for calling git tools directly (no broker core in the loop).
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
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

export interface GitTestContextOptions {
  /** The `servers.git` section as written in a policy (parsed here, defaults applied). */
  section: z.input<typeof gitSectionSchema>;
  secrets?: Record<string, string>;
  /** `<stateDir>/git/<team>` is used as the tool's stateDir. */
  stateDir: string;
  team?: string;
  signal?: AbortSignal;
}

export function gitContext(opts: GitTestContextOptions): ToolContext<GitSection, unknown, unknown> {
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
  ctx: ToolContext<GitSection, unknown, unknown>,
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
  ctx: ToolContext<GitSection, unknown, unknown>,
  args: Record<string, unknown>,
  options: Record<string, unknown> = {},
): Promise<ToolResult<Record<string, unknown>>> {
  const outcome = await callTool(tool, ctx, args, options);
  if (!outcome.ok) throw new Error(`${tool.name} failed: ${outcome.text}`);
  return outcome.result;
}
