// The one way the github tools reach GitHub: an Octokit per team (rate limits and retries from
// limits.ts, the policy's API URL, no redirects), a credential per call (a token secret, or an App
// installation token minted for this repository and this tool's permissions), and GitHub's
// errors turned into messages an agent can act on. Octokit builds every URL from parameters;
// no request carries a header the agent chose.
import type { Octokit } from '@octokit/rest';
import { httpErrorOf, upstreamMessage, type GithubPermissions } from '../../src/secrets/github-app.js';
import { ToolError, type ServerRuntime, type ToolContext } from '../../src/tool.js';
import type { GithubSection } from './section.js';
import { installGithubLimits } from './limits.js';
import { installGithubRequest } from './request.js';
import { cleanLine } from './text.js';

// Octokit loads with the first team's runtime, not with the module: `policy check` and the other
// commands that only read tool definitions never pay for it.
type Client = Octokit;
let octokitClass: Promise<typeof Octokit> | undefined;
function loadOctokit(): Promise<typeof Octokit> {
  return (octokitClass ??= import('@octokit/rest').then((m) => m.Octokit));
}

/** A rate-limit wait longer than this is not waited for: the agent gets an error saying when to retry. */
export const MAX_RATE_LIMIT_WAIT_S = 20;
/** Rate-limit retries per request, so the total wait is bounded by MAX_RATE_LIMIT_WAIT_S × this. */
export const MAX_RATE_LIMIT_RETRIES = 2;
const SERVER_ERROR_RETRIES = 2;
/** The limits every github client has (limits.ts). */
export const GITHUB_LIMITS = {
  retries: SERVER_ERROR_RETRIES,
  rateLimitRetries: MAX_RATE_LIMIT_RETRIES,
  maxRateLimitWaitS: MAX_RATE_LIMIT_WAIT_S,
} as const;

/** Marks the stand-in answer for a redirect that was not followed (fetch.ts). */
export const REDIRECT_REFUSED = 'x-airlock-redirect-refused';

export interface GithubRuntime extends ServerRuntime {
  octokit: Client;
}

/**
 * An Octokit as the github server uses it: the API URL, its own request layer (request.ts) with
 * `fetch` (default: the global one), rate limits and retries around it (limits.ts), no console logging.
 */
export async function createGithubOctokit(options: {
  apiUrl: string;
  userAgent?: string;
  fetch?: typeof fetch;
}): Promise<Client> {
  const OctokitClass = await loadOctokit();
  const octokit = new OctokitClass({
    baseUrl: options.apiUrl.replace(/\/+$/, ''),
    userAgent: options.userAgent ?? 'airlock-github',
    // Octokit's logger would print request details to the console; the pipeline logs instead.
    log: { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined },
    ...(options.fetch ? { request: { fetch: options.fetch } } : {}),
  });
  // Innermost first: the limits hook wraps the request layer, so retries go through it.
  installGithubRequest(octokit);
  installGithubLimits(octokit, GITHUB_LIMITS);
  return octokit;
}

/** One Octokit per team runtime (its limits are the team's); the credential comes with each call. */
export async function createGithubRuntime(section: GithubSection): Promise<GithubRuntime> {
  // The team's own connection pool to its API, which never follows a redirect (fetch.ts).
  // Loaded here, with Octokit: commands that only read tool definitions never load node:https.
  const { createGithubFetch } = await import('./fetch.js');
  const pool = createGithubFetch(section.apiUrl);
  const octokit = await createGithubOctokit({ apiUrl: section.apiUrl, fetch: pool.fetch });
  return { octokit, close: async () => pool.close() };
}

export type GithubToolContext = ToolContext<GithubSection, unknown, GithubRuntime>;

/** Request options every call carries: the credential for this call, the deadline, the session's signal. */
export async function callOptions(
  ctx: GithubToolContext,
  owner: string,
  repo: string,
  permissions: GithubPermissions,
): Promise<{ headers: { authorization: string }; request: { signal: AbortSignal; retries?: number } }> {
  const { credential, apiUrl } = ctx.section;
  const scope = () => ({ apiUrl, owner, repo, permissions });
  let token: string;
  try {
    token = ctx.secrets.githubToken
      ? await ctx.secrets.githubToken(credential, scope)
      : await ctx.secrets.get(credential);
  } catch (err) {
    throw new ToolError(`no GitHub credential for this call: ${(err as Error).message}`);
  }
  // A write that failed with a 5xx may still have happened: never sent twice.
  const writes = Object.values(permissions).includes('write');
  return {
    headers: { authorization: `token ${token}` },
    // ctx.signal ends at the policy's timeoutMs too (tools.ts defineTool).
    request: { signal: ctx.signal, ...(writes ? { retries: 0 } : {}) },
  };
}

/** Runs one Octokit call; any failure becomes a ToolError that says what GitHub said and what to do. */
export async function github<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof ToolError) throw err;
    throw new ToolError(describeGithubError(what, err));
  }
}

export function describeGithubError(what: string, err: unknown): string {
  const http = httpErrorOf(err);
  if (!http || !http.answered) {
    const e = err as Error & { cause?: { message?: string; name?: string } };
    if ([e?.name, e?.cause?.name].some((n) => n === 'TimeoutError' || n === 'AbortError'))
      return `${what}: GitHub did not answer in time (the policy's github timeoutMs)`;
    const cause = e?.cause?.message ? ` (${e.cause.message})` : '';
    return `${what}: GitHub could not be reached: ${e?.message ?? String(err)}${cause}`;
  }
  const said = cleanLine(upstreamMessage(http.data), 300).text;
  const header = (name: string) => {
    const v = http.headers[name];
    return typeof v === 'string' || typeof v === 'number' ? String(v) : undefined;
  };
  const redirect = header(REDIRECT_REFUSED);
  if (redirect)
    return `${what}: GitHub answered with a redirect to ${redirect} (a renamed or moved repository?), which Airlock does not follow`;
  switch (http.status) {
    case 401:
      return `${what}: GitHub rejected the credential (401${said}); the policy's credential is invalid, expired or revoked — an operator must fix it`;
    case 403:
    case 429: {
      if (header('x-ratelimit-remaining') === '0') {
        const reset = Number(header('x-ratelimit-reset'));
        const when = Number.isFinite(reset) && reset > 0 ? new Date(reset * 1000).toISOString() : 'later';
        const inS = Number.isFinite(reset) ? Math.max(0, Math.ceil(reset - Date.now() / 1000)) : undefined;
        return `${what}: GitHub's rate limit for this credential is used up (limit ${header('x-ratelimit-limit') ?? '?'}); it resets at ${when}${inS === undefined ? '' : ` (in ${inS} s)`}; try again after that`;
      }
      if (/secondary rate/i.test(said) || header('retry-after')) {
        return `${what}: GitHub's secondary rate limit was hit and Airlock's bounded retries are spent; wait ${header('retry-after') ?? 'a minute'} s before retrying`;
      }
      return `${what}: GitHub refused (${http.status}${said}); the credential lacks permission for this`;
    }
    case 404:
      return `${what}: not found (404) — it does not exist, or the credential cannot see it`;
    case 409:
      return `${what}: conflict (409${said})`;
    case 422:
      return `${what}: GitHub rejected the request as invalid (422${said})${validationErrors(http.data)}`;
    default:
      if (http.status >= 500) {
        const write = http.method !== 'GET' && http.method !== 'HEAD';
        return write
          ? `${what}: GitHub failed (HTTP ${http.status}${said}); not retried, since it may have been done anyway — check before trying again`
          : `${what}: GitHub failed (HTTP ${http.status}${said}) after ${SERVER_ERROR_RETRIES} retries`;
      }
      return `${what}: GitHub answered HTTP ${http.status}${said}`;
  }
}

/** GitHub's 422 `errors` list, e.g. "; pull_request.base invalid" or a custom message. */
function validationErrors(data: unknown): string {
  const errors = (data as { errors?: unknown } | undefined)?.errors;
  if (!Array.isArray(errors) || errors.length === 0) return '';
  const parts = errors.slice(0, 5).map((e: unknown) => {
    if (typeof e === 'string') return cleanLine(e, 200).text;
    const item = e as { resource?: unknown; field?: unknown; code?: unknown; message?: unknown };
    if (typeof item.message === 'string') return cleanLine(item.message, 200).text;
    return cleanLine(
      [item.resource, item.field, item.code].filter((x) => typeof x === 'string').join(' '),
      200,
    ).text;
  });
  return `: ${parts.join('; ')}`;
}

/** Whether GitHub's Link header names a next page. */
function hasNextPage(headers: Record<string, unknown>): boolean {
  const link = headers.link;
  return typeof link === 'string' && /rel="next"/.test(link);
}

/** The page the agent asked for, clamped to the policy's caps (authorize has refused anything beyond). */
export function pageParams(
  section: GithubSection,
  args: { page?: number; perPage?: number },
): { page: number; per_page: number } {
  return { page: args.page ?? 1, per_page: Math.min(args.perPage ?? section.perPage, section.perPage) };
}

/** `nextPage` for a list result and whether the list goes on past what the policy lets the agent see. */
export function paging(
  section: GithubSection,
  page: number,
  headers: Record<string, unknown>,
): { nextPage: number | null; pastCap: boolean } {
  const more = hasNextPage(headers);
  if (!more) return { nextPage: null, pastCap: false };
  if (page >= section.maxPages) return { nextPage: null, pastCap: true };
  return { nextPage: page + 1, pastCap: false };
}
