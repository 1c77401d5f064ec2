// The `servers.git` policy section and the git tools' own options.
import { isAbsolute } from 'node:path';
import { z } from 'zod';
import { globSchema } from '../../src/policy/glob.js';
import { secretNameSchema } from '../../src/secrets/config.js';
import { githubApiUrlSchema } from '../../src/secrets/github-app.js';

export const LOOPBACK_HOSTS: ReadonlySet<string> = new Set(['127.0.0.1', '[::1]', 'localhost']);

/**
 * Why `remote` is not a usable policy remote, or undefined. Only https:// (and http:// to a
 * loopback host, for local test servers) — no ssh (its transport runs a program, and host keys
 * would need managing; not supported for now), no file:, git:, ext::, and no user info (the
 * credential is given to git by Airlock, never written in a URL).
 */
export function remoteProblem(remote: string): string | undefined {
  if (/[\s\0-\x1f\x7f]/.test(remote)) return 'remote URL contains whitespace or a control character';
  let url: URL;
  try {
    url = new URL(remote);
  } catch {
    return `remote "${remote}" is not a URL (only https:// remotes are supported)`;
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    return `remote protocol "${url.protocol}" is not supported (only https://; http:// only to a loopback host)`;
  }
  if (url.protocol === 'http:' && !LOOPBACK_HOSTS.has(url.hostname)) {
    return 'http:// remotes are allowed only on a loopback host; use https://';
  }
  if (url.username || url.password) return 'remote URL must not carry user info; use `credential`';
  if (url.search || url.hash) return 'remote URL must not have a query or fragment';
  return undefined;
}

const remoteSchema = z.string().superRefine((value, ctx) => {
  const problem = remoteProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/**
 * A syntactic branch-name check for policy files (the tools re-check agent-given names with
 * `git check-ref-format`). Same rules as git's: no `..`, `@{`, control characters, spaces or
 * `~^:?*[\`; no leading `-` or `/`; no trailing `/`, `.` or `.lock`; no `//`.
 */
export function branchNameProblem(name: string): string | undefined {
  if (name.length === 0 || name.length > 200) return 'branch name must be 1–200 characters';
  if (name.startsWith('-')) return 'branch name must not start with "-"';
  if (/[\0-\x20\x7f~^:?*[\\]/.test(name)) return 'branch name contains a character git does not allow';
  if (name.includes('..') || name.includes('@{') || name.includes('//'))
    return 'branch name contains "..", "@{" or "//"';
  if (name === '@' || name === 'HEAD') return `"${name}" is not a branch name`;
  if (name.startsWith('/') || name.endsWith('/') || name.endsWith('.') || name.endsWith('.lock')) {
    return 'branch name must not start or end with "/", or end with "." or ".lock"';
  }
  if (name.split('/').some((part) => part.startsWith('.')))
    return 'a branch name component must not start with "."';
  return undefined;
}

const branchSchema = z.string().superRefine((value, ctx) => {
  const problem = branchNameProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

// Author identity lands in commit headers: no newlines or angle brackets.
const identityText = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[^<>\0-\x1f\x7f]+$/, 'no angle brackets or control characters');

/** The user name sent with an HTTPS credential (Basic auth): no ":" or whitespace. */
export const credentialUserSchema = z
  .string()
  .min(1)
  .max(100)
  .regex(/^[^:\s\0-\x1f]+$/, 'no ":", whitespace or control characters');

export const DEFAULT_AUTHOR = { name: 'Airlock Agent', email: 'airlock-agent@localhost' } as const;

export const workspaceSchema = z
  .object({
    path: z
      .string()
      .min(1)
      .refine((p) => isAbsolute(p), 'must be an absolute host path')
      .describe('Host path of the work tree mounted into the sandbox'),
    remote: remoteSchema.describe('https:// remote (http:// only on loopback); the only place git talks to'),
    credential: secretNameSchema
      .optional()
      .describe('Secret used for HTTPS auth (Basic, user credentialUser)'),
    githubApiUrl: githubApiUrlSchema
      .optional()
      .describe(
        'With a githubApp credential: the GitHub API that mints its tokens (default api.github.com for github.com remotes, https://HOST/api/v3 otherwise)',
      ),
    credentialUser: credentialUserSchema
      .default('x-access-token')
      .describe(
        'User name sent with the credential (GitHub tokens take any; x-access-token is the convention)',
      ),
    branch: branchSchema.default('main').describe('Branch checked out when Airlock first clones the remote'),
    author: z
      .object({ name: identityText, email: identityText })
      .strict()
      .default({ ...DEFAULT_AUTHOR })
      .describe('Author and committer of commits made through git_commit and git_pull'),
  })
  .strict();

export const WORKSPACE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const gitSectionSchema = z
  .object({
    workspaces: z.record(
      z.string().regex(WORKSPACE_NAME, 'workspace names use letters, digits, ".", "_" and "-"'),
      workspaceSchema,
    ),
  })
  .strict();

export type GitSection = z.output<typeof gitSectionSchema>;
export type WorkspacePolicy = z.output<typeof workspaceSchema>;

export const pushOptionsSchema = z
  .object({
    branches: z
      .array(globSchema)
      .default([])
      .describe('Remote branches the agent may push to (globs); none → every push is denied'),
    force: z
      .boolean()
      .default(false)
      .describe('Allow force pushes (as --force-with-lease against the last fetch)'),
    tags: z.boolean().default(false).describe('Allow pushing tags (branch: "refs/tags/<name>")'),
    delete: z.boolean().default(false).describe('Allow deleting remote branches that match `branches`'),
  })
  .strict();

export const pullOptionsSchema = z
  .object({
    merge: z.boolean().default(false).describe('Allow merge commits; default is fast-forward only'),
  })
  .strict();

export const noOptionsSchema = z.object({}).strict();

export type PushOptions = z.output<typeof pushOptionsSchema>;
export type PullOptions = z.output<typeof pullOptionsSchema>;
