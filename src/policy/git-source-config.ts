// `policies: { git: <url>, … }` in airlock.yaml: team policies taken from a git repository that
// the broker fetches on an interval (see git-source.ts). This file holds the schema and the
// resolution of `requireSignedBy` (keys given inline or as files), with positioned errors.
import path from 'node:path';
import { z } from 'zod';
import { parseDuration } from '../approvals/policy.js';
import { secretNameSchema } from '../secrets/config.js';
import { branchNameProblem, credentialUserSchema, remoteProblem } from '../../servers/git/policy.js';
import { issueAt, type PolicyIssue, type YamlSource } from '../config/yaml-positions.js';
import type { SecretConfig } from '../secrets/config.js';

export const MIN_POLICY_GIT_INTERVAL_MS = 1_000;
export const MAX_POLICY_GIT_INTERVAL_MS = 86_400_000;
const MAX_KEY_FILE_BYTES = 64 * 1024;

/** The transports a policy repository may use: https, http to loopback, file for tests/mirrors. */
export type PolicyGitProtocol = 'https' | 'http' | 'file';

/** A key whose signature makes a policy commit acceptable. */
export type SignerKey =
  | { kind: 'ssh'; /** `<type> <base64>` (no comment) */ key: string; label: string }
  | { kind: 'openpgp'; armored: string; label: string };

export interface PolicyGitConfig {
  url: string;
  protocol: PolicyGitProtocol;
  ref: string;
  everyMs: number;
  credential?: string;
  credentialUser: string;
  requireSignedBy: SignerKey[];
  /** Subfolder of the repository holding the policy files ('' = its root), `/`-separated. */
  path: string;
}

/**
 * Why `url` is not a usable policy repository. https:// (http:// only to a loopback host), as
 * for git workspaces; plus file:// (a repository on this host: tests, a local mirror). No user
 * info: the credential is given to git by Airlock through its environment.
 */
export function policyRepoProblem(url: string): string | undefined {
  if (url.startsWith('file:')) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return `"${url}" is not a URL`;
    }
    if (/[\s\0-\x1f\x7f]/.test(url)) return 'URL contains whitespace or a control character';
    if (parsed.host !== '') return 'file:// URLs must name a local path (file:///path/to/repo)';
    if (parsed.search || parsed.hash) return 'URL must not have a query or fragment';
    return undefined;
  }
  return remoteProblem(url)
    ?.replace(/^remote /, '')
    .replace(/ remotes /, ' URLs ');
}

/** A repository subfolder: relative, `/`-separated, no `.`/`..` parts. */
function subfolderProblem(p: string): string | undefined {
  if (p.startsWith('/')) return 'path is a folder inside the repository: it must not start with "/"';
  if (/[\0-\x1f\x7f\\]/.test(p)) return 'path contains a control character or a backslash';
  const parts = p.split('/').filter((s) => s !== '');
  if (parts.some((s) => s === '.' || s === '..')) return 'path must not contain "." or ".." parts';
  return undefined;
}

const problemSchema = (problem: (v: string) => string | undefined) =>
  z.string().superRefine((value, ctx) => {
    const why = problem(value);
    if (why) ctx.addIssue({ code: 'custom', message: why });
  });

export const policyGitSchema = z
  .object({
    git: problemSchema(policyRepoProblem).describe(
      'Policy repository: https:// (http:// only to a loopback host; file:// for a repository on this host)',
    ),
    ref: problemSchema(branchNameProblem).default('main').describe('Branch (or tag) whose commit is used'),
    every: z
      .string({ error: 'every must be a duration such as "60s"' })
      .default('60s')
      .superRefine((text, ctx) => {
        const ms = parseDuration(text, MAX_POLICY_GIT_INTERVAL_MS);
        if (typeof ms === 'string') ctx.addIssue({ code: 'custom', message: ms });
        else if (ms < MIN_POLICY_GIT_INTERVAL_MS)
          ctx.addIssue({ code: 'custom', message: 'every must be at least 1s' });
      })
      .describe('How often the broker fetches the repository (e.g. "60s", "5m")'),
    credential: secretNameSchema
      .optional()
      .describe('Secret sent as HTTPS Basic auth (user credentialUser), through git’s environment only'),
    credentialUser: credentialUserSchema
      .default('x-access-token')
      .describe('User name sent with the credential'),
    requireSignedBy: z
      .array(z.string().min(1, 'a key must not be empty'))
      .default([])
      .describe(
        'Keys a commit must be signed by (any one): an ssh public key line, an armored OpenPGP public key, or a path to a file holding one',
      ),
    path: problemSchema(subfolderProblem)
      .default('')
      .describe('Folder of the repository holding the policy files (default: its root)'),
  })
  .strict()
  .describe('Team policies from a git repository, fetched every `every`');

export type PolicyGitInput = z.output<typeof policyGitSchema>;

const SSH_KEY_RE =
  /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)\s+([A-Za-z0-9+/]+={0,3})(?:\s+(.*))?$/;
const PGP_BEGIN = '-----BEGIN PGP PUBLIC KEY BLOCK-----';
const PGP_END = '-----END PGP PUBLIC KEY BLOCK-----';

/** A key from its text, or undefined when the text is neither kind. */
function parseKey(text: string, label: string): SignerKey | string | undefined {
  const trimmed = text.trim();
  if (trimmed.startsWith(PGP_BEGIN)) {
    if (!trimmed.includes(PGP_END)) return `OpenPGP key is not complete (no "${PGP_END}" line)`;
    return { kind: 'openpgp', armored: `${trimmed}\n`, label };
  }
  if (trimmed.startsWith('-----BEGIN')) return 'a private key or another PEM block, not a public key';
  // A .pub file or an inline line: the first line that is not a comment.
  const line = trimmed.split('\n').find((l) => l.trim() !== '' && !l.trim().startsWith('#'));
  const m = line ? SSH_KEY_RE.exec(line.trim()) : null;
  if (m) return { kind: 'ssh', key: `${m[1]} ${m[2]}`, label: m[3] ? `${label} (${m[3]})` : label };
  return undefined;
}

/** Resolves `requireSignedBy` entries (inline keys or files, relative to the config's folder). */
export async function resolvePolicyGit(
  raw: PolicyGitInput,
  src: YamlSource,
  dir: string,
  secrets: Record<string, SecretConfig>,
  /** Reads a key file (airlock-yaml's bounded reader; passed in to keep the imports acyclic). */
  readText: (file: string, maxBytes: number) => Promise<string>,
): Promise<{ config?: PolicyGitConfig; issues: PolicyIssue[] }> {
  const issues: PolicyIssue[] = [];
  const keys: SignerKey[] = [];
  for (const [i, entry] of raw.requireSignedBy.entries()) {
    const where = ['policies', 'requireSignedBy', i];
    const inline = parseKey(entry, `requireSignedBy[${i}]`);
    if (typeof inline === 'object') {
      keys.push(inline);
      continue;
    }
    if (typeof inline === 'string' || entry.includes('\n')) {
      issues.push(
        issueAt(src, where, inline ?? 'not an ssh public key line or an armored OpenPGP public key'),
      );
      continue;
    }
    const file = path.resolve(dir, entry);
    let text: string;
    try {
      text = await readText(file, MAX_KEY_FILE_BYTES);
    } catch (err) {
      const why = (err as Error).message;
      issues.push(
        issueAt(
          src,
          where,
          `not an ssh public key or an armored OpenPGP public key, and as a key file ${file}: ${why}`,
        ),
      );
      continue;
    }
    const key = parseKey(text, file);
    if (typeof key === 'object') keys.push(key);
    else
      issues.push(
        issueAt(
          src,
          where,
          `${file}: ${key ?? 'holds neither an ssh public key line nor an armored OpenPGP public key'}`,
        ),
      );
  }
  const secretNames = Object.keys(secrets);
  const credential = raw.credential === undefined ? undefined : secrets[raw.credential];
  if (credential && 'githubApp' in credential) {
    issues.push(
      issueAt(
        src,
        ['policies', 'credential'],
        `secret "${raw.credential}" is a GitHub App; the policy repository takes a token secret`,
      ),
    );
  }
  if (raw.credential !== undefined && !Object.hasOwn(secrets, raw.credential)) {
    issues.push(
      issueAt(
        src,
        ['policies', 'credential'],
        `unknown secret "${raw.credential}"; known secrets: ${secretNames.length ? [...secretNames].sort().join(', ') : '(none)'}`,
      ),
    );
  }
  const protocol = raw.git.slice(0, raw.git.indexOf(':')) as PolicyGitProtocol;
  if (raw.credential !== undefined && protocol === 'file') {
    issues.push(issueAt(src, ['policies', 'credential'], 'a file:// repository takes no credential'));
  }
  if (issues.length) return { issues };
  return {
    issues,
    config: {
      url: raw.git,
      protocol,
      ref: raw.ref,
      everyMs: parseDuration(raw.every, MAX_POLICY_GIT_INTERVAL_MS) as number,
      ...(raw.credential !== undefined ? { credential: raw.credential } : {}),
      credentialUser: raw.credentialUser,
      requireSignedBy: keys,
      path: raw.path
        .split('/')
        .filter((s) => s !== '')
        .join('/'),
    },
  };
}
