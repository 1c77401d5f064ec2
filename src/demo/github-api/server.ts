// A local GitHub REST API on loopback, for the demo, the tests and the benchmark (GitHub itself
// cannot be reached from the machines these run on). It answers the endpoints the github tools
// call with GitHub's documented shapes (fixtures.ts), enforces credentials as GitHub does — a
// wrong or missing token is 401, an installation token reaches only its repositories and
// permissions — and mints installation tokens at POST /app/installations/{id}/access_tokens
// after verifying the App's RS256 JWT (signature, iss, iat/exp window). It records every request
// and every mint, so a test can assert what GitHub would have received.
import { createPublicKey, randomBytes, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  branchObject,
  commentObject,
  commitObject,
  directoryEntry,
  errorObject,
  fileObject,
  installationTokenObject,
  issueObject,
  pullObject,
  repositoryObject,
  type FixtureComment,
  type FixtureCommit,
  type FixtureIssue,
  type FixturePull,
  type FixtureRepo,
} from './fixtures.js';

export interface RepoState {
  repo: FixtureRepo;
  /** Path → contents. */
  files: Record<string, string | Buffer>;
  branches: Record<string, string>;
  protectedBranches?: string[];
  commits: FixtureCommit[];
  issues: FixtureIssue[];
  comments: Record<number, FixtureComment[]>;
  pulls: FixturePull[];
}

export interface StandInApp {
  appId: string;
  installationId: string;
  /** PEM public key of the App (GitHub holds it; the App holds the private key). */
  publicKey: string;
  /** Repositories (full names) the App is installed on. */
  repositories: string[];
  /** What the installation was granted; a mint may ask for less, never more. */
  permissions: Record<string, 'read' | 'write'>;
}

export interface RecordedCall {
  method: string;
  /** Path and query exactly as received. */
  url: string;
  /** How the request authenticated: a configured token, an installation token, an App JWT, or none. */
  auth: 'token' | 'installation' | 'jwt' | 'none' | 'rejected';
  /** The credential presented (tests check it is the one Airlock should have used). */
  credential?: string;
  userAgent?: string;
  /** Request headers as received (names lower-case). */
  headers: http.IncomingHttpHeaders;
  body?: unknown;
  status: number;
}

export interface MintRecord {
  installationId: string;
  /** `repositories` of the request body, as sent. */
  repositories: string[] | undefined;
  permissions: Record<string, string> | undefined;
  token: string;
  expiresAt: string;
}

export interface Fault {
  method?: string;
  /** Matched against the path (without query). */
  path: RegExp;
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
  /** How many matching requests get this answer (default 1). */
  times?: number;
  /** Answer only after this long (a slow or hung GitHub). */
  delayMs?: number;
}

export interface GithubApiStandIn {
  /** e.g. http://127.0.0.1:41234 — the apiUrl of a policy. */
  apiUrl: string;
  calls: RecordedCall[];
  mints: MintRecord[];
  repos: Map<string, RepoState>;
  /** The next matching request(s) get this answer instead (401, 403 with rate-limit headers, 422, 5xx…). */
  fault(fault: Fault): void;
  clearFaults(): void;
  /** Installation token lifetime for the next mints (GitHub: one hour). */
  setTokenLifetimeMs(ms: number): void;
  /** Whether `token` may use `permission` at `level` on `fullName` (for a git server in front of the same repos). */
  tokenAllows(token: string, fullName: string, permission: string, level: 'read' | 'write'): boolean;
  close(): Promise<void>;
}

export interface GithubApiStandInOptions {
  /** Personal access tokens accepted with full access. */
  tokens?: string[];
  app?: StandInApp;
  repos?: RepoState[];
}

const DOC = {
  auth: 'authentication/authenticating-to-the-rest-api',
  repos: 'repos/repos#get-a-repository',
  contents: 'repos/contents#get-repository-content',
  issues: 'issues/issues',
  comments: 'issues/comments',
  pulls: 'pulls/pulls',
  apps: 'apps/apps#create-an-installation-access-token-for-an-app',
};

/** What each route needs from an installation token (GitHub's "fine-grained permissions" on each docs page). */
const ROUTES: {
  method: string;
  pattern: RegExp;
  permission: [string, 'read' | 'write'];
  handler: keyof Handlers;
}[] = [
  {
    method: 'GET',
    pattern: /^\/repos\/([^/]+)\/([^/]+)$/,
    permission: ['metadata', 'read'],
    handler: 'getRepo',
  },
  {
    method: 'GET',
    pattern: /^\/repos\/([^/]+)\/([^/]+)\/contents(?:\/(.*))?$/,
    permission: ['contents', 'read'],
    handler: 'getContents',
  },
  {
    method: 'GET',
    pattern: /^\/repos\/([^/]+)\/([^/]+)\/branches$/,
    permission: ['contents', 'read'],
    handler: 'listBranches',
  },
  {
    method: 'GET',
    pattern: /^\/repos\/([^/]+)\/([^/]+)\/commits$/,
    permission: ['contents', 'read'],
    handler: 'listCommits',
  },
  {
    method: 'GET',
    pattern: /^\/repos\/([^/]+)\/([^/]+)\/issues$/,
    permission: ['issues', 'read'],
    handler: 'listIssues',
  },
  {
    method: 'POST',
    pattern: /^\/repos\/([^/]+)\/([^/]+)\/issues$/,
    permission: ['issues', 'write'],
    handler: 'createIssue',
  },
  {
    method: 'GET',
    pattern: /^\/repos\/([^/]+)\/([^/]+)\/issues\/(\d+)$/,
    permission: ['issues', 'read'],
    handler: 'getIssue',
  },
  {
    method: 'GET',
    pattern: /^\/repos\/([^/]+)\/([^/]+)\/issues\/(\d+)\/comments$/,
    permission: ['issues', 'read'],
    handler: 'listComments',
  },
  {
    method: 'POST',
    pattern: /^\/repos\/([^/]+)\/([^/]+)\/issues\/(\d+)\/comments$/,
    permission: ['issues', 'write'],
    handler: 'createComment',
  },
  {
    method: 'GET',
    pattern: /^\/repos\/([^/]+)\/([^/]+)\/pulls$/,
    permission: ['pull_requests', 'read'],
    handler: 'listPulls',
  },
  {
    method: 'POST',
    pattern: /^\/repos\/([^/]+)\/([^/]+)\/pulls$/,
    permission: ['pull_requests', 'write'],
    handler: 'createPull',
  },
  {
    method: 'GET',
    pattern: /^\/repos\/([^/]+)\/([^/]+)\/pulls\/(\d+)$/,
    permission: ['pull_requests', 'read'],
    handler: 'getPull',
  },
];

interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

interface Req {
  method: string;
  url: URL;
  match: RegExpExecArray;
  state: RepoState;
  full: string;
  body: unknown;
  accept: string;
}

type Handlers = Record<
  | 'getRepo'
  | 'getContents'
  | 'listBranches'
  | 'listCommits'
  | 'listIssues'
  | 'createIssue'
  | 'getIssue'
  | 'listComments'
  | 'createComment'
  | 'listPulls'
  | 'createPull'
  | 'getPull',
  (req: Req) => Reply
>;

interface IssuedToken {
  repositories: Set<string>;
  permissions: Record<string, 'read' | 'write'>;
  expiresAt: number;
}

const LEVEL = { read: 1, write: 2 } as const;

function sameString(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function b64urlJson(part: string): Record<string, unknown> | undefined {
  try {
    const value = JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as unknown;
    return value && typeof value === 'object' ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** GitHub's App JWT rules: RS256, signed by the App's key, `iss` = App id, iat not in the future (60 s drift), exp ≤ 10 minutes ahead and not passed. */
export function jwtProblem(jwt: string, app: StandInApp, key: KeyObject, nowS: number): string | undefined {
  const parts = jwt.split('.');
  if (parts.length !== 3) return 'A JSON web token could not be decoded';
  const [h, p, sig] = parts as [string, string, string];
  const header = b64urlJson(h);
  const payload = b64urlJson(p);
  if (!header || !payload) return 'A JSON web token could not be decoded';
  if (header.alg !== 'RS256') return `'alg' must be RS256, not ${String(header.alg)}`;
  const ok = verify('RSA-SHA256', Buffer.from(`${h}.${p}`), key, Buffer.from(sig, 'base64url'));
  if (!ok) return 'A JSON web token could not be decoded'; // GitHub's words for a bad signature too
  if (String(payload.iss) !== app.appId) return "'Issuer' claim ('iss') must be an Integer (the App's id)";
  const iat = Number(payload.iat);
  const exp = Number(payload.exp);
  if (!Number.isFinite(iat) || iat > nowS + 60)
    return "'Issued at' claim ('iat') must be an Integer representing a time in the past";
  if (!Number.isFinite(exp) || exp <= nowS) return "'Expiration time' claim ('exp') is too far in the past";
  if (exp > nowS + 600 + 60) return "'Expiration time' claim ('exp') is too far in the future";
  return undefined;
}

export async function startGithubApiStandIn(opts: GithubApiStandInOptions = {}): Promise<GithubApiStandIn> {
  const calls: RecordedCall[] = [];
  const mints: MintRecord[] = [];
  const faults: Fault[] = [];
  const repos = new Map<string, RepoState>();
  for (const r of opts.repos ?? []) repos.set(`${r.repo.owner.login}/${r.repo.name}`.toLowerCase(), r);
  const installation = new Map<string, IssuedToken>();
  const appKey = opts.app ? createPublicKey(opts.app.publicKey) : undefined;
  let tokenLifetimeMs = 60 * 60_000;
  let apiUrl = '';
  let nextId = 9000;
  let remaining = 5000;

  const rateHeaders = (): Record<string, string> => ({
    'x-ratelimit-limit': '5000',
    'x-ratelimit-remaining': String(remaining),
    'x-ratelimit-used': String(5000 - remaining),
    'x-ratelimit-reset': String(Math.floor(Date.now() / 1000) + 3600),
    'x-ratelimit-resource': 'core',
  });

  const err = (status: number, message: string, doc: string, errors?: object[]): Reply => ({
    status,
    body: errorObject(status, message, doc, errors),
  });

  function paginate<T>(items: T[], url: URL): { page: T[]; headers: Record<string, string> } {
    const perPage = Math.min(Math.max(Number(url.searchParams.get('per_page') ?? 30) || 30, 1), 100);
    const page = Math.max(Number(url.searchParams.get('page') ?? 1) || 1, 1);
    const last = Math.max(1, Math.ceil(items.length / perPage));
    const slice = items.slice((page - 1) * perPage, page * perPage);
    const link = (n: number, rel: string) => {
      const u = new URL(url.toString());
      u.searchParams.set('page', String(n));
      u.searchParams.set('per_page', String(perPage));
      return `<${apiUrl}${u.pathname}${u.search}>; rel="${rel}"`;
    };
    const links: string[] = [];
    if (page < last) links.push(link(page + 1, 'next'), link(last, 'last'));
    if (page > 1) links.push(link(1, 'first'), link(page - 1, 'prev'));
    return { page: slice, headers: links.length ? { link: links.join(', ') } : {} };
  }

  const handlers: Handlers = {
    getRepo: ({ state }) => ({
      status: 200,
      body: repositoryObject(apiUrl, state.repo, state.issues.filter((i) => i.state === 'open').length),
    }),
    getContents: ({ match, state, full, url }) => {
      let path: string;
      try {
        path = (match[3] ?? '').split('/').map(decodeURIComponent).join('/');
      } catch {
        return err(400, 'Bad path encoding', DOC.contents);
      }
      const ref = url.searchParams.get('ref') ?? state.repo.defaultBranch;
      if (!(ref in state.branches) && !/^[0-9a-f]{7,40}$/.test(ref))
        return err(404, `No commit found for the ref ${ref}`, DOC.contents);
      const content = state.files[path];
      if (content !== undefined) {
        const bytes = Buffer.isBuffer(content) ? content : Buffer.from(content, 'utf8');
        return { status: 200, body: fileObject(apiUrl, full, path, bytes, fakeSha(path), ref) };
      }
      const prefix = path === '' ? '' : `${path}/`;
      const children = new Map<string, { type: 'file' | 'dir'; size: number }>();
      for (const [p, c] of Object.entries(state.files)) {
        if (!p.startsWith(prefix)) continue;
        const rest = p.slice(prefix.length).split('/');
        const name = rest[0]!;
        children.set(
          name,
          rest.length > 1 ? { type: 'dir', size: 0 } : { type: 'file', size: Buffer.byteLength(c) },
        );
      }
      if (children.size === 0) return err(404, 'Not Found', DOC.contents);
      return {
        status: 200,
        body: [...children].map(([name, e]) =>
          directoryEntry(apiUrl, full, prefix + name, e.type, e.size, fakeSha(prefix + name)),
        ),
      };
    },
    listBranches: ({ state, full, url }) => {
      const all = Object.entries(state.branches).map(([name, sha]) =>
        branchObject(apiUrl, full, name, sha, state.protectedBranches?.includes(name) ?? false),
      );
      const { page, headers } = paginate(all, url);
      return { status: 200, body: page, headers };
    },
    listCommits: ({ state, full, url }) => {
      const sha = url.searchParams.get('sha');
      if (sha && !(sha in state.branches) && !state.commits.some((c) => c.sha.startsWith(sha)))
        return err(404, `No commit found for SHA: ${sha}`, 'commits/commits#list-commits');
      const { page, headers } = paginate(
        state.commits.map((c) => commitObject(apiUrl, full, c)),
        url,
      );
      return { status: 200, body: page, headers };
    },
    listIssues: ({ state, full, url }) => {
      const wanted = url.searchParams.get('state') ?? 'open';
      const labels = url.searchParams.get('labels')?.split(',').filter(Boolean) ?? [];
      const all = state.issues
        .filter((i) => wanted === 'all' || i.state === wanted)
        .filter((i) => labels.every((l) => i.labels.includes(l)))
        .map((i) => issueObject(apiUrl, full, i, state.comments[i.number]?.length ?? 0));
      const { page, headers } = paginate(all, url);
      return { status: 200, body: page, headers };
    },
    createIssue: ({ state, full, body }) => {
      const b = body as { title?: unknown; body?: unknown; labels?: unknown };
      if (typeof b?.title !== 'string' || b.title === '')
        return err(422, 'Validation Failed', `${DOC.issues}#create-an-issue`, [
          { resource: 'Issue', field: 'title', code: 'missing_field' },
        ]);
      const number =
        Math.max(0, ...state.issues.map((i) => i.number), ...state.pulls.map((p) => p.number)) + 1;
      const issue: FixtureIssue = {
        number,
        title: b.title,
        body: typeof b.body === 'string' ? b.body : null,
        user: { login: 'airlock-bot', id: 424242 },
        authorAssociation: 'NONE',
        state: 'open',
        labels: Array.isArray(b.labels) ? b.labels.map(String) : [],
      };
      state.issues.push(issue);
      return { status: 201, body: issueObject(apiUrl, full, issue, 0) };
    },
    getIssue: ({ state, full, match }) => {
      const n = Number(match[3]);
      const issue = state.issues.find((i) => i.number === n);
      if (!issue) return err(404, 'Not Found', `${DOC.issues}#get-an-issue`);
      return { status: 200, body: issueObject(apiUrl, full, issue, state.comments[n]?.length ?? 0) };
    },
    listComments: ({ state, full, match, url }) => {
      const n = Number(match[3]);
      if (!state.issues.some((i) => i.number === n))
        return err(404, 'Not Found', `${DOC.comments}#list-issue-comments`);
      const { page, headers } = paginate(
        (state.comments[n] ?? []).map((c) => commentObject(apiUrl, full, n, c)),
        url,
      );
      return { status: 200, body: page, headers };
    },
    createComment: ({ state, full, match, body }) => {
      const n = Number(match[3]);
      if (!state.issues.some((i) => i.number === n))
        return err(404, 'Not Found', `${DOC.comments}#create-an-issue-comment`);
      const text = (body as { body?: unknown })?.body;
      if (typeof text !== 'string' || text === '')
        return err(422, 'Validation Failed', `${DOC.comments}#create-an-issue-comment`, [
          { resource: 'IssueComment', field: 'body', code: 'missing_field' },
        ]);
      const comment: FixtureComment = {
        id: nextId++,
        body: text,
        user: { login: 'airlock-bot', id: 424242 },
        authorAssociation: 'NONE',
      };
      (state.comments[n] ??= []).push(comment);
      return { status: 201, body: commentObject(apiUrl, full, n, comment) };
    },
    listPulls: ({ state, url }) => {
      const wanted = url.searchParams.get('state') ?? 'open';
      const all = state.pulls
        .filter((p) => wanted === 'all' || p.state === wanted)
        .map((p) => pullObject(apiUrl, state.repo, p));
      const { page, headers } = paginate(all, url);
      return { status: 200, body: page, headers };
    },
    createPull: ({ state, body }) => {
      const b = body as { title?: unknown; head?: unknown; base?: unknown; body?: unknown; draft?: unknown };
      const errors: object[] = [];
      if (typeof b?.title !== 'string' || !b.title)
        errors.push({ resource: 'PullRequest', field: 'title', code: 'missing_field' });
      if (typeof b?.head !== 'string' || !(b.head in state.branches))
        errors.push({ resource: 'PullRequest', field: 'head', code: 'invalid' });
      if (typeof b?.base !== 'string' || !(b.base in state.branches))
        errors.push({ resource: 'PullRequest', field: 'base', code: 'invalid' });
      if (errors.length) return err(422, 'Validation Failed', `${DOC.pulls}#create-a-pull-request`, errors);
      const head = b.head as string;
      const base = b.base as string;
      if (state.pulls.some((p) => p.state === 'open' && p.head === head && p.base === base))
        return err(422, 'Validation Failed', `${DOC.pulls}#create-a-pull-request`, [
          {
            resource: 'PullRequest',
            code: 'custom',
            message: `A pull request already exists for ${state.repo.owner.login}:${head}.`,
          },
        ]);
      const number =
        Math.max(0, ...state.issues.map((i) => i.number), ...state.pulls.map((p) => p.number)) + 1;
      const pull: FixturePull = {
        number,
        title: b.title as string,
        body: typeof b.body === 'string' ? b.body : null,
        user: { login: 'airlock-bot', id: 424242 },
        authorAssociation: 'NONE',
        state: 'open',
        draft: b.draft === true,
        head,
        base,
        headSha: state.branches[head]!,
        baseSha: state.branches[base]!,
        diff: '',
      };
      state.pulls.push(pull);
      return { status: 201, body: pullObject(apiUrl, state.repo, pull) };
    },
    getPull: ({ state, match, accept }) => {
      const n = Number(match[3]);
      const pull = state.pulls.find((p) => p.number === n);
      if (!pull) return err(404, 'Not Found', `${DOC.pulls}#get-a-pull-request`);
      // "Custom media types": application/vnd.github.diff returns the diff as text.
      if (/application\/vnd\.github(\.v3)?\.diff/.test(accept))
        return { status: 200, body: pull.diff, headers: { 'content-type': 'text/plain; charset=utf-8' } };
      return { status: 200, body: pullObject(apiUrl, state.repo, pull) };
    },
  };

  function mint(req: Req | { body: unknown }, installationId: string): Reply {
    const app = opts.app!;
    if (installationId !== app.installationId) return err(404, 'Not Found', DOC.apps);
    const body = (req.body ?? {}) as { repositories?: unknown; permissions?: unknown };
    const repositories = Array.isArray(body.repositories) ? body.repositories.map(String) : undefined;
    const permissions =
      body.permissions && typeof body.permissions === 'object'
        ? (body.permissions as Record<string, string>)
        : undefined;
    const owner = app.repositories[0]?.split('/')[0] ?? '';
    const installed = new Set(app.repositories.map((r) => r.toLowerCase()));
    const chosen = (repositories ?? app.repositories.map((r) => r.split('/')[1]!)).map((n) =>
      `${owner}/${n}`.toLowerCase(),
    );
    const missing = chosen.filter((r) => !installed.has(r));
    if (missing.length)
      return err(
        422,
        `There is at least one repository that does not exist or is not accessible to the parent installation.`,
        DOC.apps,
      );
    const granted: Record<string, 'read' | 'write'> = {};
    for (const [name, level] of Object.entries(permissions ?? app.permissions)) {
      const have = app.permissions[name];
      if ((level !== 'read' && level !== 'write') || !have || LEVEL[have] < LEVEL[level])
        return err(422, `The permissions requested are not granted to this installation.`, DOC.apps);
      granted[name] = level;
    }
    granted.metadata ??= 'read';
    const token = `ghs_${randomBytes(27).toString('base64url')}`;
    const expires = Date.now() + tokenLifetimeMs;
    const expiresAt = new Date(expires).toISOString().replace(/\.\d{3}Z$/, 'Z');
    installation.set(token, { repositories: new Set(chosen), permissions: granted, expiresAt: expires });
    mints.push({ installationId, repositories, permissions, token, expiresAt });
    const repoObjects = chosen
      .map((full) => repos.get(full))
      .filter((r): r is RepoState => r !== undefined)
      .map((r) => repositoryObject(apiUrl, r.repo, 0));
    return { status: 201, body: installationTokenObject(token, expiresAt, granted, repoObjects) };
  }

  function tokenAllows(
    token: string,
    fullName: string,
    permission: string,
    level: 'read' | 'write',
  ): boolean {
    if ((opts.tokens ?? []).some((t) => sameString(t, token))) return true;
    const issued = installation.get(token);
    if (!issued || issued.expiresAt <= Date.now()) return false;
    if (!issued.repositories.has(fullName.toLowerCase())) return false;
    const have = issued.permissions[permission];
    return have !== undefined && LEVEL[have] >= LEVEL[level];
  }

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = raw ? JSON.parse(raw) : undefined;
      } catch {
        body = raw;
      }
      const call: RecordedCall = {
        method: req.method ?? '',
        url: req.url ?? '',
        auth: 'none',
        headers: req.headers,
        userAgent: req.headers['user-agent'],
        body,
        status: 0,
      };
      calls.push(call);
      const send = (r: Reply) => {
        call.status = r.status;
        const headers: Record<string, string> = {
          ...rateHeaders(),
          'x-github-api-version-selected': '2022-11-28',
          ...r.headers,
        };
        if (typeof r.body === 'string') {
          res.writeHead(r.status, { 'content-type': 'text/plain; charset=utf-8', ...headers });
          res.end(r.body);
        } else {
          res.writeHead(r.status, { 'content-type': 'application/json; charset=utf-8', ...headers });
          res.end(JSON.stringify(r.body));
        }
      };
      const url = new URL(req.url ?? '/', 'http://stand-in');
      const method = req.method ?? 'GET';
      const auth = req.headers.authorization ?? '';
      const credential = /^(?:token|bearer) (.+)$/i.exec(auth)?.[1];
      if (credential) call.credential = credential;

      const fault = faults.find(
        (f) => (f.method === undefined || f.method === method) && f.path.test(url.pathname),
      );
      if (fault) {
        fault.times = (fault.times ?? 1) - 1;
        if (fault.times <= 0) faults.splice(faults.indexOf(fault), 1);
        const b = fault.body ?? errorObject(fault.status, 'Fault', DOC.auth);
        call.status = fault.status;
        const answer = () => {
          if (res.destroyed) return;
          res.writeHead(fault.status, {
            'content-type': 'application/json; charset=utf-8',
            ...rateHeaders(),
            ...fault.headers,
          });
          res.end(JSON.stringify(b));
        };
        if (fault.delayMs) setTimeout(answer, fault.delayMs).unref();
        else answer();
        return;
      }

      const tokenRoute = /^\/app\/installations\/(\d+)\/access_tokens$/.exec(url.pathname);
      if (tokenRoute && method === 'POST') {
        if (!opts.app || !appKey || !credential) {
          call.auth = 'rejected';
          return send(err(401, 'A JSON web token could not be decoded', DOC.apps));
        }
        const problem = jwtProblem(credential, opts.app, appKey, Math.floor(Date.now() / 1000));
        if (problem) {
          call.auth = 'rejected';
          return send(err(401, problem, DOC.apps));
        }
        call.auth = 'jwt';
        return send(mint({ body }, tokenRoute[1]!));
      }

      const route = ROUTES.map((r) => ({
        r,
        m: r.method === method ? r.pattern.exec(url.pathname) : null,
      })).find((x) => x.m);
      if (!credential) {
        call.auth = 'rejected';
        return send(err(401, 'Requires authentication', DOC.auth));
      }
      const isPat = (opts.tokens ?? []).some((t) => sameString(t, credential));
      const issued = installation.get(credential);
      if (!isPat && (!issued || issued.expiresAt <= Date.now())) {
        call.auth = 'rejected';
        return send(err(401, 'Bad credentials', DOC.auth));
      }
      call.auth = isPat ? 'token' : 'installation';
      if (!route) return send(err(404, 'Not Found', 'overview'));
      const owner = decodeURIComponent(route.m![1]!);
      const name = decodeURIComponent(route.m![2]!);
      const full = `${owner}/${name}`.toLowerCase();
      const state = repos.get(full);
      if (!state || (!isPat && !issued!.repositories.has(full)))
        return send(err(404, 'Not Found', DOC.repos));
      if (!isPat) {
        const [perm, level] = route.r.permission;
        const have = issued!.permissions[perm];
        if (!have || LEVEL[have] < LEVEL[level])
          return send(err(403, 'Resource not accessible by integration', DOC.auth));
      }
      remaining = Math.max(0, remaining - 1);
      send(
        handlers[route.r.handler]({
          method,
          url,
          match: route.m!,
          state,
          full: `${state.repo.owner.login}/${state.repo.name}`,
          body,
          accept: String(req.headers.accept ?? ''),
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  apiUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    apiUrl,
    calls,
    mints,
    repos,
    fault: (f) => faults.push({ ...f }),
    clearFaults: () => faults.splice(0),
    setTokenLifetimeMs: (ms) => {
      tokenLifetimeMs = ms;
    },
    tokenAllows,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function fakeSha(seed: string): string {
  let h = 0x811c9dc5;
  let out = '';
  for (let round = 0; out.length < 40; round++) {
    for (const ch of `${seed}:${round}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
    out += h.toString(16).padStart(8, '0');
  }
  return out.slice(0, 40);
}
