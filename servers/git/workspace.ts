// One policy workspace as the git tools use it: the agent's work tree (content only) paired with
// a host-owned git dir under `<stateDir>/git/<team>/<workspace>.git`. Git always runs with an
// explicit --git-dir and --work-tree, so a `.git` folder or file, or a nested repository the
// agent plants in the work tree, is never used as git metadata.
import { randomBytes } from 'node:crypto';
import { constants, promises as fs, realpathSync } from 'node:fs';
import path from 'node:path';
import { Redactor } from '../../src/secrets/redact.js';
import { ToolError, type ToolContext } from '../../src/tool.js';
import type { GitSection, WorkspacePolicy } from './policy.js';
import { GitAbortError, gitEnv, runGit, type GitRunResult } from './runner.js';
import { githubRepoOfRemote } from '../../src/secrets/github-app.js';

export const LOCAL_TIMEOUT_MS = 60_000;
export const NETWORK_TIMEOUT_MS = 10 * 60_000;
/**
 * A transfer that moves no byte for this long is abandoned (curl's low-speed limit): a remote
 * that stalls mid-pack is an error after seconds, not a call held for NETWORK_TIMEOUT_MS.
 */
export const NETWORK_STALL_SECONDS = 20;
const STALL_CONFIG = { 'http.lowSpeedLimit': '1', 'http.lowSpeedTime': String(NETWORK_STALL_SECONDS) };

/** Remote-tracking refs live here; there is no configured remote (the URL comes from policy). */
export const TRACKING_PREFIX = 'refs/remotes/origin/';

export type GitToolContext = ToolContext<GitSection, unknown, unknown>;

export interface Workspace {
  name: string;
  policy: WorkspacePolicy;
  /** Real path of the work tree. */
  workTree: string;
  gitDir: string;
  home: string;
  protocol: 'https' | 'http';
  ctx: GitToolContext;
}

export interface RunOpts {
  input?: string;
  maxOutputBytes?: number;
  /**
   * Network command: gets the credential header and the network timeout. `'write'` for a push
   * (a GitHub App credential is then minted with contents: write, else contents: read).
   */
  network?: true | 'write';
  readOnly?: boolean;
  /** Resolve instead of throwing on a non-zero exit. */
  allowFailure?: boolean;
  gitDir?: string;
  /** Run without a work tree (init, fetch into a fresh git dir). */
  noWorkTree?: boolean;
}

/** Subcommands that write files into the work tree (run with umask 002; see GitRunOptions.umask). */
const WORK_TREE_WRITERS = new Set(['reset', 'switch', 'checkout', 'checkout-index', 'merge', 'restore']);

// ---------------------------------------------------------------------------------------------
// Per-git-dir serialisation: two writes to one index at once would fail on index.lock.

const locks = new Map<string, Promise<unknown>>();

export async function withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const previous = locks.get(key) ?? Promise.resolve();
  const next = previous.then(fn, fn);
  const settled = next.then(
    () => undefined,
    () => undefined,
  );
  locks.set(key, settled);
  try {
    return await next;
  } finally {
    if (locks.get(key) === settled) locks.delete(key);
  }
}

// ---------------------------------------------------------------------------------------------

function subcommand(args: readonly string[]): string {
  return args.find((a) => !a.startsWith('-')) ?? 'git';
}

/** The last lines of git's stderr, for an error message. Already redacted by the runner. */
function stderrSummary(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.length > 0 && !l.startsWith('hint:'));
  return lines.slice(-6).join('\n') || 'no output';
}

export class WorkspaceGit {
  private credentialRedactor: Redactor | undefined;

  constructor(readonly ws: Workspace) {}

  /** Fetches the credential (network commands only) and registers it for scrubbing. */
  private async networkConfig(
    access: true | 'write',
  ): Promise<{ envConfig: Record<string, string>; redactor: Redactor }> {
    const redactor = this.credentialRedactor ?? new Redactor();
    this.credentialRedactor = redactor;
    const { credential, credentialUser, remote, githubApiUrl } = this.ws.policy;
    if (!credential) return { envConfig: { ...STALL_CONFIG }, redactor };
    const secrets = this.ws.ctx.secrets;
    // A githubApp secret yields a token for this remote's repository alone (asked for only then).
    const appScope = () => {
      const repo = githubRepoOfRemote(remote, githubApiUrl);
      if ('problem' in repo) throw new ToolError(repo.problem);
      return { ...repo, permissions: { contents: access === 'write' ? 'write' : 'read' } as const };
    };
    const token = secrets.githubToken
      ? await secrets.githubToken(credential, appScope)
      : await secrets.get(credential);
    redactor.add(token);
    const basic = Buffer.from(`${credentialUser}:${token}`, 'utf8').toString('base64');
    redactor.add(basic);
    // Through the environment of this one child (GIT_CONFIG_COUNT), never argv, a URL or a file.
    // Sent on every request of this command — only to the policy remote, since redirects are off.
    return {
      envConfig: { ...STALL_CONFIG, 'http.extraHeader': `Authorization: Basic ${basic}` },
      redactor,
    };
  }

  /** Scrubs the credential from text that came out of a network command. */
  scrub(text: string): string {
    return this.credentialRedactor ? this.credentialRedactor.scrub(text) : text;
  }

  async run(args: readonly string[], opts: RunOpts = {}): Promise<GitRunResult> {
    const ws = this.ws;
    const net = opts.network ? await this.networkConfig(opts.network) : undefined;
    const env = gitEnv({
      home: ws.home,
      protocol: ws.protocol,
      author: ws.policy.author,
      envConfig: net?.envConfig,
      noOptionalLocks: opts.readOnly,
    });
    let result: GitRunResult;
    try {
      result = await runGit({
        gitDir: opts.gitDir ?? ws.gitDir,
        workTree: opts.noWorkTree ? undefined : ws.workTree,
        cwd: opts.noWorkTree ? ws.home : ws.workTree,
        args,
        env,
        protocol: ws.protocol,
        input: opts.input,
        maxOutputBytes: opts.maxOutputBytes,
        signal: ws.ctx.signal,
        timeoutMs: opts.network ? NETWORK_TIMEOUT_MS : LOCAL_TIMEOUT_MS,
        redactor: net?.redactor ?? this.credentialRedactor,
        umask: !opts.noWorkTree && WORK_TREE_WRITERS.has(args[0] ?? '') ? 0o002 : undefined,
        // Every command that sees the work tree runs where symlinks in it cannot be followed.
        confineTo: opts.noWorkTree ? undefined : ws.workTree,
      });
    } catch (err) {
      if (err instanceof GitAbortError) {
        throw new ToolError(
          err.why === 'timeout'
            ? `git ${subcommand(args)} timed out`
            : `git ${subcommand(args)} was cancelled`,
        );
      }
      throw err;
    }
    if (result.code !== 0 && !result.truncated && !opts.allowFailure) {
      const summary = this.hideHostPaths(this.scrub(stderrSummary(result.stderr)));
      throw new ToolError(`git ${subcommand(args)} failed: ${summary}`);
    }
    return result;
  }

  /** Git names host paths in its errors (a lock file in the git dir); the agent gets placeholders. */
  private hideHostPaths(text: string): string {
    const { gitDir, home, workTree, ctx } = this.ws;
    const places: Array<[string, string]> = [
      [gitDir, '<git dir>'],
      [home, '<git home>'],
      [ctx.stateDir, '<state>'],
      [workTree, '<work tree>'],
    ];
    for (const [place, name] of places.sort((a, b) => b[0].length - a[0].length))
      text = text.split(place).join(name);
    return text;
  }

  async text(args: readonly string[], opts: RunOpts = {}): Promise<string> {
    return this.scrub((await this.run(args, opts)).stdout.toString('utf8'));
  }

  // -------------------------------------------------------------------------------------------
  // Argument validation. Every agent-given ref or path passes through one of these.

  /**
   * Resolves a revision to a commit id with `rev-parse --verify --end-of-options`. The id (never
   * the agent's text) is what later commands see.
   */
  async resolveCommit(ref: string, what = 'ref'): Promise<string> {
    refSyntax(ref, what);
    const r = await this.run(['rev-parse', '--verify', '--quiet', '--end-of-options', `${ref}^{commit}`], {
      allowFailure: true,
      readOnly: true,
    });
    const sha = r.stdout.toString('utf8').trim();
    if (r.code !== 0 || !/^[0-9a-f]{40,64}$/.test(sha)) {
      throw new ToolError(`${what} "${ref}" does not name a commit in workspace ${this.ws.name}`, 'invalid');
    }
    return sha;
  }

  /** The object a full ref name points to, or undefined. `ref` is built by us (validated names). */
  async refSha(ref: string): Promise<string | undefined> {
    const r = await this.run(['rev-parse', '--verify', '--quiet', '--end-of-options', ref], {
      allowFailure: true,
      readOnly: true,
    });
    const sha = r.stdout.toString('utf8').trim();
    return r.code === 0 && sha ? sha : undefined;
  }

  /** Validates a branch name with `git check-ref-format` (plus our own stricter rules). */
  async checkBranchName(name: string, what = 'branch'): Promise<void> {
    if (typeof name !== 'string' || name.length === 0 || name.length > 200) {
      throw new ToolError(`${what} name must be 1–200 characters`, 'invalid');
    }
    if (name.startsWith('-'))
      throw new ToolError(`${what} name "${name}" must not start with "-"`, 'invalid');
    if (name.startsWith('refs/') || name === 'HEAD' || name.includes('@{')) {
      throw new ToolError(`${what} name "${name}" is not a plain branch name`, 'invalid');
    }
    await this.checkRefFormat(`refs/heads/${name}`, `${what} name "${name}"`);
  }

  async checkRefFormat(fullRef: string, label: string): Promise<void> {
    const r = await this.run(['check-ref-format', fullRef], { allowFailure: true, readOnly: true });
    if (r.code !== 0) throw new ToolError(`${label} is not a valid git ref name`, 'invalid');
  }

  /**
   * Resolves agent-given paths to work-tree-relative paths that stay inside the work tree, with
   * symlinks resolved, and never inside `.git`. They are passed after `--` and taken literally.
   */
  async resolvePaths(paths: readonly string[]): Promise<string[]> {
    const out: string[] = [];
    for (const p of paths) out.push(await resolveWorkTreePath(this.ws.workTree, p));
    return out;
  }
}

/** Rejects revision text that could be read as an option or that git would never accept. */
export function refSyntax(ref: string, what = 'ref'): void {
  if (typeof ref !== 'string' || ref.length === 0 || ref.length > 256) {
    throw new ToolError(`${what} must be 1–256 characters`, 'invalid');
  }
  if (ref.startsWith('-')) throw new ToolError(`${what} "${ref}" must not start with "-"`, 'invalid');
  if (/[\0-\x20\x7f]/.test(ref))
    throw new ToolError(`${what} contains whitespace or a control character`, 'invalid');
}

function isInside(root: string, candidate: string): boolean {
  return candidate === root || candidate.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
}

function hasGitSegment(rel: string): boolean {
  return rel.split(/[\\/]/).some((seg) => seg.toLowerCase() === '.git');
}

/** Real path of the longest existing prefix of `full`, with the missing rest appended. */
async function realpathExisting(full: string): Promise<string> {
  const rest: string[] = [];
  let current = full;
  for (;;) {
    try {
      const real = await fs.realpath(current);
      return rest.length ? path.join(real, ...rest.reverse()) : real;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err;
      const parent = path.dirname(current);
      if (parent === current) return full;
      rest.push(path.basename(current));
      current = parent;
    }
  }
}

export async function resolveWorkTreePath(workTree: string, p: string): Promise<string> {
  if (typeof p !== 'string' || p.length === 0 || p.length > 4096) {
    throw new ToolError('a path must be 1–4096 characters', 'invalid');
  }
  if (p.includes('\0')) throw new ToolError('a path must not contain NUL', 'invalid');
  if (p.startsWith('-'))
    throw new ToolError(`path "${p}" must not start with "-" (write "./${p}")`, 'invalid');
  if (path.isAbsolute(p))
    throw new ToolError(`path "${p}" is absolute; give a path relative to the work tree`, 'invalid');
  const normalized = path.posix.normalize(p.replace(/\/+$/, '') || '.');
  if (normalized === '..' || normalized.startsWith('../')) {
    throw new ToolError(`path "${p}" escapes the work tree`, 'invalid');
  }
  if (hasGitSegment(normalized)) {
    throw new ToolError(`path "${p}" is inside .git: git metadata is host-owned, not content`, 'invalid');
  }
  const real = await realpathExisting(path.join(workTree, normalized));
  if (!isInside(workTree, real)) {
    throw new ToolError(`path "${p}" resolves outside the work tree (symlink)`, 'invalid');
  }
  if (hasGitSegment(path.relative(workTree, real))) {
    throw new ToolError(
      `path "${p}" resolves inside .git: git metadata is host-owned, not content`,
      'invalid',
    );
  }
  return normalized;
}

// ---------------------------------------------------------------------------------------------
// Opening a workspace (and cloning it on first use).

const initialized = new Set<string>();
const preparedHomes = new Set<string>();

/** When this process started: a git lock file older than that is not one of our gits'. */
const PROCESS_START_MS = Date.now() - process.uptime() * 1000;

/** Lock files git takes while writing (index, HEAD, refs); a killed git leaves them behind. */
async function gitLockFiles(gitDir: string): Promise<string[]> {
  const found = ['index.lock', 'HEAD.lock', 'ORIG_HEAD.lock', 'packed-refs.lock', 'config.lock'].map((f) =>
    path.join(gitDir, f),
  );
  const refs = await fs.readdir(path.join(gitDir, 'refs'), { recursive: true }).catch(() => [] as string[]);
  for (const r of refs) if (r.endsWith('.lock')) found.push(path.join(gitDir, 'refs', r));
  return found;
}

/**
 * A broker killed mid-write (kill -9, OOM, power loss) can leave git's lock files, and git then
 * refuses every later write to that git dir until someone removes them by hand. On this
 * process's first use of a git dir no git of ours can be running on it (every write goes
 * through withLock, and this runs under it), so a lock older than this process is stale.
 */
async function removeStaleLocks(gitDir: string, ctx: GitToolContext): Promise<void> {
  for (const file of await gitLockFiles(gitDir)) {
    const st = await fs.lstat(file).catch(() => undefined);
    if (!st || st.mtimeMs >= PROCESS_START_MS) continue;
    await fs.rm(file, { force: true });
    ctx.log.warn({ team: ctx.team, file }, 'removed a git lock file left by a git that did not finish');
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p, constants.F_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * A missing work tree is created the way the README asks operators to make one: owned like the
 * folder that holds it (the agent's user and group under /srv/agents/<team>), group-writable with
 * the setgid bit, so the agent can write it. Never the root:root folder the agent could not
 * write: a broker running as root refuses when that folder is missing (it would make it root's)
 * or belongs to group root, and says what to run instead (`airlock doctor` reports the same).
 */
async function ensureWorkTree(dir: string, workspace: string, ctx: GitToolContext): Promise<void> {
  if (await exists(dir)) return;
  const parent = path.dirname(dir);
  const owner = await fs.stat(parent).catch(() => undefined);
  const asRoot = process.getuid?.() === 0;
  const problem = !owner
    ? 'nor does the folder that would hold it'
    : !owner.isDirectory()
      ? 'and the path that would hold it is not a folder'
      : asRoot && owner.gid === 0
        ? 'and the folder that holds it belongs to group root, so a work tree made like it would be root-owned'
        : undefined;
  if (problem !== undefined) {
    // The agent sees <work tree>; the host path goes to the operator's log.
    ctx.log.warn(
      { team: ctx.team, workspace, workTree: dir },
      'git work tree does not exist and is not created for the agent; run: install -d -o <agent uid> -g <agent gid> -m 2775 <work tree>',
    );
    throw new ToolError(
      `the <work tree> of workspace "${workspace}" does not exist, ${problem}; the operator must create it for the agent (install -d -o <agent uid> -g <agent gid> -m 2775 <work tree>) or run airlock doctor`,
    );
  }
  try {
    await fs.mkdir(dir, { mode: 0o2775 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return;
    throw err;
  }
  // The mode passed to mkdir is cut by the umask and may drop setgid: set it exactly.
  await fs.chmod(dir, 0o2775);
  if (asRoot) await fs.chown(dir, owner!.uid, owner!.gid);
}

export async function openWorkspace(ctx: GitToolContext, name: string): Promise<WorkspaceGit> {
  const policy = ctx.section.workspaces[name];
  if (!policy || !Object.prototype.hasOwnProperty.call(ctx.section.workspaces, name)) {
    throw new ToolError(`unknown workspace "${name}"`, 'denied', 'git.workspaces');
  }
  const home = path.join(ctx.stateDir, '.home');
  // Both folders once per process (recursive: the state folder too, 0700 like home).
  if (!preparedHomes.has(home)) {
    await fs.mkdir(home, { recursive: true, mode: 0o700 });
    preparedHomes.add(home);
  }
  // The work tree is looked for (and made) only when it cannot be resolved. Resolved synchronously:
  // a host path of a few components, where the threadpool round trip costs every call ~0.1 ms.
  let workTree: string;
  try {
    workTree = realpathSync(policy.path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err;
    await ensureWorkTree(policy.path, name, ctx);
    workTree = await fs.realpath(policy.path);
  }
  const gitDir = path.join(ctx.stateDir, `${name}.git`);
  const protocol = new URL(policy.remote).protocol === 'http:' ? 'http' : 'https';
  const git = new WorkspaceGit({ name, policy, workTree, gitDir, home, protocol, ctx });
  if (!initialized.has(gitDir)) {
    await withLock(gitDir, async () => {
      if (!(await exists(path.join(gitDir, 'HEAD')))) await cloneInto(git);
      else await removeStaleLocks(gitDir, ctx);
    });
    initialized.add(gitDir);
  }
  return git;
}

/**
 * First use: a fresh git dir (no templates, so no sample hooks), the policy remote's branches
 * fetched into refs/remotes/origin/*, the policy branch checked out. Built under a temporary
 * name and renamed into place, so a failed clone leaves nothing half-made. An empty work tree
 * gets the branch's files; a non-empty one keeps its files (the index is set to the branch, so
 * they show up as changes) — Airlock never overwrites what is already there.
 */
async function cloneInto(git: WorkspaceGit): Promise<void> {
  const { gitDir, policy, workTree } = git.ws;
  const tmp = `${gitDir}.init-${randomBytes(6).toString('hex')}`;
  try {
    await git.run(['init', '--quiet', '--bare', '--template=', `--initial-branch=${policy.branch}`, tmp], {
      gitDir: tmp,
      noWorkTree: true,
    });
    await git.run(
      [
        'fetch',
        '--quiet',
        '--no-tags',
        '--no-write-fetch-head',
        '--end-of-options',
        policy.remote,
        `+refs/heads/*:${TRACKING_PREFIX}*`,
      ],
      { gitDir: tmp, network: true, noWorkTree: true },
    );
    const tracking = `${TRACKING_PREFIX}${policy.branch}`;
    const remoteHead = (
      await git.run(['rev-parse', '--verify', '--quiet', '--end-of-options', tracking], {
        gitDir: tmp,
        allowFailure: true,
      })
    ).stdout
      .toString('utf8')
      .trim();
    if (remoteHead) {
      await git.run(['update-ref', `refs/heads/${policy.branch}`, remoteHead], { gitDir: tmp });
      const entries = await fs.readdir(workTree);
      await git.run(['reset', '--quiet', entries.length === 0 ? '--hard' : '--mixed', remoteHead, '--'], {
        gitDir: tmp,
      });
      if (entries.length > 0) {
        // Files the tree lacks are written; a file already there is never overwritten
        // (checkout-index without --force skips it, and it shows up as a change).
        await git.run(['checkout-index', '--all', '--quiet'], { gitDir: tmp, allowFailure: true });
      }
    }
    await fs.rename(tmp, gitDir);
  } catch (err) {
    await fs.rm(tmp, { recursive: true, force: true });
    throw err;
  }
}
