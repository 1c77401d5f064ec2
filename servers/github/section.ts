// The `servers.github` policy section (without `tools`, which the core adds) and the tools' own
// options:
//
//   credential: github-token          # a token secret, or a githubApp secret (tokens minted per call)
//   apiUrl: https://api.github.com    # GitHub Enterprise Server: https://HOST/api/v3; http:// only on loopback
//   repos: ["acme/payments-api"]      # owner/name globs (case-insensitive, as GitHub names are)
//   untrustedAuthors: label           # label (default) | omit: drop bodies by authors without write access
//   perPage: 30                       # list page size cap (GitHub's maximum is 100)
//   maxPages: 10                      # the last page a list tool may ask for
//   maxTextChars: 20000               # cap per body, comment, commit message
//   maxBytes: 1048576                 # cap for a file's contents or a diff
//   timeoutMs: 30000                  # deadline for the GitHub requests of one call, retries included
import { z } from 'zod';
import { globSchema, globProblem } from '../../src/policy/glob.js';
import { secretNameSchema } from '../../src/secrets/config.js';
import { DEFAULT_GITHUB_API_URL, githubApiUrlSchema } from '../../src/secrets/github-app.js';
import type { SecretRef } from '../../src/tool.js';

const repoGlobSchema = z.string().superRefine((value, ctx) => {
  const problem = globProblem(value);
  if (problem) return ctx.addIssue({ code: 'custom', message: problem });
  if (!/^[^/]+\/[^/]+$/.test(value) || value.includes('**'))
    ctx.addIssue({
      code: 'custom',
      message: `repos globs are OWNER/NAME (e.g. "acme/*"), not ${JSON.stringify(value)}`,
    });
});

export const githubSectionSchema = z
  .object({
    credential: secretNameSchema.describe(
      'A token secret, or a githubApp secret (an installation token is minted per call)',
    ),
    apiUrl: githubApiUrlSchema
      .default(DEFAULT_GITHUB_API_URL)
      .describe(
        'GitHub API base URL; https://HOST/api/v3 for GitHub Enterprise Server (http:// only on loopback)',
      ),
    repos: z
      .array(repoGlobSchema)
      .min(1)
      .describe('OWNER/NAME globs of the repositories the tools may touch'),
    untrustedAuthors: z
      .enum(['label', 'omit'])
      .default('label')
      .describe(
        'label: every body is labelled with its author; omit: bodies by authors without write access are dropped',
      ),
    perPage: z
      .number()
      .int()
      .min(1)
      .max(100)
      .default(30)
      .describe('Largest page a list tool returns (GitHub max 100)'),
    maxPages: z
      .number()
      .int()
      .min(1)
      .max(100)
      .default(10)
      .describe('Last page number a list tool may request'),
    maxTextChars: z
      .number()
      .int()
      .min(100)
      .max(1_000_000)
      .default(20_000)
      .describe('Cap for each body, comment or commit message returned'),
    maxBytes: z
      .number()
      .int()
      .min(1024)
      .max(16 * 1024 * 1024)
      .default(1024 * 1024)
      .describe('Cap for a file or a diff returned'),
    timeoutMs: z
      .number()
      .int()
      .min(100)
      .max(300_000)
      .default(30_000)
      .describe('Deadline for the GitHub requests of one call, retries included'),
  })
  .strict();

export type GithubSection = z.output<typeof githubSectionSchema>;

export function githubSecretRefs(section: GithubSection): SecretRef[] {
  return [{ name: section.credential, path: ['credential'] }];
}

const lengthLimits = {
  maxTitleLength: z.number().int().min(1).max(1024).default(256).describe('Longest title accepted'),
  maxBodyLength: z
    .number()
    .int()
    .min(1)
    .max(65_536)
    .default(65_536)
    .describe('Longest body accepted (GitHub itself takes 65536 characters)'),
};

export const createPullRequestOptions = z
  .object({
    base: z
      .array(globSchema)
      .default([])
      .describe('Branches a pull request may target (globs); none → every PR is denied'),
    head: z
      .array(globSchema)
      .default([])
      .describe('Branches a pull request may come from (globs); none → every PR is denied'),
    draft: z.enum(['required', 'allowed']).default('allowed').describe('required: only draft pull requests'),
    ...lengthLimits,
  })
  .strict();

export const createIssueOptions = z
  .object({
    labels: z
      .array(z.string().min(1).max(50))
      .optional()
      .describe('Labels the agent may set; absent → no labels'),
    ...lengthLimits,
  })
  .strict();

export const addIssueCommentOptions = z
  .object({
    labels: z
      .array(z.string().min(1).max(50))
      .optional()
      .describe('When set, only issues carrying one of these labels may be commented on'),
    maxBodyLength: lengthLimits.maxBodyLength,
  })
  .strict();

export const noOptions = z.object({}).strict();
