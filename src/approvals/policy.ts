// The `approve` key every tool entry accepts (SPEC "Approvals"):
//   approve: required
//   approve: { when: { <tool's own conditions> }, timeout: 10m, grant: once | { for: 30m } }
// `when` keys are declared by the tool (ToolDefinition.approvalConditions); without `when` the
// approval always applies. The parsed form is normalized to ApprovePolicy.
import { z } from 'zod';
import type { AnyToolDefinition } from '../tool.js';

export const DEFAULT_APPROVAL_TIMEOUT_MS = 10 * 60_000;
/** A call may wait a day at most: it holds one of its session's call slots meanwhile. */
export const MAX_APPROVAL_TIMEOUT_MS = 24 * 3_600_000;
/** The longest grant a policy (or an approver) may give. */
export const MAX_GRANT_MS = 7 * 24 * 3_600_000;

export interface ApprovePolicy {
  /** Condition name → the policy's value for it; every one must match. Absent: always applies. */
  when?: Record<string, unknown>;
  timeoutMs: number;
  /** Longest grant an approval may give (identical calls then pass without waiting); 0 = once. */
  grantMaxMs: number;
}

const UNIT_MS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION_RE = /^([0-9]{1,9})(s|m|h|d)$/;

/** `30s`, `10m`, `2h`, `1d` → milliseconds; a string saying why otherwise. */
export function parseDuration(text: string, max: number): number | string {
  const m = DURATION_RE.exec(text.trim());
  if (!m) return `bad duration "${text}": expected a number and s, m, h or d (e.g. "30m")`;
  const ms = Number(m[1]) * UNIT_MS[m[2]!]!;
  if (ms <= 0) return `bad duration "${text}": must be more than zero`;
  if (ms > max) return `duration "${text}" is longer than the maximum (${formatDuration(max)})`;
  return ms;
}

export function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${Math.ceil(ms / 1000)}s`;
}

function durationSchema(what: string, max: number) {
  return z.string({ error: `${what} must be a duration such as "10m"` }).transform((text, ctx) => {
    const ms = parseDuration(text, max);
    if (typeof ms === 'string') {
      ctx.addIssue({ code: 'custom', message: ms });
      return z.NEVER;
    }
    return ms;
  });
}

/** The `approve` schema of one tool entry (its `when` keys are the tool's declared conditions). */
export function approveSchema(tool: AnyToolDefinition): z.ZodType<ApprovePolicy> {
  const conditions = tool.approvalConditions ?? {};
  const names = Object.keys(conditions);
  const whenShape: Record<string, z.ZodType> = {};
  for (const [name, condition] of Object.entries(conditions)) whenShape[name] = condition.schema.optional();
  const when = z
    .object(whenShape)
    .strict()
    .refine((w) => Object.keys(w).length > 0, {
      // Only for an empty mapping: an unknown key is reported as such, not as "nothing named".
      when: (payload) => payload.issues.length === 0,
      error: names.length
        ? `when must name at least one condition (${names.join(', ')})`
        : `${tool.name} declares no approval conditions; use "approve: required"`,
    })
    .describe(
      names.length
        ? `The call waits only if every listed condition matches its arguments (${names.join(', ')})`
        : `${tool.name} declares no conditions`,
    );
  const grant = z
    .union(
      [
        z.literal('once'),
        z.object({ for: durationSchema('grant.for', MAX_GRANT_MS).describe('e.g. "30m"') }).strict(),
      ],
      { error: 'grant must be "once" or { for: <duration> }' },
    )
    .describe(
      'once (default): every call needs its own approval; { for: 30m }: an approval also covers identical calls for that long',
    );
  const detailed = z
    .object({
      when: when.optional(),
      timeout: durationSchema('timeout', MAX_APPROVAL_TIMEOUT_MS)
        .optional()
        .describe('How long the call waits for a decision before it ends as expired (default 10m)'),
      grant: grant.optional(),
    })
    .strict();
  return z
    .union([z.literal('required'), detailed], {
      error: 'approve must be "required" or a mapping { when, timeout, grant }',
    })
    .transform((value): ApprovePolicy => {
      if (value === 'required') return { timeoutMs: DEFAULT_APPROVAL_TIMEOUT_MS, grantMaxMs: 0 };
      return {
        ...(value.when ? { when: value.when } : {}),
        timeoutMs: value.timeout ?? DEFAULT_APPROVAL_TIMEOUT_MS,
        grantMaxMs: value.grant === undefined || value.grant === 'once' ? 0 : value.grant.for,
      };
    })
    .describe(
      'Human approval out of band before the call runs: "required", or { when, timeout, grant } (see `airlock approvals`)',
    );
}

/** Whether a call with these (validated) arguments must wait for approval under `policy`. */
export function needsApproval(tool: AnyToolDefinition, policy: ApprovePolicy, args: unknown): boolean {
  if (!policy.when) return true;
  for (const [name, value] of Object.entries(policy.when)) {
    const condition = tool.approvalConditions?.[name];
    // A condition the tool no longer declares cannot be checked: wait rather than skip it.
    if (!condition || condition.matches(value, args)) continue;
    return false;
  }
  return true;
}
