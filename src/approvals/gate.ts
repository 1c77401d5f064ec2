// The pipeline's one step for approvals: after the request record, a call whose tool entry
// has `approve` (and whose arguments match its `when`) waits for a human's decision.
import { canonicalJson } from '../audit/log.js';
import type { AnyToolDefinition } from '../tool.js';
import { needsApproval, type ApprovePolicy } from './policy.js';
import type { ApprovalService, CallHead } from './service.js';

export type ProgressSink = (progress: number, total: number, message: string) => void;

/** undefined: the call may run now; otherwise why it must not run at all. */
export async function holdForApproval(
  service: Pick<ApprovalService, 'await'> | undefined,
  call: {
    tool: AnyToolDefinition;
    policy: ApprovePolicy;
    head: CallHead;
    args: unknown;
    rule: string;
    signal?: AbortSignal;
    progress?: ProgressSink;
    /** The server's policy section the call was authorized under, and how to read it now. */
    section: unknown;
    currentSection: () => unknown;
  },
): Promise<{ rule: string; reason: string } | undefined> {
  if (!needsApproval(call.tool, call.policy, call.args)) return undefined;
  if (!service) return { rule: call.rule, reason: 'this process cannot hold calls for approval' };
  try {
    const result = await service.await({
      head: call.head,
      args: call.args,
      rule: call.rule,
      timeoutMs: call.policy.timeoutMs,
      grantMaxMs: call.policy.grantMaxMs,
      signal: call.signal,
      progress: call.progress,
    });
    if (!result.approved) return { rule: call.rule, reason: result.reason };
    // The approver saw a call the policy allowed; if the team's policy changed while it waited,
    // what was approved is no longer what the policy says, so it does not run.
    if (canonicalJson(call.currentSection() ?? null) !== canonicalJson(call.section)) {
      return {
        rule: call.rule,
        reason: "the team's policy changed while the call waited for approval; nothing was done (call again)",
      };
    }
    return undefined;
  } catch (err) {
    return {
      rule: call.rule,
      reason: `the call could not be held for approval (${(err as Error).message}); nothing was done`,
    };
  }
}
