// The twelve git tools. Every ref the agent names is resolved to a commit id (or checked with
// check-ref-format) before any other git command sees it; every path is resolved inside the
// work tree and passed after `--`; the remote is always the policy URL, given explicitly.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { matchAny } from '../../src/policy/glob.js';
import {
  allow,
  defineTool,
  deny,
  globCondition,
  ToolError,
  type AuthorizeContext,
  type Decision,
  type ToolAnnotations,
  type ToolDefinition,
} from '../../src/tool.js';
import { noOptionsSchema, pullOptionsSchema, pushOptionsSchema, type GitSection } from './policy.js';
import { openWorkspace, TRACKING_PREFIX, withLock, type WorkspaceGit } from './workspace.js';

/** The `git status` git_status runs (after the per-call upstream `-c`s); bench/git.ts runs it raw. */
export const GIT_STATUS_ARGS: readonly string[] = [
  'status',
  '--porcelain=v2',
  '-z',
  '--branch',
  '--untracked-files=normal',
  '--ignore-submodules=all',
];

/** Cap on diff/log/show text handed back to the agent. */
export const MAX_OUTPUT_BYTES = 256 * 1024;
const MAX_STATUS_FILES = 2000;
const MAX_STATUS_BYTES = 8 * 1024 * 1024;

const workspaceArg = z.string().min(1).max(64).describe('A workspace named in the team policy');
const refArg = z.string().min(1).max(256);
const pathArg = z.string().min(1).max(4096);

const sha = z.string();
const truncatedField = z.boolean().describe('True when the output was cut at the size cap');

/** defineTool with the section typed as the git section (so handlers need no casts). */
function defineGitTool<In extends z.ZodObject, Out extends z.ZodObject, Options extends z.ZodObject>(
  def: ToolDefinition<In, Out, Options, GitSection>,
): ToolDefinition<In, Out, Options, GitSection> {
  return defineTool(def);
}

/** The policy check of every tool: the workspace must be named in the policy. */
function authorizeWorkspace(args: { workspace: string }, ctx: AuthorizeContext<GitSection>): Decision {
  if (!Object.prototype.hasOwnProperty.call(ctx.section.workspaces, args.workspace)) {
    return deny('git.workspaces', `workspace "${args.workspace}" is not in the policy`);
  }
  return allow(`git.workspaces.${args.workspace}`);
}

function truncationNote(truncated: boolean): string {
  return truncated ? `\n[output truncated at ${MAX_OUTPUT_BYTES} bytes]` : '';
}

/** [full ref name, object id] of every ref under the given prefixes. */
async function listRefs(git: WorkspaceGit, ...prefixes: string[]): Promise<[string, string][]> {
  const out = await git.text(['for-each-ref', '--format=%(refname)%00%(objectname)', ...prefixes], {
    readOnly: true,
  });
  const refs: [string, string][] = [];
  for (const line of out.split('\n')) {
    const [ref, oid] = line.split('\0');
    if (ref && oid) refs.push([ref, oid]);
  }
  return refs;
}

async function currentBranch(git: WorkspaceGit): Promise<string | undefined> {
  // HEAD lives in the host-owned git dir: read it directly (saves a git process on status), and
  // synchronously: a few dozen bytes of our own, where readFile is four threadpool round trips.
  const head = readFileSync(path.join(git.ws.gitDir, 'HEAD'), 'utf8');
  const m = /^ref: refs\/heads\/(.+)\n?$/.exec(head);
  return m?.[1];
}

// The MCP title annotation is the tool's title (the pipeline adds it).
const READ_ONLY: ToolAnnotations = {
  readOnlyHint: true,
  destructiveHint: false,
  idempotentHint: true,
  openWorldHint: false,
};

/** Hints for a tool that changes state: neither destructive, idempotent nor networked unless said. */
function writes(hints: Partial<ToolAnnotations> = {}): ToolAnnotations {
  return {
    readOnlyHint: false,
    destructiveHint: false,
    idempotentHint: false,
    openWorldHint: false,
    ...hints,
  };
}

/** The last few lines of git's output, for an error message. */
function lastLines(text: string): string {
  return text.trim().split('\n').slice(-4).join('\n');
}

// ---------------------------------------------------------------------------------------------

const statusFile = z.object({
  path: z.string(),
  origPath: z.string().optional(),
  kind: z.enum(['changed', 'renamed', 'unmerged', 'untracked']),
  index: z.string().describe('Index status letter ("." unchanged, M, A, D, R, …)'),
  workTree: z.string().describe('Work tree status letter'),
});

export const gitStatus = defineGitTool({
  name: 'git_status',
  title: 'Git status',
  description:
    'Current branch, ahead/behind the last fetch of its remote branch, and changed, staged and untracked files.',
  input: z.object({ workspace: workspaceArg }).strict(),
  output: z.object({
    workspace: z.string(),
    branch: z.string().nullable(),
    head: z.string().nullable(),
    ahead: z.number().nullable(),
    behind: z.number().nullable(),
    files: z.array(statusFile),
    clean: z.boolean(),
    truncated: truncatedField,
  }),
  options: noOptionsSchema,
  annotations: READ_ONLY,
  authorize: authorizeWorkspace,
  async run(args, ctx) {
    const git = await openWorkspace(ctx, args.workspace);
    const branch = await currentBranch(git);
    // One git process: `--branch` reports ahead/behind (`# branch.ab`) against the branch's
    // upstream, which is set for this command only to our tracking ref (remote "." = a local ref).
    // A name `-c` cannot carry (an "=" in it) is counted by rev-list instead.
    const upstreamConfig = branch && !branch.includes('=');
    const [status, counts] = await Promise.all([
      git.run(
        [
          ...(upstreamConfig
            ? ['-c', `branch.${branch}.remote=.`, '-c', `branch.${branch}.merge=${TRACKING_PREFIX}${branch}`]
            : []),
          ...GIT_STATUS_ARGS,
        ],
        { readOnly: true, maxOutputBytes: MAX_STATUS_BYTES },
      ),
      branch && !upstreamConfig
        ? git.run(
            [
              'rev-list',
              '--left-right',
              '--count',
              '--end-of-options',
              `refs/heads/${branch}...${TRACKING_PREFIX}${branch}`,
              '--',
            ],
            // Refs only: no work tree, so no confinement to enter.
            { readOnly: true, allowFailure: true, noWorkTree: true },
          )
        : undefined,
    ]);
    let ahead: number | null = null;
    let behind: number | null = null;
    if (counts && counts.code === 0) {
      const m = /^(\d+)\s+(\d+)/.exec(counts.stdout.toString('utf8'));
      if (m) [ahead, behind] = [Number(m[1]), Number(m[2])];
    }
    const parsed = parseStatusPorcelainV2(status.stdout.toString('utf8'), Boolean(upstreamConfig));
    const { head, files } = parsed;
    const truncated = status.truncated || parsed.truncated;
    if (parsed.aheadBehind) [ahead, behind] = parsed.aheadBehind;
    const structured = {
      workspace: args.workspace,
      branch: branch ?? null,
      head,
      ahead,
      behind,
      files,
      clean: files.length === 0,
      truncated,
    };
    const lines = [
      `On ${branch ? `branch ${branch}` : 'a detached HEAD'}${head ? ` at ${head.slice(0, 12)}` : ' (no commits yet)'}` +
        (ahead !== null ? ` — ${ahead} ahead, ${behind} behind ${TRACKING_PREFIX}${branch}` : ''),
      ...(files.length === 0
        ? ['nothing to commit, working tree clean']
        : files.map((f) => `${f.index}${f.workTree} ${f.origPath ? `${f.origPath} -> ` : ''}${f.path}`)),
    ];
    if (truncated) lines.push(`[file list truncated at ${files.length} entries]`);
    return { structured, text: lines.join('\n') };
  },
});

/**
 * Reads `git status --porcelain=v2 -z --branch` output: the head, the files (at most
 * MAX_STATUS_FILES, then `truncated`), and with `withAheadBehind` the `# branch.ab` counts.
 * Pure, so bench/fuzz.ts can feed it anything.
 */
export function parseStatusPorcelainV2(
  text: string,
  withAheadBehind: boolean,
): {
  head: string | null;
  files: z.output<typeof statusFile>[];
  truncated: boolean;
  aheadBehind?: [number, number];
} {
  const records = text.split('\0');
  let head: string | null = null;
  let aheadBehind: [number, number] | undefined;
  const files: z.output<typeof statusFile>[] = [];
  let truncated = false;
  for (let i = 0; i < records.length; i++) {
    const rec = records[i]!;
    if (rec === '') continue;
    if (rec.startsWith('# branch.oid ')) {
      const oid = rec.slice('# branch.oid '.length);
      head = oid === '(initial)' ? null : oid;
      continue;
    }
    const ab = withAheadBehind ? /^# branch\.ab \+(\d+) -(\d+)$/.exec(rec) : null;
    if (ab) {
      aheadBehind = [Number(ab[1]), Number(ab[2])];
      continue;
    }
    if (rec.startsWith('#')) continue;
    if (files.length >= MAX_STATUS_FILES) {
      truncated = true;
      break;
    }
    const type = rec[0];
    if (type === '?') files.push({ path: rec.slice(2), kind: 'untracked', index: '?', workTree: '?' });
    else if (type === '1' || type === '2' || type === 'u') {
      const fieldCount = type === '1' ? 8 : type === '2' ? 9 : 10;
      const parts = rec.split(' ');
      const xy = parts[1] ?? '..';
      const filePath = parts.slice(fieldCount).join(' ');
      const entry: z.output<typeof statusFile> = {
        path: filePath,
        kind: type === '1' ? 'changed' : type === '2' ? 'renamed' : 'unmerged',
        index: xy[0] ?? '.',
        workTree: xy[1] ?? '.',
      };
      if (type === '2') entry.origPath = records[++i] ?? '';
      files.push(entry);
    }
  }
  return { head, files, truncated, ...(aheadBehind ? { aheadBehind } : {}) };
}

// ---------------------------------------------------------------------------------------------

const DIFF_FLAGS = ['--no-color', '--no-ext-diff', '--no-textconv', '--ignore-submodules=all'];

export const gitDiff = defineGitTool({
  name: 'git_diff',
  title: 'Git diff',
  description:
    'Unified diff of the work tree against the index (default), of the index against HEAD (staged: true), or against a commit (ref). Optional paths limit it. Capped at 256 KiB.',
  input: z
    .object({
      workspace: workspaceArg,
      ref: refArg.optional().describe('Commit to compare against (branch, tag, sha, HEAD~1)'),
      staged: z.boolean().optional().describe('Compare the index (staged changes) instead of the work tree'),
      paths: z.array(pathArg).max(1000).optional().describe('Work-tree-relative paths to limit the diff to'),
    })
    .strict(),
  output: z.object({ diff: z.string(), truncated: truncatedField }),
  options: noOptionsSchema,
  annotations: READ_ONLY,
  authorize: authorizeWorkspace,
  async run(args, ctx) {
    const git = await openWorkspace(ctx, args.workspace);
    const commit = args.ref !== undefined ? await git.resolveCommit(args.ref) : undefined;
    const paths = args.paths ? await git.resolvePaths(args.paths) : [];
    const argv = ['diff', ...DIFF_FLAGS];
    if (args.staged) argv.push('--cached');
    if (commit) argv.push(commit);
    argv.push('--', ...paths);
    const r = await git.run(argv, { readOnly: true, maxOutputBytes: MAX_OUTPUT_BYTES });
    const diff = git.scrub(r.stdout.toString('utf8'));
    return {
      structured: { diff, truncated: r.truncated },
      text: (diff || 'no differences') + truncationNote(r.truncated),
    };
  },
});

// ---------------------------------------------------------------------------------------------

const commitSummary = z.object({
  sha,
  author: z.string(),
  email: z.string(),
  date: z.string(),
  subject: z.string(),
});
// NUL separates fields (and, with -z, commits): git never prints a NUL inside a name, email or
// message, so a hostile commit message cannot forge extra entries the way a printable (or
// control-character) separator could be imitated.
const NUL = '\0';
const LOG_FIELDS = 5;

export const gitLog = defineGitTool({
  name: 'git_log',
  title: 'Git log',
  description:
    'Commits reachable from ref (default HEAD), newest first: sha, author, date, subject. maxCount defaults to 20 (max 500).',
  input: z
    .object({
      workspace: workspaceArg,
      ref: refArg.optional(),
      maxCount: z.number().int().min(1).max(500).optional(),
    })
    .strict(),
  output: z.object({ commits: z.array(commitSummary), truncated: truncatedField }),
  options: noOptionsSchema,
  annotations: READ_ONLY,
  authorize: authorizeWorkspace,
  async run(args, ctx) {
    const git = await openWorkspace(ctx, args.workspace);
    const commit = args.ref !== undefined ? await git.resolveCommit(args.ref) : await git.refSha('HEAD');
    if (!commit) return { structured: { commits: [], truncated: false }, text: 'no commits yet' };
    const r = await git.run(
      [
        'log',
        '--no-color',
        `--max-count=${args.maxCount ?? 20}`,
        '-z',
        '--format=%H%x00%an%x00%ae%x00%aI%x00%s',
        commit,
        '--',
      ],
      { readOnly: true, maxOutputBytes: MAX_OUTPUT_BYTES },
    );
    const commits: z.output<typeof commitSummary>[] = [];
    const fields = git.scrub(r.stdout.toString('utf8')).split(NUL);
    // Whole commits only: a truncated tail (or the empty string after a final NUL) is dropped.
    for (let i = 0; i + LOG_FIELDS <= fields.length; i += LOG_FIELDS) {
      const [shaField, author, email, date, subject] = fields.slice(i, i + LOG_FIELDS) as [
        string,
        string,
        string,
        string,
        string,
      ];
      if (r.truncated && i + LOG_FIELDS === fields.length) break; // the last one may be cut
      if (!/^[0-9a-f]{40,64}$/.test(shaField)) break;
      commits.push({ sha: shaField, author, email, date, subject });
    }
    return {
      structured: { commits, truncated: r.truncated },
      text:
        commits.map((c) => `${c.sha.slice(0, 12)} ${c.date} ${c.author}: ${c.subject}`).join('\n') +
        truncationNote(r.truncated),
    };
  },
});

// ---------------------------------------------------------------------------------------------

export const gitShow = defineGitTool({
  name: 'git_show',
  title: 'Git show',
  description: 'One commit: sha, author, date, full message and its patch (capped at 256 KiB).',
  input: z.object({ workspace: workspaceArg, ref: refArg }).strict(),
  output: z.object({
    sha,
    author: z.string(),
    email: z.string(),
    date: z.string(),
    message: z.string(),
    diff: z.string(),
    truncated: truncatedField,
  }),
  options: noOptionsSchema,
  annotations: READ_ONLY,
  authorize: authorizeWorkspace,
  async run(args, ctx) {
    const git = await openWorkspace(ctx, args.workspace);
    const commit = await git.resolveCommit(args.ref);
    const r = await git.run(
      ['show', ...DIFF_FLAGS, '--patch', '--format=%H%x00%an%x00%ae%x00%aI%x00%B%x00', commit, '--'],
      { readOnly: true, maxOutputBytes: MAX_OUTPUT_BYTES },
    );
    const out = git.scrub(r.stdout.toString('utf8'));
    // Five NUL-terminated header fields, then the patch (which may hold NULs of its own).
    const header: string[] = [];
    let at = 0;
    while (header.length < LOG_FIELDS) {
      const end = out.indexOf(NUL, at);
      if (end < 0) break;
      header.push(out.slice(at, end));
      at = end + 1;
    }
    const diff = header.length === LOG_FIELDS ? out.slice(at).replace(/^\n+/, '') : '';
    const [shaField = commit, author = '', email = '', date = '', message = ''] = header;
    return {
      structured: {
        sha: shaField,
        author,
        email,
        date,
        message: message.trimEnd(),
        diff,
        truncated: r.truncated,
      },
      text: `commit ${shaField}\nAuthor: ${author} <${email}>\nDate:   ${date}\n\n${message.trimEnd()}\n\n${diff}${truncationNote(r.truncated)}`,
    };
  },
});

// ---------------------------------------------------------------------------------------------

export const gitBranchList = defineGitTool({
  name: 'git_branch_list',
  title: 'List git branches',
  description: 'Local branches (marking the current one) and remote branches as of the last fetch.',
  input: z.object({ workspace: workspaceArg }).strict(),
  output: z.object({
    current: z.string().nullable(),
    local: z.array(z.object({ name: z.string(), sha, current: z.boolean() })),
    remote: z.array(z.object({ name: z.string(), sha })),
  }),
  options: noOptionsSchema,
  annotations: READ_ONLY,
  authorize: authorizeWorkspace,
  async run(args, ctx) {
    const git = await openWorkspace(ctx, args.workspace);
    const current = (await currentBranch(git)) ?? null;
    const local: { name: string; sha: string; current: boolean }[] = [];
    const remote: { name: string; sha: string }[] = [];
    for (const [ref, oid] of await listRefs(git, 'refs/heads/', TRACKING_PREFIX)) {
      if (ref.startsWith('refs/heads/')) {
        const name = ref.slice('refs/heads/'.length);
        local.push({ name, sha: oid, current: name === current });
      } else if (ref.startsWith(TRACKING_PREFIX)) {
        remote.push({ name: ref.slice(TRACKING_PREFIX.length), sha: oid });
      }
    }
    const text = [
      ...local.map((b) => `${b.current ? '*' : ' '} ${b.name} ${b.sha.slice(0, 12)}`),
      ...remote.map((b) => `  origin/${b.name} ${b.sha.slice(0, 12)}`),
    ].join('\n');
    return { structured: { current, local, remote }, text: text || 'no branches yet' };
  },
});

// ---------------------------------------------------------------------------------------------

export const gitCreateBranch = defineGitTool({
  name: 'git_create_branch',
  title: 'Create a git branch',
  description:
    'Creates a local branch at from (a commit, default HEAD) without switching to it. Fails if it exists.',
  input: z
    .object({ workspace: workspaceArg, name: z.string().min(1).max(200), from: refArg.optional() })
    .strict(),
  output: z.object({ name: z.string(), sha }),
  options: noOptionsSchema,
  annotations: writes(),
  authorize: authorizeWorkspace,
  async run(args, ctx) {
    const git = await openWorkspace(ctx, args.workspace);
    await git.checkBranchName(args.name);
    return withLock(git.ws.gitDir, async () => {
      const commit = await git.resolveCommit(args.from ?? 'HEAD', 'from');
      // update-ref with an all-zero old value: creates, never moves an existing branch.
      const r = await git.run(
        ['update-ref', '--create-reflog', `refs/heads/${args.name}`, commit, '0'.repeat(commit.length)],
        {
          allowFailure: true,
        },
      );
      if (r.code !== 0) throw new ToolError(`branch "${args.name}" already exists`, 'invalid');
      return {
        structured: { name: args.name, sha: commit },
        text: `created branch ${args.name} at ${commit.slice(0, 12)}`,
      };
    });
  },
});

// ---------------------------------------------------------------------------------------------

export const gitCheckout = defineGitTool({
  name: 'git_checkout',
  title: 'Switch git branch',
  description:
    'Switches the work tree to a local branch; a branch that exists only on the remote (as of the last fetch) is created from it. Refuses to overwrite uncommitted changes.',
  input: z.object({ workspace: workspaceArg, branch: z.string().min(1).max(200) }).strict(),
  output: z.object({ branch: z.string(), sha, created: z.boolean() }),
  options: noOptionsSchema,
  annotations: writes({ idempotentHint: true }),
  authorize: authorizeWorkspace,
  async run(args, ctx) {
    const git = await openWorkspace(ctx, args.workspace);
    await git.checkBranchName(args.branch);
    return withLock(git.ws.gitDir, async () => {
      const local = await git.refSha(`refs/heads/${args.branch}`);
      let created = false;
      if (local) {
        await git.run(['switch', '--quiet', '--no-guess', args.branch]);
      } else {
        const tracking = await git.refSha(`${TRACKING_PREFIX}${args.branch}`);
        if (!tracking)
          throw new ToolError(
            `no branch "${args.branch}" locally or on the remote (fetch first?)`,
            'invalid',
          );
        await git.run(['switch', '--quiet', '--no-track', '--create', args.branch, tracking]);
        created = true;
      }
      const head = (await git.refSha('HEAD')) ?? '';
      return {
        structured: { branch: args.branch, sha: head, created },
        text: `switched to ${created ? 'new ' : ''}branch ${args.branch} at ${head.slice(0, 12)}`,
      };
    });
  },
});

// ---------------------------------------------------------------------------------------------

export const gitAdd = defineGitTool({
  name: 'git_add',
  title: 'Stage files',
  description:
    'Stages the given work-tree-relative paths (new, modified and deleted files; "." for everything).',
  input: z.object({ workspace: workspaceArg, paths: z.array(pathArg).min(1).max(1000) }).strict(),
  output: z.object({ staged: z.array(z.string()), truncated: truncatedField }),
  options: noOptionsSchema,
  annotations: writes({ idempotentHint: true }),
  authorize: authorizeWorkspace,
  async run(args, ctx) {
    const git = await openWorkspace(ctx, args.workspace);
    const paths = await git.resolvePaths(args.paths);
    return withLock(git.ws.gitDir, async () => {
      await git.run(['add', '--', ...paths]);
      const r = await git.run(
        ['diff', '--cached', '--name-only', '-z', '--no-renames', '--ignore-submodules=all'],
        {
          maxOutputBytes: MAX_OUTPUT_BYTES,
        },
      );
      const staged = r.stdout.toString('utf8').split('\0').filter(Boolean);
      if (r.truncated) staged.pop();
      return {
        structured: { staged, truncated: r.truncated },
        text: staged.length
          ? `staged:\n${staged.join('\n')}${truncationNote(r.truncated)}`
          : 'nothing staged',
      };
    });
  },
});

// ---------------------------------------------------------------------------------------------

export const gitCommit = defineGitTool({
  name: 'git_commit',
  title: 'Commit staged changes',
  description:
    "Commits the staged changes with the given message. Author and committer are the workspace policy's author.",
  input: z
    .object({
      workspace: workspaceArg,
      message: z
        .string()
        .min(1)
        .max(64 * 1024),
    })
    .strict(),
  output: z.object({ sha, branch: z.string().nullable(), subject: z.string() }),
  options: noOptionsSchema,
  annotations: writes(),
  authorize: authorizeWorkspace,
  async run(args, ctx) {
    if (args.message.includes('\0')) throw new ToolError('commit message must not contain NUL', 'invalid');
    if (args.message.trim() === '') throw new ToolError('commit message is empty', 'invalid');
    const git = await openWorkspace(ctx, args.workspace);
    return withLock(git.ws.gitDir, async () => {
      const staged = await git.run(['diff', '--cached', '--quiet', '--ignore-submodules=all'], {
        allowFailure: true,
      });
      if (staged.code === 0) throw new ToolError('nothing staged to commit (use git_add first)');
      // The message goes in on stdin: it is never an argument, and no editor is ever started.
      await git.run(['commit', '--quiet', '--no-verify', '--cleanup=strip', '--file=-'], {
        input: args.message,
      });
      const head = (await git.refSha('HEAD')) ?? '';
      const branch = (await currentBranch(git)) ?? null;
      const subject = args.message.trim().split('\n')[0] ?? '';
      return {
        structured: { sha: head, branch, subject },
        text: `[${branch ?? 'detached HEAD'} ${head.slice(0, 12)}] ${subject}`,
      };
    });
  },
});

// ---------------------------------------------------------------------------------------------

/** Remote branch name → commit, as of the last fetch. */
async function trackingRefs(git: WorkspaceGit): Promise<Map<string, string>> {
  const refs = await listRefs(git, TRACKING_PREFIX);
  return new Map(refs.map(([ref, oid]) => [ref.slice(TRACKING_PREFIX.length), oid]));
}

/** Fetch from the policy remote (never a configured remote) into refs/remotes/origin/. */
async function fetchFromPolicyRemote(git: WorkspaceGit, refspec: string): Promise<void> {
  await git.run(
    [
      'fetch',
      '--quiet',
      '--prune',
      '--no-tags',
      '--no-write-fetch-head',
      '--recurse-submodules=no',
      '--end-of-options',
      git.ws.policy.remote,
      refspec,
    ],
    {
      network: true,
    },
  );
}

export const gitFetch = defineGitTool({
  name: 'git_fetch',
  title: 'Fetch from the remote',
  description:
    "Fetches every branch of the workspace's policy remote into origin/* (no tags) and reports what moved.",
  input: z.object({ workspace: workspaceArg }).strict(),
  output: z.object({
    remote: z.string(),
    updated: z.array(
      z.object({ branch: z.string(), old: z.string().nullable(), new: z.string().nullable() }),
    ),
  }),
  options: noOptionsSchema,
  annotations: writes({ idempotentHint: true, openWorldHint: true }),
  authorize: authorizeWorkspace,
  async run(args, ctx) {
    const git = await openWorkspace(ctx, args.workspace);
    return withLock(git.ws.gitDir, async () => {
      const before = await trackingRefs(git);
      await fetchFromPolicyRemote(git, `+refs/heads/*:${TRACKING_PREFIX}*`);
      const after = await trackingRefs(git);
      const updated: { branch: string; old: string | null; new: string | null }[] = [];
      for (const name of new Set([...before.keys(), ...after.keys()])) {
        const [o, n] = [before.get(name) ?? null, after.get(name) ?? null];
        if (o !== n) updated.push({ branch: name, old: o, new: n });
      }
      return {
        structured: { remote: git.ws.policy.remote, updated },
        text: updated.length
          ? updated
              .map(
                (u) =>
                  `origin/${u.branch}: ${u.old?.slice(0, 12) ?? '(new)'} -> ${u.new?.slice(0, 12) ?? '(deleted)'}`,
              )
              .join('\n')
          : 'already up to date',
      };
    });
  },
});

// ---------------------------------------------------------------------------------------------

export const gitPull = defineGitTool({
  name: 'git_pull',
  title: 'Pull the current branch',
  description:
    'Fetches the current branch from the policy remote and fast-forwards to it (a merge commit only if the policy allows merges).',
  input: z.object({ workspace: workspaceArg }).strict(),
  output: z.object({
    branch: z.string(),
    from: z.string().nullable(),
    to: z.string(),
    result: z.enum(['up-to-date', 'fast-forward', 'merge']),
  }),
  options: pullOptionsSchema,
  annotations: writes({ openWorldHint: true }),
  authorize: authorizeWorkspace,
  async run(args, ctx) {
    const git = await openWorkspace(ctx, args.workspace);
    return withLock(git.ws.gitDir, async () => {
      // Read under the lock: a git_checkout queued before us may switch branches first.
      const branch = await currentBranch(git);
      if (!branch) throw new ToolError('HEAD is detached; switch to a branch first', 'invalid');
      await fetchFromPolicyRemote(git, `+refs/heads/${branch}:${TRACKING_PREFIX}${branch}`);
      const target = await git.refSha(`${TRACKING_PREFIX}${branch}`);
      if (!target) throw new ToolError(`the remote has no branch "${branch}"`);
      const from = (await git.refSha('HEAD')) ?? null;
      if (from === target) {
        return {
          structured: { branch, from, to: target, result: 'up-to-date' as const },
          text: `${branch} is up to date`,
        };
      }
      const ff =
        from === null ||
        (await git.run(['merge-base', '--is-ancestor', from, target], { allowFailure: true })).code === 0;
      if (!ff && !ctx.options.merge) {
        throw new ToolError(
          `${branch} has diverged from the remote and the policy allows fast-forward pulls only`,
          'denied',
          'git.tools.git_pull.merge',
        );
      }
      const mergeArgs = ['merge', '--quiet', '--no-edit', '--no-verify', '--no-stat'];
      mergeArgs.push(ff ? '--ff-only' : '--no-ff', target);
      const r = await git.run(mergeArgs, { allowFailure: true });
      if (r.code !== 0) {
        // Leave the work tree as it was, never half-merged.
        await git.run(['merge', '--abort'], { allowFailure: true });
        throw new ToolError(
          `git merge failed (merge aborted): ${lastLines(r.stderr) || lastLines(r.stdout.toString('utf8'))}`,
        );
      }
      const to = (await git.refSha('HEAD')) ?? target;
      const result = ff ? ('fast-forward' as const) : ('merge' as const);
      return {
        structured: { branch, from, to, result },
        text: `${branch}: ${result} ${from?.slice(0, 12) ?? '(empty)'} -> ${to.slice(0, 12)}`,
      };
    });
  },
});

// ---------------------------------------------------------------------------------------------

const TAG_PREFIX = 'refs/tags/';

export const gitPush = defineGitTool({
  name: 'git_push',
  title: 'Push a branch',
  description:
    'Pushes local branch `branch` to the same branch of the policy remote. force (if the policy allows) is --force-with-lease against the last fetch; delete removes the remote branch (if allowed); branch "refs/tags/<name>" pushes a tag (if allowed).',
  input: z
    .object({
      workspace: workspaceArg,
      branch: z.string().min(1).max(200),
      force: z.boolean().optional(),
      delete: z.boolean().optional().describe('Delete the remote branch instead of pushing'),
    })
    .strict(),
  output: z.object({
    ref: z.string(),
    remote: z.string(),
    pushed: z.boolean(),
    forced: z.boolean(),
    deleted: z.boolean(),
    sha: z.string().nullable(),
    summary: z.string(),
    remoteMessages: z.string().describe('Lines the remote sent back ("remote: …"), e.g. why it refused'),
  }),
  options: pushOptionsSchema,
  annotations: writes({ destructiveHint: true, openWorldHint: true }),
  approvalConditions: {
    branches: globCondition(
      'Branches (or refs/tags/<name>) whose push waits for approval',
      (a: { branch: string }) => a.branch,
    ),
    workspaces: globCondition(
      'Workspaces whose pushes wait for approval',
      (a: { workspace: string }) => a.workspace,
    ),
  },
  authorize(args, ctx) {
    const ws = authorizeWorkspace(args, ctx);
    if (!ws.allow) return ws;
    const options = ctx.options;
    const isTag = args.branch.startsWith(TAG_PREFIX);
    if (isTag) {
      if (!options.tags) return deny('git.tools.git_push.tags', 'pushing tags is not allowed by the policy');
    } else if (!matchAny(options.branches, args.branch)) {
      return deny(
        'git.tools.git_push.branches',
        options.branches.length
          ? `branch "${args.branch}" matches none of ${options.branches.map((b) => `"${b}"`).join(', ')}`
          : 'the policy lists no branches to push to',
      );
    }
    if (args.force && !options.force)
      return deny('git.tools.git_push.force', 'force pushes are not allowed by the policy');
    if (args.delete && !options.delete)
      return deny('git.tools.git_push.delete', 'deleting remote branches is not allowed by the policy');
    return allow(isTag ? 'git.tools.git_push.tags' : 'git.tools.git_push.branches');
  },
  async run(args, ctx) {
    const git = await openWorkspace(ctx, args.workspace);
    const isTag = args.branch.startsWith(TAG_PREFIX);
    let ref: string;
    if (isTag) {
      const tag = args.branch.slice(TAG_PREFIX.length);
      if (!tag || tag.startsWith('-')) throw new ToolError(`invalid tag name "${tag}"`, 'invalid');
      await git.checkRefFormat(args.branch, `tag "${tag}"`);
      ref = args.branch;
    } else {
      await git.checkBranchName(args.branch);
      ref = `refs/heads/${args.branch}`;
    }
    const remote = git.ws.policy.remote;
    return withLock(git.ws.gitDir, async () => {
      const local = args.delete ? undefined : await git.refSha(ref);
      if (!args.delete && !local)
        throw new ToolError(`no local ${isTag ? 'tag' : 'branch'} "${args.branch}" to push`, 'invalid');
      const tracking = isTag ? undefined : `${TRACKING_PREFIX}${args.branch}`;
      const argv = ['push', '--porcelain', '--no-verify', '--recurse-submodules=no', '--no-follow-tags'];
      if (args.force || args.delete) {
        // The lease is our last fetch: a force push never clobbers commits we have not seen.
        const expected = tracking ? ((await git.refSha(tracking)) ?? '') : '';
        argv.push(`--force-with-lease=${ref}:${expected}`);
      }
      // Our own refspec from validated names: the local commit id onto the remote ref.
      argv.push('--end-of-options', remote, args.delete ? `:${ref}` : `${local}:${ref}`);
      const r = await git.run(argv, { network: 'write', allowFailure: true });
      const out = git.scrub(r.stdout.toString('utf8'));
      const line = out.split('\n').find((l) => /^[ +\-*=!]\t/.test(l) && l.includes(`\t`));
      const flag = line?.[0];
      const summary = (line?.split('\t')[2] ?? '').trim();
      if (r.code !== 0 && flag !== '!') {
        throw new ToolError(`git push failed: ${lastLines(r.stderr) || 'no output'}`);
      }
      const pushed = r.code === 0 && flag !== '!';
      if (pushed && tracking) {
        // Record what the remote now has (an explicit URL push updates no tracking ref).
        if (args.delete) await git.run(['update-ref', '-d', tracking], { allowFailure: true });
        else if (local) await git.run(['update-ref', tracking, local]);
      }
      const structured = {
        ref,
        remote,
        pushed,
        forced: pushed && flag === '+',
        deleted: pushed && !!args.delete,
        sha: local ?? null,
        summary: summary || (pushed ? 'done' : 'rejected'),
        remoteMessages: r.stderr
          .split('\n')
          .filter((l) => l.startsWith('remote:'))
          .join('\n')
          .slice(0, 16 * 1024),
      };
      const text = pushed
        ? `pushed ${args.delete ? `deletion of ${ref}` : `${local?.slice(0, 12)} to ${ref}`} (${structured.summary})`
        : `push of ${ref} rejected: ${structured.summary}${structured.remoteMessages ? `\n${structured.remoteMessages}` : ''}`;
      return { structured, text };
    });
  },
});

export const gitTools = [
  gitStatus,
  gitDiff,
  gitLog,
  gitShow,
  gitBranchList,
  gitCreateBranch,
  gitCheckout,
  gitAdd,
  gitCommit,
  gitFetch,
  gitPull,
  gitPush,
];
