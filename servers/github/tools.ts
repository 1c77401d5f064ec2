// The twelve github tools. Each one: its input and output schema, its policy check (repository
// globs, the tool's own argument rules, pagination caps — pure, before anything is audited as a
// request) and its handler (one Octokit call with a credential scoped to this repository and the
// permissions in PERMISSIONS, text from GitHub cleaned and labelled on the way back).
import { isUtf8 } from 'node:buffer';
import { z } from 'zod';
import { matchAny } from '../../src/policy/glob.js';
import type { GithubPermissions } from '../../src/secrets/github-app.js';
import {
  allow,
  deny,
  globCondition,
  ToolError,
  withDeadline,
  type AuditDetail,
  type Decision,
  type ToolDefinition,
} from '../../src/tool.js';
import {
  authorizePage,
  authorizeRepo,
  encodePath,
  firstDenial,
  numberSchema,
  paginationArgs,
  pathSchema,
  refProblem,
  refSchema,
  repoArgs,
} from './args.js';
import { callOptions, github, pageParams, paging, type GithubRuntime } from './client.js';
import type { ToolContext } from '../../src/tool.js';
import {
  addIssueCommentOptions,
  createIssueOptions,
  createPullRequestOptions,
  noOptions,
  type GithubSection,
} from './section.js';
import {
  cleanLine,
  cleanText,
  invisibleTotal,
  labelledTextSchema,
  labelText,
  renderLabelled,
  type LabelledText,
} from './text.js';

/** The least each tool needs (what an App installation token is minted with for that call). */
export const PERMISSIONS = {
  get_repository: { metadata: 'read' },
  get_file_contents: { contents: 'read' },
  list_branches: { contents: 'read' },
  list_commits: { contents: 'read' },
  list_issues: { issues: 'read' },
  get_issue: { issues: 'read' },
  create_issue: { issues: 'write' },
  add_issue_comment: { issues: 'write' },
  list_pull_requests: { pull_requests: 'read' },
  get_pull_request: { pull_requests: 'read' },
  get_pull_request_diff: { pull_requests: 'read' },
  create_pull_request: { pull_requests: 'write' },
} as const satisfies Record<string, GithubPermissions>;

type ToolName = keyof typeof PERMISSIONS;

/** `approve.when.repos`: OWNER/NAME globs of the repositories whose calls wait for a human. */
const REPOS_CONDITION = globCondition(
  'OWNER/NAME globs of the repositories whose calls wait for approval',
  (a: { owner: string; repo: string }) => `${a.owner}/${a.repo}`,
);

/**
 * defineTool with the github section and runtime fixed, so every handler is type-checked against
 * them. Each handler's signal also ends at the policy's timeoutMs: the deadline for all of one
 * call's GitHub requests, retries and their waits included.
 */
function defineTool<In extends z.ZodObject, Out extends z.ZodObject, Options extends z.ZodObject>(
  def: ToolDefinition<In, Out, Options, GithubSection, GithubRuntime>,
): ToolDefinition<In, Out, Options, GithubSection, GithubRuntime> {
  const run = def.run;
  return {
    ...def,
    run: (args, ctx) =>
      withDeadline(ctx.signal, ctx.section.timeoutMs, (signal) => run(args, { ...ctx, signal })),
  };
}

const READ = {
  readOnlyHint: true,
  destructiveHint: false,
  idempotentHint: true,
  openWorldHint: true,
} as const;
const WRITE = {
  readOnlyHint: false,
  destructiveHint: false,
  idempotentHint: false,
  openWorldHint: true,
} as const;

const listMeta = {
  page: z.number().int(),
  /** The next page the policy lets the agent ask for; null at the end or at the cap. */
  nextPage: z.number().int().nullable(),
  /** True when anything was cut: the list goes on past the policy's last page, or a text was capped. */
  truncated: z.boolean(),
};

const userLogin = (u: { login?: string } | null | undefined): string | null => u?.login ?? null;

/** A title (untrusted, one line): cleaned and capped; the count of removed characters is added to `removed`. */
function title(raw: string | null | undefined, removed: { n: number }): string {
  const cleaned = cleanLine(raw, 512);
  removed.n += cleaned.removed;
  return cleaned.text;
}

function labelOpts(section: GithubSection) {
  return { maxChars: section.maxTextChars, untrustedAuthors: section.untrustedAuthors };
}

function textAudit(pieces: readonly LabelledText[], titlesRemoved: number, truncated: boolean): AuditDetail {
  return {
    invisibleRemoved: invisibleTotal(pieces) + titlesRemoved,
    omittedBodies: pieces.filter((p) => p.omitted).length,
    truncated,
  };
}

/**
 * Repository rule, then the tool's own checks. An allowed call's request record names the
 * repository and the permissions its credential is scoped to (for an App token: exactly these).
 */
function decide(
  tool: ToolName,
  section: GithubSection,
  args: { owner: string; repo: string },
  ...checks: (Decision | undefined)[]
): Decision {
  const repo = authorizeRepo(section, args.owner, args.repo);
  if (!repo.allow) return repo;
  return (
    firstDenial(...checks) ??
    allow(repo.rule, { repository: `${args.owner}/${args.repo}`, githubPermissions: PERMISSIONS[tool] })
  );
}

function lengthCheck(
  tool: ToolName,
  field: 'title' | 'body',
  value: string | undefined,
  max: number,
): Decision | undefined {
  if (value === undefined || value.length <= max) return undefined;
  const option = field === 'title' ? 'maxTitleLength' : 'maxBodyLength';
  return deny(
    `github.tools.${tool}.${option}`,
    `${field} is ${value.length} characters; the policy allows at most ${max}`,
  );
}

async function connect(
  ctx: ToolContext<GithubSection, unknown, GithubRuntime>,
  tool: ToolName,
  args: { owner: string; repo: string },
) {
  const opts = await callOptions(ctx, args.owner, args.repo, PERMISSIONS[tool]);
  return { octokit: ctx.runtime.octokit, opts };
}

// ---------------------------------------------------------------------------------------------

export const getRepository = defineTool({
  name: 'get_repository',
  title: 'Get repository',
  description: 'Metadata of a policy repository: default branch, visibility, description, open issue count.',
  input: z.object({ ...repoArgs }).strict(),
  output: z.object({
    fullName: z.string(),
    description: z.string().nullable(),
    private: z.boolean(),
    visibility: z.string().nullable(),
    defaultBranch: z.string(),
    archived: z.boolean(),
    openIssues: z.number().int(),
    htmlUrl: z.string(),
    invisibleRemoved: z.number().int(),
  }),
  options: noOptions,
  annotations: { title: 'Get repository', ...READ },
  authorize: (args, { section }) => decide('get_repository', section, args),
  async run(args, ctx) {
    const { octokit, opts } = await connect(ctx, 'get_repository', args);
    const { data } = await github(`reading ${args.owner}/${args.repo}`, () =>
      octokit.rest.repos.get({ owner: args.owner, repo: args.repo, ...opts }),
    );
    const removed = { n: 0 };
    const description = data.description == null ? null : title(data.description, removed);
    const structured = {
      fullName: data.full_name,
      description,
      private: data.private,
      visibility: data.visibility ?? null,
      defaultBranch: data.default_branch,
      archived: data.archived,
      openIssues: data.open_issues_count,
      htmlUrl: data.html_url,
      invisibleRemoved: removed.n,
    };
    const text = `${data.full_name} (${data.private ? 'private' : 'public'}, default branch ${data.default_branch})${description ? `\n${description}` : ''}`;
    return { structured, text };
  },
});

const FILE_TYPES = ['file', 'dir', 'symlink', 'submodule'] as const;

export const getFileContents = defineTool({
  name: 'get_file_contents',
  title: 'Get file contents',
  description:
    'A file (text with invisible characters removed, or base64 for binary) or a directory listing at a path, on the default branch or `ref`.',
  input: z
    .object({
      ...repoArgs,
      path: pathSchema.describe(
        'Path in the repository ("" for the root); plain text, no "..", "?", "#", "\\" or %-escapes',
      ),
      ref: refSchema.optional().describe('Branch, tag or commit id; default: the default branch'),
    })
    .strict(),
  output: z.object({
    type: z.enum(FILE_TYPES),
    path: z.string(),
    sha: z.string().nullable(),
    size: z.number().int().nullable(),
    /** For a file: its contents (utf8 text, cleaned) or base64 for binary; null for a directory. */
    content: z.string().nullable(),
    encoding: z.enum(['utf8', 'base64']).nullable(),
    invisibleRemoved: z.number().int(),
    truncated: z.boolean(),
    entries: z
      .array(z.object({ name: z.string(), path: z.string(), type: z.string(), size: z.number().int() }))
      .nullable(),
    /** For a symlink or submodule: where it points. */
    target: z.string().nullable(),
  }),
  options: noOptions,
  annotations: { title: 'Get file contents', ...READ },
  authorize: (args, { section }) => decide('get_file_contents', section, args),
  async run(args, ctx) {
    const { octokit, opts } = await connect(ctx, 'get_file_contents', args);
    // `{+path}`: the path's segments are encoded one by one (encodePath), "/" kept between them.
    const { data } = await github(`reading ${args.path || '/'} in ${args.owner}/${args.repo}`, () =>
      octokit.request('GET /repos/{owner}/{repo}/contents/{+path}', {
        owner: args.owner,
        repo: args.repo,
        path: encodePath(args.path),
        ...(args.ref ? { ref: args.ref } : {}),
        ...opts,
      }),
    );
    const maxBytes = ctx.section.maxBytes;
    if (Array.isArray(data)) {
      const all = data as { name: string; path: string; type: string; size: number }[];
      const entries = all.slice(0, 1000).map((e) => ({
        name: cleanLine(e.name).text,
        path: cleanLine(e.path, 4096).text,
        type: e.type,
        size: e.size,
      }));
      const structured = {
        type: 'dir' as const,
        path: args.path,
        sha: null,
        size: null,
        content: null,
        encoding: null,
        invisibleRemoved: 0,
        truncated: all.length > entries.length,
        entries,
        target: null,
      };
      const text =
        entries.map((e) => `${e.type === 'dir' ? 'd' : '-'} ${e.path}`).join('\n') || '(empty directory)';
      return { structured, text, audit: { entries: entries.length } };
    }
    const item = data as {
      type: string;
      path: string;
      sha: string;
      size: number;
      content?: string;
      encoding?: string;
      target?: string;
      submodule_git_url?: string;
    };
    const type = (FILE_TYPES as readonly string[]).includes(item.type)
      ? (item.type as (typeof FILE_TYPES)[number])
      : 'file';
    if (type !== 'file') {
      const target = item.target ?? item.submodule_git_url ?? null;
      const structured = {
        type,
        path: item.path,
        sha: item.sha,
        size: item.size,
        content: null,
        encoding: null,
        invisibleRemoved: 0,
        truncated: false,
        entries: null,
        target: target === null ? null : cleanLine(target, 4096).text,
      };
      return { structured, text: `${item.path} is a ${type}${target ? ` → ${structured.target}` : ''}` };
    }
    // GitHub leaves `content` empty (encoding "none") above 1 MB: that is a truncation too.
    const raw = item.encoding === 'base64' ? Buffer.from(item.content ?? '', 'base64') : Buffer.alloc(0);
    const tooBigUpstream = item.encoding !== 'base64' && item.size > 0;
    const cut = raw.length > maxBytes;
    const bytes = cut ? raw.subarray(0, maxBytes) : raw;
    let content: string;
    let encoding: 'utf8' | 'base64';
    let invisibleRemoved = 0;
    // A cut may split a multi-byte character: judge UTF-8 on the whole file.
    if (isUtf8(raw) || (cut && isUtf8(raw.subarray(0, Math.max(0, maxBytes - 3))))) {
      const cleaned = cleanText(bytes.toString('utf8'), Number.MAX_SAFE_INTEGER);
      content = cleaned.text;
      invisibleRemoved = cleaned.removed;
      encoding = 'utf8';
    } else {
      content = bytes.toString('base64');
      encoding = 'base64';
    }
    const structured = {
      type,
      path: item.path,
      sha: item.sha,
      size: item.size,
      content,
      encoding,
      invisibleRemoved,
      truncated: cut || tooBigUpstream,
      entries: null,
      target: null,
    };
    const notes = [
      invisibleRemoved ? `${invisibleRemoved} invisible character(s) removed` : '',
      structured.truncated ? 'truncated' : '',
    ].filter(Boolean);
    const header = `----- ${item.path} (${item.size} bytes${notes.length ? `; ${notes.join('; ')}` : ''}) -----`;
    return {
      structured,
      text: `${header}\n${encoding === 'utf8' ? content : `[binary, ${bytes.length} bytes as base64 in structuredContent]`}`,
      audit: { bytes: bytes.length, invisibleRemoved, truncated: structured.truncated },
    };
  },
});

export const listBranches = defineTool({
  name: 'list_branches',
  title: 'List branches',
  description:
    'Branches of a policy repository, one page at a time (page size and last page capped by policy).',
  input: z.object({ ...repoArgs, ...paginationArgs }).strict(),
  output: z.object({
    branches: z.array(z.object({ name: z.string(), sha: z.string(), protected: z.boolean() })),
    ...listMeta,
  }),
  options: noOptions,
  annotations: { title: 'List branches', ...READ },
  authorize: (args, { section }) => decide('list_branches', section, args, authorizePage(section, args)),
  async run(args, ctx) {
    const { octokit, opts } = await connect(ctx, 'list_branches', args);
    const page = pageParams(ctx.section, args);
    const res = await github(`listing branches of ${args.owner}/${args.repo}`, () =>
      octokit.rest.repos.listBranches({ owner: args.owner, repo: args.repo, ...page, ...opts }),
    );
    const removed = { n: 0 };
    const branches = res.data.map((b) => ({
      name: title(b.name, removed),
      sha: b.commit.sha,
      protected: b.protected,
    }));
    const { nextPage, pastCap } = paging(ctx.section, page.page, res.headers);
    const structured = { branches, page: page.page, nextPage, truncated: pastCap };
    return {
      structured,
      text:
        branches
          .map((b) => `${b.name} ${b.sha.slice(0, 12)}${b.protected ? ' (protected)' : ''}`)
          .join('\n') || '(no branches)',
      audit: { count: branches.length, truncated: pastCap },
    };
  },
});

export const listCommits = defineTool({
  name: 'list_commits',
  title: 'List commits',
  description:
    'Commits reachable from `sha` (default branch if absent), optionally touching `path`; messages cleaned and labelled with their author.',
  input: z
    .object({
      ...repoArgs,
      sha: refSchema.optional().describe('Branch, tag or commit id to start from'),
      path: pathSchema.optional().describe('Only commits touching this path'),
      ...paginationArgs,
    })
    .strict(),
  output: z.object({
    commits: z.array(
      z.object({
        sha: z.string(),
        authorName: z.string().nullable(),
        date: z.string().nullable(),
        htmlUrl: z.string(),
        message: labelledTextSchema,
      }),
    ),
    ...listMeta,
  }),
  options: noOptions,
  annotations: { title: 'List commits', ...READ },
  authorize: (args, { section }) => decide('list_commits', section, args, authorizePage(section, args)),
  async run(args, ctx) {
    const { octokit, opts } = await connect(ctx, 'list_commits', args);
    const page = pageParams(ctx.section, args);
    const res = await github(`listing commits of ${args.owner}/${args.repo}`, () =>
      octokit.rest.repos.listCommits({
        owner: args.owner,
        repo: args.repo,
        ...(args.sha ? { sha: args.sha } : {}),
        ...(args.path ? { path: args.path } : {}),
        ...page,
        ...opts,
      }),
    );
    const removed = { n: 0 };
    // GitHub gives no author_association for commits; they reached a branch through someone with
    // write access, so messages are labelled (author login, association unknown) but never omitted.
    const commits = res.data.map((c) => ({
      sha: c.sha,
      authorName: c.commit.author?.name == null ? null : title(c.commit.author.name, removed),
      date: c.commit.author?.date ?? null,
      htmlUrl: c.html_url,
      message: labelText(
        c.commit.message,
        { login: userLogin(c.author) },
        { maxChars: ctx.section.maxTextChars, untrustedAuthors: 'label' },
      ),
    }));
    const { nextPage, pastCap } = paging(ctx.section, page.page, res.headers);
    const messages = commits.map((c) => c.message);
    const truncated = pastCap || messages.some((m) => m.truncated);
    const structured = { commits, page: page.page, nextPage, truncated };
    const text = commits
      .map((c) => `${c.sha.slice(0, 12)} ${c.date ?? ''}\n${renderLabelled('commit message', c.message)}`)
      .join('\n\n');
    return {
      structured,
      text: text || '(no commits)',
      audit: { count: commits.length, ...textAudit(messages, removed.n, truncated) },
    };
  },
});

const issueSummary = z.object({
  number: z.number().int(),
  title: z.string(),
  state: z.string(),
  author: z.string().nullable(),
  authorAssociation: z.string().nullable(),
  labels: z.array(z.string()),
  comments: z.number().int(),
  createdAt: z.string(),
  htmlUrl: z.string(),
});

type IssueLabel = string | { name?: string | null };
const labelNames = (labels: readonly IssueLabel[] | undefined, removed: { n: number }): string[] =>
  (labels ?? []).map((l) => title(typeof l === 'string' ? l : (l.name ?? ''), removed));

export const listIssues = defineTool({
  name: 'list_issues',
  title: 'List issues',
  description:
    'Issues (not pull requests) of a policy repository, without bodies; titles cleaned and labelled with their author.',
  input: z
    .object({
      ...repoArgs,
      state: z.enum(['open', 'closed', 'all']).optional().describe('Default open'),
      labels: z
        .array(
          z
            .string()
            .min(1)
            .max(50)
            .regex(/^[^,]+$/, 'no commas'),
        )
        .max(20)
        .optional()
        .describe('Only issues with all these labels'),
      ...paginationArgs,
    })
    .strict(),
  output: z.object({ issues: z.array(issueSummary), ...listMeta }),
  options: noOptions,
  annotations: { title: 'List issues', ...READ },
  authorize: (args, { section }) => decide('list_issues', section, args, authorizePage(section, args)),
  async run(args, ctx) {
    const { octokit, opts } = await connect(ctx, 'list_issues', args);
    const page = pageParams(ctx.section, args);
    const res = await github(`listing issues of ${args.owner}/${args.repo}`, () =>
      octokit.rest.issues.listForRepo({
        owner: args.owner,
        repo: args.repo,
        ...(args.state ? { state: args.state } : {}),
        ...(args.labels?.length ? { labels: args.labels.join(',') } : {}),
        ...page,
        ...opts,
      }),
    );
    const removed = { n: 0 };
    const issues = res.data
      .filter((i) => !i.pull_request)
      .map((i) => ({
        number: i.number,
        title: title(i.title, removed),
        state: i.state,
        author: userLogin(i.user),
        authorAssociation: i.author_association ?? null,
        labels: labelNames(i.labels as IssueLabel[], removed),
        comments: i.comments,
        createdAt: i.created_at,
        htmlUrl: i.html_url,
      }));
    const { nextPage, pastCap } = paging(ctx.section, page.page, res.headers);
    const structured = { issues, page: page.page, nextPage, truncated: pastCap };
    const text =
      issues
        .map(
          (i) => `#${i.number} [${i.state}] ${i.title} — @${i.author ?? '?'} (${i.authorAssociation ?? '?'})`,
        )
        .join('\n') || '(no issues)';
    return {
      structured,
      text,
      audit: { count: issues.length, invisibleRemoved: removed.n, truncated: pastCap },
    };
  },
});

export const getIssue = defineTool({
  name: 'get_issue',
  title: 'Get issue',
  description:
    'One issue with its body and first page of comments; every text cleaned of invisible characters and labelled with author and author_association.',
  input: z.object({ ...repoArgs, number: numberSchema.describe('Issue number') }).strict(),
  output: z.object({
    number: z.number().int(),
    title: z.string(),
    state: z.string(),
    labels: z.array(z.string()),
    htmlUrl: z.string(),
    isPullRequest: z.boolean(),
    body: labelledTextSchema,
    comments: z.array(z.object({ id: z.number().int(), createdAt: z.string(), body: labelledTextSchema })),
    /** The issue has more comments than returned. */
    moreComments: z.boolean(),
    invisibleRemoved: z.number().int(),
    truncated: z.boolean(),
  }),
  options: noOptions,
  annotations: { title: 'Get issue', ...READ },
  authorize: (args, { section }) => decide('get_issue', section, args),
  async run(args, ctx) {
    const { octokit, opts } = await connect(ctx, 'get_issue', args);
    const what = `reading issue #${args.number} of ${args.owner}/${args.repo}`;
    const where = { owner: args.owner, repo: args.repo, issue_number: args.number };
    // The issue and its first page of comments at once: one GitHub round trip instead of two.
    const [issueRes, commentsRes] = await Promise.allSettled([
      github(what, () => octokit.rest.issues.get({ ...where, ...opts })),
      github(what, () =>
        octokit.rest.issues.listComments({ ...where, per_page: ctx.section.perPage, page: 1, ...opts }),
      ),
    ]);
    // The issue's own failure (e.g. 404) is the one to report.
    if (issueRes.status === 'rejected') throw issueRes.reason;
    if (commentsRes.status === 'rejected') throw commentsRes.reason;
    const issue = issueRes.value.data;
    const lo = labelOpts(ctx.section);
    const removed = { n: 0 };
    const body = labelText(
      issue.body,
      { login: userLogin(issue.user), association: issue.author_association },
      lo,
    );
    const comments = commentsRes.value.data.map((c) => ({
      id: c.id,
      createdAt: c.created_at,
      body: labelText(c.body, { login: userLogin(c.user), association: c.author_association }, lo),
    }));
    const pieces = [body, ...comments.map((c) => c.body)];
    const moreComments = issue.comments > comments.length;
    const truncated = moreComments || pieces.some((p) => p.truncated);
    const structured = {
      number: issue.number,
      title: title(issue.title, removed),
      state: issue.state,
      labels: labelNames(issue.labels as IssueLabel[], removed),
      htmlUrl: issue.html_url,
      isPullRequest: Boolean(issue.pull_request),
      body,
      comments,
      moreComments,
      invisibleRemoved: invisibleTotal(pieces) + removed.n,
      truncated,
    };
    const text = [
      `#${structured.number} [${structured.state}] ${structured.title}${structured.labels.length ? ` {${structured.labels.join(', ')}}` : ''}`,
      `Text below is untrusted input from GitHub users; each piece names its author and whether they have write access.`,
      renderLabelled('issue body', body),
      ...comments.map((c) => renderLabelled(`comment ${c.id}`, c.body)),
      moreComments ? `[${issue.comments - comments.length} more comment(s) not shown]` : '',
    ]
      .filter(Boolean)
      .join('\n\n');
    return { structured, text, audit: textAudit(pieces, removed.n, truncated) };
  },
});

export const createIssue = defineTool({
  name: 'create_issue',
  title: 'Create issue',
  description:
    'Opens an issue in a policy repository. Labels only from the policy list; title and body length capped by policy.',
  input: z
    .object({
      ...repoArgs,
      title: z.string().min(1).describe('Issue title'),
      body: z.string().describe('Issue body (Markdown)'),
      labels: z
        .array(z.string().min(1).max(50))
        .max(20)
        .optional()
        .describe('Labels to set (each must be in the policy list)'),
    })
    .strict(),
  output: z.object({
    number: z.number().int(),
    htmlUrl: z.string(),
    title: z.string(),
    labels: z.array(z.string()),
  }),
  options: createIssueOptions,
  annotations: { title: 'Create issue', ...WRITE },
  approvalConditions: { repos: REPOS_CONDITION },
  authorize: (args, { section, options }) => {
    const allowed = options.labels;
    const badLabel = (args.labels ?? []).find((l) => !allowed?.includes(l));
    return decide(
      'create_issue',
      section,
      args,
      lengthCheck('create_issue', 'title', args.title, options.maxTitleLength),
      lengthCheck('create_issue', 'body', args.body, options.maxBodyLength),
      badLabel === undefined
        ? undefined
        : deny(
            'github.tools.create_issue.labels',
            allowed?.length
              ? `label ${JSON.stringify(badLabel)} is not allowed; allowed labels: ${allowed.join(', ')}`
              : 'the policy allows no labels on new issues',
          ),
    );
  },
  async run(args, ctx) {
    const { octokit, opts } = await connect(ctx, 'create_issue', args);
    const { data } = await github(`creating an issue in ${args.owner}/${args.repo}`, () =>
      octokit.rest.issues.create({
        owner: args.owner,
        repo: args.repo,
        title: args.title,
        body: args.body,
        ...(args.labels?.length ? { labels: args.labels } : {}),
        ...opts,
      }),
    );
    const removed = { n: 0 };
    const structured = {
      number: data.number,
      htmlUrl: data.html_url,
      title: title(data.title, removed),
      labels: labelNames(data.labels as IssueLabel[], removed),
    };
    return {
      structured,
      text: `created issue #${data.number}: ${data.html_url}`,
      audit: { number: data.number, htmlUrl: data.html_url },
    };
  },
});

export const addIssueComment = defineTool({
  name: 'add_issue_comment',
  title: 'Add issue comment',
  description:
    'Comments on an issue or pull request of a policy repository. With a policy `labels` list, only issues carrying one of those labels.',
  input: z
    .object({
      ...repoArgs,
      number: numberSchema.describe('Issue or pull request number'),
      body: z.string().min(1),
    })
    .strict(),
  output: z.object({ id: z.number().int(), htmlUrl: z.string(), number: z.number().int() }),
  options: addIssueCommentOptions,
  annotations: { title: 'Add issue comment', ...WRITE },
  approvalConditions: { repos: REPOS_CONDITION },
  authorize: (args, { section, options }) =>
    decide(
      'add_issue_comment',
      section,
      args,
      lengthCheck('add_issue_comment', 'body', args.body, options.maxBodyLength),
    ),
  async run(args, ctx) {
    const { octokit, opts } = await connect(ctx, 'add_issue_comment', args);
    const where = { owner: args.owner, repo: args.repo, issue_number: args.number };
    const required = ctx.options.labels;
    if (required) {
      // The issue's labels live on GitHub: checked here, refused as a (late, audited) denial.
      const { data: issue } = await github(
        `reading issue #${args.number} of ${args.owner}/${args.repo}`,
        () => octokit.rest.issues.get({ ...where, ...opts }),
      );
      const has = labelNames(issue.labels as IssueLabel[], { n: 0 });
      if (!has.some((l) => required.includes(l))) {
        throw new ToolError(
          `issue #${args.number} carries none of the labels the policy requires for comments (${required.join(', ')}); it has: ${has.join(', ') || 'no labels'}`,
          'denied',
          'github.tools.add_issue_comment.labels',
        );
      }
    }
    const { data } = await github(`commenting on #${args.number} of ${args.owner}/${args.repo}`, () =>
      octokit.rest.issues.createComment({ ...where, body: args.body, ...opts }),
    );
    const structured = { id: data.id, htmlUrl: data.html_url, number: args.number };
    return {
      structured,
      text: `commented on #${args.number}: ${data.html_url}`,
      audit: { commentId: data.id },
    };
  },
});

const refSummary = z.object({ ref: z.string(), sha: z.string(), repo: z.string().nullable() });
const pullSummary = z.object({
  number: z.number().int(),
  title: z.string(),
  state: z.string(),
  draft: z.boolean(),
  author: z.string().nullable(),
  authorAssociation: z.string().nullable(),
  head: refSummary,
  base: refSummary,
  htmlUrl: z.string(),
});

interface PullLike {
  number: number;
  title: string;
  state: string;
  draft?: boolean;
  user: { login?: string } | null;
  author_association?: string;
  head: { ref: string; sha: string; repo?: { full_name?: string } | null };
  base: { ref: string; sha: string; repo?: { full_name?: string } | null };
  html_url: string;
}

function summarizePull(p: PullLike, removed: { n: number }): z.output<typeof pullSummary> {
  const side = (s: PullLike['head']) => ({
    ref: title(s.ref, removed),
    sha: s.sha,
    repo: s.repo?.full_name ?? null,
  });
  return {
    number: p.number,
    title: title(p.title, removed),
    state: p.state,
    draft: p.draft ?? false,
    author: userLogin(p.user),
    authorAssociation: p.author_association ?? null,
    head: side(p.head),
    base: side(p.base),
    htmlUrl: p.html_url,
  };
}

export const listPullRequests = defineTool({
  name: 'list_pull_requests',
  title: 'List pull requests',
  description:
    'Pull requests of a policy repository, without bodies; titles cleaned and labelled with their author.',
  input: z
    .object({
      ...repoArgs,
      state: z.enum(['open', 'closed', 'all']).optional().describe('Default open'),
      ...paginationArgs,
    })
    .strict(),
  output: z.object({ pullRequests: z.array(pullSummary), ...listMeta }),
  options: noOptions,
  annotations: { title: 'List pull requests', ...READ },
  authorize: (args, { section }) => decide('list_pull_requests', section, args, authorizePage(section, args)),
  async run(args, ctx) {
    const { octokit, opts } = await connect(ctx, 'list_pull_requests', args);
    const page = pageParams(ctx.section, args);
    const res = await github(`listing pull requests of ${args.owner}/${args.repo}`, () =>
      octokit.rest.pulls.list({
        owner: args.owner,
        repo: args.repo,
        ...(args.state ? { state: args.state } : {}),
        ...page,
        ...opts,
      }),
    );
    const removed = { n: 0 };
    const pullRequests = res.data.map((p) => summarizePull(p as PullLike, removed));
    const { nextPage, pastCap } = paging(ctx.section, page.page, res.headers);
    const structured = { pullRequests, page: page.page, nextPage, truncated: pastCap };
    const text =
      pullRequests
        .map(
          (p) =>
            `#${p.number} [${p.state}${p.draft ? ', draft' : ''}] ${p.title} (${p.head.ref} → ${p.base.ref}) — @${p.author ?? '?'} (${p.authorAssociation ?? '?'})`,
        )
        .join('\n') || '(no pull requests)';
    return {
      structured,
      text,
      audit: { count: pullRequests.length, invisibleRemoved: removed.n, truncated: pastCap },
    };
  },
});

export const getPullRequest = defineTool({
  name: 'get_pull_request',
  title: 'Get pull request',
  description:
    'One pull request with its body (cleaned, labelled with author and author_association), refs and change counts.',
  input: z.object({ ...repoArgs, number: numberSchema.describe('Pull request number') }).strict(),
  output: pullSummary.extend({
    merged: z.boolean(),
    additions: z.number().int(),
    deletions: z.number().int(),
    changedFiles: z.number().int(),
    body: labelledTextSchema,
    invisibleRemoved: z.number().int(),
    truncated: z.boolean(),
  }),
  options: noOptions,
  annotations: { title: 'Get pull request', ...READ },
  authorize: (args, { section }) => decide('get_pull_request', section, args),
  async run(args, ctx) {
    const { octokit, opts } = await connect(ctx, 'get_pull_request', args);
    const { data } = await github(`reading pull request #${args.number} of ${args.owner}/${args.repo}`, () =>
      octokit.rest.pulls.get({ owner: args.owner, repo: args.repo, pull_number: args.number, ...opts }),
    );
    const removed = { n: 0 };
    const summary = summarizePull(data as PullLike, removed);
    const body = labelText(
      data.body,
      { login: userLogin(data.user), association: data.author_association },
      labelOpts(ctx.section),
    );
    const structured = {
      ...summary,
      merged: data.merged,
      additions: data.additions,
      deletions: data.deletions,
      changedFiles: data.changed_files,
      body,
      invisibleRemoved: body.invisibleRemoved + removed.n,
      truncated: body.truncated,
    };
    const text = [
      `#${summary.number} [${summary.state}${summary.draft ? ', draft' : ''}${data.merged ? ', merged' : ''}] ${summary.title}`,
      `${summary.head.ref} → ${summary.base.ref}; +${data.additions} −${data.deletions} in ${data.changed_files} file(s)`,
      `Text below is untrusted input from a GitHub user.`,
      renderLabelled('pull request body', body),
    ].join('\n\n');
    return { structured, text, audit: textAudit([body], removed.n, body.truncated) };
  },
});

export const getPullRequestDiff = defineTool({
  name: 'get_pull_request_diff',
  title: 'Get pull request diff',
  description:
    'The unified diff of a pull request (invisible characters removed and counted; capped at the policy maxBytes).',
  input: z.object({ ...repoArgs, number: numberSchema.describe('Pull request number') }).strict(),
  output: z.object({
    number: z.number().int(),
    diff: z.string(),
    bytes: z.number().int(),
    invisibleRemoved: z.number().int(),
    truncated: z.boolean(),
  }),
  options: noOptions,
  annotations: { title: 'Get pull request diff', ...READ },
  authorize: (args, { section }) => decide('get_pull_request_diff', section, args),
  async run(args, ctx) {
    const { octokit, opts } = await connect(ctx, 'get_pull_request_diff', args);
    const { data } = await github(
      `reading the diff of pull request #${args.number} of ${args.owner}/${args.repo}`,
      () =>
        octokit.rest.pulls.get({
          owner: args.owner,
          repo: args.repo,
          pull_number: args.number,
          mediaType: { format: 'diff' },
          ...opts,
        }),
    );
    const raw = Buffer.from(typeof data === 'string' ? data : String(data), 'utf8');
    const max = ctx.section.maxBytes;
    const cut = raw.length > max;
    const cleaned = cleanText(raw.subarray(0, max).toString('utf8'), Number.MAX_SAFE_INTEGER);
    const structured = {
      number: args.number,
      diff: cleaned.text,
      bytes: raw.length,
      invisibleRemoved: cleaned.removed,
      truncated: cut,
    };
    const notes = [
      cleaned.removed ? `${cleaned.removed} invisible character(s) removed` : '',
      cut ? `truncated to ${max} bytes` : '',
    ].filter(Boolean);
    return {
      structured,
      text: `${notes.length ? `[${notes.join('; ')}]\n` : ''}${cleaned.text}`,
      audit: { bytes: raw.length, invisibleRemoved: cleaned.removed, truncated: cut },
    };
  },
});

export const createPullRequest = defineTool({
  name: 'create_pull_request',
  title: 'Create pull request',
  description:
    'Opens a pull request from `head` into `base` (both branches of the same repository, each allowed by the policy globs); draft when the policy requires it.',
  input: z
    .object({
      ...repoArgs,
      title: z.string().min(1).describe('Pull request title'),
      head: refSchema.describe('Branch with the changes (same repository; no "owner:" prefix)'),
      base: refSchema.describe('Branch to merge into'),
      body: z.string().optional().describe('Description (Markdown)'),
      draft: z.boolean().optional().describe('Open as a draft'),
    })
    .strict(),
  output: z.object({
    number: z.number().int(),
    htmlUrl: z.string(),
    draft: z.boolean(),
    head: z.string(),
    base: z.string(),
  }),
  options: createPullRequestOptions,
  annotations: { title: 'Create pull request', ...WRITE },
  approvalConditions: {
    repos: REPOS_CONDITION,
    base: globCondition(
      'Base branches whose pull requests wait for approval',
      (a: { base: string }) => a.base,
    ),
    head: globCondition(
      'Head branches whose pull requests wait for approval',
      (a: { head: string }) => a.head,
    ),
  },
  authorize: (args, { section, options }) => {
    const rule = 'github.tools.create_pull_request';
    const branchRule = (field: 'base' | 'head', value: string): Decision | undefined => {
      const globs = options[field];
      if (refProblem(value) !== undefined || /^[0-9a-f]{40}$/i.test(value))
        return deny(`${rule}.${field}`, `${field} must be a branch name`);
      if (matchAny(globs, value) !== undefined) return undefined;
      return deny(
        `${rule}.${field}`,
        globs.length
          ? `${field} branch ${JSON.stringify(value)} is not allowed; allowed: ${globs.join(', ')}`
          : `the policy allows no ${field} branches for pull requests`,
      );
    };
    return decide(
      'create_pull_request',
      section,
      args,
      branchRule('base', args.base),
      branchRule('head', args.head),
      options.draft === 'required' && args.draft !== true
        ? deny(`${rule}.draft`, 'the policy requires draft pull requests; pass draft: true')
        : undefined,
      lengthCheck('create_pull_request', 'title', args.title, options.maxTitleLength),
      lengthCheck('create_pull_request', 'body', args.body, options.maxBodyLength),
    ) satisfies Decision;
  },
  async run(args, ctx) {
    const { octokit, opts } = await connect(ctx, 'create_pull_request', args);
    const { data } = await github(
      `opening a pull request ${args.head} → ${args.base} in ${args.owner}/${args.repo}`,
      () =>
        octokit.rest.pulls.create({
          owner: args.owner,
          repo: args.repo,
          title: args.title,
          head: args.head,
          base: args.base,
          ...(args.body !== undefined ? { body: args.body } : {}),
          ...(args.draft !== undefined ? { draft: args.draft } : {}),
          ...opts,
        }),
    );
    const structured = {
      number: data.number,
      htmlUrl: data.html_url,
      draft: data.draft ?? false,
      head: args.head,
      base: args.base,
    };
    return {
      structured,
      text: `opened pull request #${data.number} (${args.head} → ${args.base}${structured.draft ? ', draft' : ''}): ${data.html_url}`,
      audit: { number: data.number, htmlUrl: data.html_url },
    };
  },
});

export const githubTools = [
  getRepository,
  getFileContents,
  listBranches,
  listCommits,
  listIssues,
  getIssue,
  createIssue,
  addIssueComment,
  listPullRequests,
  getPullRequest,
  getPullRequestDiff,
  createPullRequest,
];
