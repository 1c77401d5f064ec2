// `airlock policy check [PATH…]` and `airlock policy schema`.
import path from 'node:path';
import { ConfigError, loadConfig } from '../config.js';
import { checkPolicyFiles, policyJsonSchema, type PolicyIssue, type TeamPolicy } from '../policy.js';
import type { ServerDefinition } from '../tool.js';

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

/**
 * Validates policy files against the config's secrets. Prints every issue as
 * `file:line:col: message` on `out` (a tally on `err`) and returns 1 if there is any; otherwise
 * prints one summary line per team and returns 0. A broken config is a user error too (1).
 */
export async function policyCheckCommand(opts: {
  config: string;
  paths: string[];
  servers: ServerDefinition[];
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}): Promise<number> {
  const out = opts.out ?? process.stdout;
  const err = opts.err ?? process.stderr;
  let issues: PolicyIssue[];
  let policies: TeamPolicy[];
  try {
    const config = await loadConfig(opts.config);
    ({ policies, issues } = await checkPolicyFiles(config, opts.servers, opts.paths));
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    for (const issue of e.issues) out.write(printIssue(issue) + '\n');
    err.write(`config is invalid: ${plural(e.issues.length, 'error')}\n`);
    return 1;
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

export function policySchemaCommand(opts: {
  servers: ServerDefinition[];
  out?: NodeJS.WritableStream;
}): number {
  const out = opts.out ?? process.stdout;
  out.write(JSON.stringify(policyJsonSchema(opts.servers), null, 2) + '\n');
  return 0;
}
