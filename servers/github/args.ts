// Argument rules every github tool shares: GitHub's name rules for owner and repo, the policy's
// repos globs, file paths checked segment by segment, refs as git ref names or object ids, and
// pagination within the policy's caps. Everything here is pure: a refusal never reaches GitHub.
import { z } from 'zod';
import { matchGlob } from '../../src/policy/glob.js';
import { OWNER_NAME, REPO_NAME } from '../../src/secrets/github-app.js';
import { allow, deny, type Decision } from '../../src/tool.js';
import type { GithubSection } from './section.js';

export const ownerSchema = z
  .string()
  .regex(OWNER_NAME, 'owner must be a GitHub account name: letters, digits and single hyphens, at most 39')
  .describe('Repository owner (user or organization)');
export const repoSchema = z
  .string()
  .regex(REPO_NAME, 'repo must be a GitHub repository name: letters, digits, ".", "_" and "-", at most 100')
  .describe('Repository name');

export const repoArgs = { owner: ownerSchema, repo: repoSchema };

export const numberSchema = z.number().int().min(1).max(2_147_483_647);

/** Why `ref` is not a git ref name or object id, or undefined (git check-ref-format's rules, plus no leading "-"). */
export function refProblem(ref: string): string | undefined {
  if (ref.length === 0 || ref.length > 255) return 'must be 1–255 characters';
  if (/^[0-9a-f]{7,64}$/i.test(ref)) return undefined;
  if (ref.startsWith('-')) return 'must not start with "-"';
  if (/[\0-\x20\x7f~^:?*[\\]/.test(ref)) return 'contains a character git does not allow in a ref name';
  if (ref.includes('..') || ref.includes('@{') || ref.includes('//')) return 'contains "..", "@{" or "//"';
  if (ref === '@') return '"@" is not a ref name';
  if (ref.startsWith('/') || ref.endsWith('/') || ref.endsWith('.') || ref.endsWith('.lock'))
    return 'must not start or end with "/", or end with "." or ".lock"';
  if (ref.split('/').some((part) => part.startsWith('.'))) return 'a component must not start with "."';
  if (/%[0-9a-f]{2}/i.test(ref)) return 'must not contain percent-escapes';
  return undefined;
}

export const refSchema = z.string().superRefine((value, ctx) => {
  const problem = refProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: `not a git ref name or object id: ${problem}` });
});

/** Why `path` is not a plain repository path, or undefined. */
export function pathProblem(path: string): string | undefined {
  if (path.length > 4096) return 'is longer than 4096 characters';
  if (/[\0-\x1f\x7f]/.test(path)) return 'contains a control character';
  if (path.includes('\\')) return 'contains a backslash';
  if (path.includes('?') || path.includes('#')) return 'contains "?" or "#"';
  if (/%[0-9a-f]{2}/i.test(path))
    return 'contains a percent-escape (such as %2e or %2f); give the path as plain text';
  if (path === '') return undefined; // the repository root
  for (const segment of path.split('/')) {
    if (segment === '') return 'has an empty segment (a leading, trailing or doubled "/")';
    if (segment === '.' || segment === '..') return `has a "${segment}" segment`;
  }
  return undefined;
}

export const pathSchema = z.string().superRefine((value, ctx) => {
  const problem = pathProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: `path ${problem}` });
});

/** Each segment percent-encoded on its own, "/" kept: what GitHub's contents API expects in the URL. */
export function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

export const paginationArgs = {
  page: z.number().int().min(1).optional().describe('1-based page number (at most the policy maxPages)'),
  perPage: z
    .number()
    .int()
    .min(1)
    .max(100)
    .optional()
    .describe('Items per page (at most the policy perPage)'),
};

/** The policy rule that admits `owner/repo`, or the denial. */
export function authorizeRepo(section: GithubSection, owner: string, repo: string): Decision {
  const full = `${owner}/${repo}`.toLowerCase();
  const index = section.repos.findIndex((glob) => matchGlob(glob.toLowerCase(), full));
  if (index < 0) {
    return deny(
      'github.repos',
      `repository ${owner}/${repo} is not in the policy; allowed: ${section.repos.join(', ')}`,
    );
  }
  return allow(`github.repos[${index}]`);
}

/** Page and page size within the caps, or the denial. */
export function authorizePage(
  section: GithubSection,
  args: { page?: number; perPage?: number },
): Decision | undefined {
  if (args.page !== undefined && args.page > section.maxPages)
    return deny(
      'github.maxPages',
      `page ${args.page} is past the policy's last page (maxPages: ${section.maxPages})`,
    );
  if (args.perPage !== undefined && args.perPage > section.perPage)
    return deny(
      'github.perPage',
      `perPage ${args.perPage} is more than the policy allows (perPage: ${section.perPage})`,
    );
  return undefined;
}

/** Runs checks in order; the first denial wins, else the repository rule with the tool's own rule appended. */
export function firstDenial(...decisions: (Decision | undefined)[]): Decision | undefined {
  return decisions.find((d) => d !== undefined && !d.allow);
}
