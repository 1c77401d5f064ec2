// GitHub App installation tokens, minted on the host for one call: restricted to the one
// repository the call touches and the permissions its tool needs, cached per (app, API,
// repository, permission set) until shortly before GitHub says they expire. Used by the github
// server (every API call) and the git server (HTTPS auth for fetch/pull/push). A minted token is
// handed to `onToken` (the broker registers it with the redactor) before anyone else sees it.
import { createPrivateKey } from 'node:crypto';
import { z } from 'zod';
import { classifyHostname } from '../net/addresses.js';

export const DEFAULT_GITHUB_API_URL = 'https://api.github.com';

/** GitHub's permission levels, by permission name (`contents`, `issues`, `pull_requests`, `metadata`…). */
export type GithubPermissions = Readonly<Record<string, 'read' | 'write'>>;

/** What one token is for: the API it is minted at, the one repository, the permissions. */
export interface GithubTokenScope {
  apiUrl: string;
  owner: string;
  repo: string;
  permissions: GithubPermissions;
}

/** A githubApp secret as read from airlock.yaml (the private key already registered for redaction). */
export interface GithubAppCredential {
  /** The secret's name, for messages (never a value). */
  secret: string;
  appId: string;
  installationId: string;
  privateKey: string;
}

/** Re-mint this long before GitHub's `expires_at`, so a token never expires during a call (a push can take minutes). */
export const REFRESH_MARGIN_MS = 5 * 60_000;
/**
 * How long past its expiry a token is still redacted: longer than any call that took it before
 * the refresh margin can still run (calls are bounded well inside this), so no answer or log line
 * of such a call can show it.
 */
export const EXPIRED_FORGET_MS = 30 * 60_000;
/** GitHub's installation tokens live one hour at most. */
const TOKEN_MAX_LIFETIME_MS = 60 * 60_000;

const USER_AGENT = 'airlock-github-app';
/** Upper bound for one mint (JWT, POST access_tokens). */
export const MINT_TIMEOUT_MS = 30_000;

export class GithubAppError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GithubAppError';
  }
}

/** Why `value` is not a usable GitHub API base URL, or undefined. https://, or http:// to loopback only. */
export function apiUrlProblem(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `apiUrl ${JSON.stringify(value)} is not a URL`;
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    return `apiUrl must use https: (or http: to a loopback address), not ${url.protocol}`;
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname))
    return 'apiUrl may use http:// only for a loopback address (127.0.0.1, [::1], localhost); use https://';
  if (url.username || url.password) return 'apiUrl must not carry user info';
  if (url.search || url.hash) return 'apiUrl must not have a query or fragment';
  return undefined;
}

function isLoopbackHost(hostname: string): boolean {
  if (hostname === 'localhost') return true;
  const cls = classifyHostname(hostname);
  return cls?.kind === 'private' && cls.range === 'loopback';
}

/** Status and body of an Octokit RequestError (duck-typed: the class lives in a transitive package). */
export function httpErrorOf(
  err: unknown,
):
  | { status: number; data: unknown; headers: Record<string, unknown>; answered: boolean; method: string }
  | undefined {
  if (!(err instanceof Error) || err.name !== 'HttpError') return undefined;
  const e = err as Error & {
    status?: unknown;
    request?: { method?: string };
    response?: { data?: unknown; headers?: Record<string, unknown> };
  };
  if (typeof e.status !== 'number') return undefined;
  // Octokit reports a connection that never got an answer as status 500 without a response.
  return {
    status: e.status,
    data: e.response?.data,
    headers: e.response?.headers ?? {},
    answered: e.response !== undefined,
    method: e.request?.method ?? 'GET',
  };
}

/** A policy field holding a GitHub API base URL (checked by apiUrlProblem). */
export const githubApiUrlSchema = z.string().superRefine((value, ctx) => {
  const problem = apiUrlProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/** GitHub's rules for an account (owner) name: alphanumerics and single hyphens, no leading/trailing hyphen, ≤ 39. */
export const OWNER_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$/;
/** Repository names: letters, digits, ".", "_", "-" (≤ 100), never "." or "..". */
export const REPO_NAME = /^(?!\.\.?$)[A-Za-z0-9._-]{1,100}$/;

/**
 * The GitHub repository and API of a git remote: `https://github.com/OWNER/REPO(.git)` →
 * api.github.com; any other host is taken as GitHub Enterprise Server (`https://HOST/api/v3`)
 * unless `apiUrl` names the API. Returns a problem text when the remote is not OWNER/REPO shaped.
 */
export function githubRepoOfRemote(
  remote: string,
  apiUrl?: string,
): { owner: string; repo: string; apiUrl: string } | { problem: string } {
  let url: URL;
  try {
    url = new URL(remote);
  } catch {
    return { problem: `remote ${JSON.stringify(remote)} is not a URL` };
  }
  const parts = url.pathname.replace(/\/+$/, '').split('/').filter(Boolean);
  const owner = parts.at(-2);
  const repo = parts.at(-1)?.replace(/\.git$/, '');
  if (parts.length < 2 || !owner || !repo || !OWNER_NAME.test(owner) || !REPO_NAME.test(repo)) {
    return {
      problem: `remote ${remote} does not end in /OWNER/REPO(.git), so no GitHub App token can be scoped to it`,
    };
  }
  const api = apiUrl ?? (url.hostname === 'github.com' ? DEFAULT_GITHUB_API_URL : `${url.origin}/api/v3`);
  return { owner, repo, apiUrl: api };
}

interface CachedToken {
  token: Promise<{ token: string; expiresAt: number }>;
}

export interface GithubAppTokensOptions {
  /** Receives every minted token before it is used (the broker registers it for redaction). */
  onToken(token: string): void;
  /**
   * Receives a token EXPIRED_FORGET_MS past its expiry (and past an hour after its mint by this
   * host's clock), when it grants nothing: the broker stops redacting it, so a broker that mints
   * every hour does not grow without bound.
   */
  onExpired?(token: string): void;
  /** The clock the cache compares expiry against (tests move it). */
  now?: () => number;
  refreshMarginMs?: number;
}

/** Mints and caches installation tokens for every GitHub App secret of one broker. */
export class GithubAppTokens {
  private readonly cache = new Map<string, CachedToken>();
  private readonly now: () => number;
  private readonly marginMs: number;
  /** Every token minted and not yet handed to onExpired, with its expiry. */
  private minted: Array<{ token: string; forgetAt: number }> = [];
  private nextSweep = 0;

  constructor(private readonly opts: GithubAppTokensOptions) {
    this.now = opts.now ?? Date.now;
    this.marginMs = opts.refreshMarginMs ?? REFRESH_MARGIN_MS;
  }

  /**
   * A token for exactly `scope`: from the cache while it has more than the margin left, else
   * freshly minted. Concurrent callers share one mint, so it is bounded by its own deadline
   * (MINT_TIMEOUT_MS), never by one caller's session: a caller that goes away just stops waiting.
   */
  async token(app: GithubAppCredential, scope: GithubTokenScope): Promise<string> {
    this.sweep();
    const key = cacheKey(app, scope);
    const cached = this.cache.get(key);
    if (cached) {
      const entry = await cached.token.catch(() => undefined);
      if (entry && entry.expiresAt - this.marginMs > this.now()) return entry.token;
      if (this.cache.get(key) === cached) this.cache.delete(key);
      // A concurrent caller may already be re-minting.
      const again = this.cache.get(key);
      if (again) return this.token(app, scope);
    }
    const minting: CachedToken = { token: this.mint(app, scope) };
    this.cache.set(key, minting);
    try {
      return (await minting.token).token;
    } catch (err) {
      if (this.cache.get(key) === minting) this.cache.delete(key);
      throw err;
    }
  }

  /** At most once a minute: hands the tokens long expired to onExpired. */
  private sweep(): void {
    const now = this.now();
    if (now < this.nextSweep || !this.opts.onExpired) return;
    this.nextSweep = now + 60_000;
    const expired = this.minted.filter((m) => m.forgetAt <= now);
    if (expired.length === 0) return;
    this.minted = this.minted.filter((m) => m.forgetAt > now);
    for (const { token } of expired) this.opts.onExpired(token);
  }

  /** Forgets every cached token (policy or secret change). */
  clear(): void {
    this.cache.clear();
  }

  private async mint(
    app: GithubAppCredential,
    scope: GithubTokenScope,
  ): Promise<{ token: string; expiresAt: number }> {
    const where = `GitHub App secret "${app.secret}"`;
    try {
      createPrivateKey(app.privateKey);
    } catch {
      // Never the key or the parser's message about it: only that it is not a key.
      throw new GithubAppError(`${where}: the private key is not a valid PEM private key`);
    }
    // Loaded on the first mint: commands that never mint (policy check, doctor) never load them.
    const [{ createAppAuth }, { Octokit }] = await Promise.all([
      import('@octokit/auth-app'),
      import('@octokit/rest'),
    ]);
    const auth = createAppAuth({
      appId: app.appId,
      privateKey: app.privateKey,
      installationId: app.installationId,
      // A plain Octokit's request: no plugins, our base URL, no redirects (the JWT stays at the API).
      request: new Octokit({
        baseUrl: scope.apiUrl.replace(/\/+$/, ''),
        userAgent: USER_AGENT,
        request: { signal: AbortSignal.timeout(MINT_TIMEOUT_MS), redirect: 'error' },
      }).request,
    });
    let minted;
    try {
      minted = await auth({
        type: 'installation',
        repositoryNames: [scope.repo],
        permissions: { ...scope.permissions },
        // The cache here knows GitHub's expiry; auth-app's own LRU does not.
        refresh: true,
      });
    } catch (err) {
      throw new GithubAppError(`${where}: ${mintFailure(err, app, scope)}`);
    }
    this.opts.onToken(minted.token);
    const parsed = Date.parse(minted.expiresAt);
    const expiresAt = Number.isFinite(parsed) ? parsed : this.now();
    // Redacted at least as long as GitHub's longest lifetime (one hour) by this host's clock, so
    // neither a missing expires_at nor a clock behind GitHub's ends it early.
    this.minted.push({
      token: minted.token,
      forgetAt: Math.max(expiresAt, this.now() + TOKEN_MAX_LIFETIME_MS) + EXPIRED_FORGET_MS,
    });
    return { token: minted.token, expiresAt };
  }
}

function cacheKey(app: GithubAppCredential, scope: GithubTokenScope): string {
  const permissions = Object.entries(scope.permissions)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, level]) => `${name}:${level}`)
    .join(',');
  return JSON.stringify([
    app.secret,
    app.appId,
    app.installationId,
    scope.apiUrl,
    `${scope.owner}/${scope.repo}`.toLowerCase(),
    permissions,
  ]);
}

function mintFailure(err: unknown, app: GithubAppCredential, scope: GithubTokenScope): string {
  const repo = `${scope.owner}/${scope.repo}`;
  const http = httpErrorOf(err);
  if (http) {
    const message = upstreamMessage(http.data);
    switch (http.status) {
      case 401:
        return `GitHub refused the App's JWT (401${message}); check appId ${app.appId} and that the private key belongs to that App`;
      case 403:
        return `GitHub refused to mint a token (403${message})`;
      case 404:
        return `installation ${app.installationId} was not found at ${scope.apiUrl} (404${message})`;
      case 422:
        return `GitHub would not mint a token for ${repo} with ${describePermissions(scope.permissions)} (422${message}); install the App on ${repo} and grant it those permissions`;
      default:
        return `minting an installation token failed (HTTP ${http.status}${message})`;
    }
  }
  const cause = err instanceof Error ? err.message : String(err);
  return `minting an installation token at ${scope.apiUrl} failed: ${cause}`;
}

/** GitHub's own error message, short and on one line. */
export function upstreamMessage(data: unknown): string {
  const body = data as { message?: unknown } | undefined;
  const message = typeof body?.message === 'string' ? body.message : '';
  const clean = message.replace(/[\0-\x1f\x7f]+/g, ' ').slice(0, 200);
  return clean ? `: ${clean}` : '';
}

function describePermissions(permissions: GithubPermissions): string {
  return (
    Object.entries(permissions)
      .map(([name, level]) => `${name}: ${level}`)
      .join(', ') || 'no permissions'
  );
}
