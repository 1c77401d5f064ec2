// Runs git on the host, hardened. Every argument a tool builds is an argv element (no shell
// anywhere); the environment is built from nothing (the broker's own environment holds secrets
// and can steer git: GIT_DIR, GIT_SSH_COMMAND, GIT_CONFIG_*, proxies); and every invocation
// carries `-c` overrides that switch off each way git can be made to run a program.
//
// Why not simple-git (the stack's git library): v4 guards against exactly the options this
// module needs — its environment guard strips GIT_* variables (GIT_CONFIG_NOSYSTEM,
// GIT_ALLOW_PROTOCOL, GIT_CONFIG_COUNT…) unless each is allow-listed, and its "unsafe" plugin
// rejects `-c core.hooksPath=…`, `-c credential.helper=…` and friends unless each category is
// opted in. It also buffers whole outputs, where we need to stop reading at a byte cap and
// kill the process group on abort. Driving child_process.spawn directly keeps the whole
// hardening visible in this one file.
import { spawn } from 'node:child_process';
import {
  accessSync,
  closeSync,
  constants,
  openSync,
  promises as fs,
  readFileSync,
  readSync,
  statSync,
} from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import type { Redactor } from '../../src/secrets/redact.js';
import { SpawnServer } from './spawner.js';

/** Candidate git binaries, in order. Fixed paths: the broker's PATH is not trusted to pick git. */
const GIT_CANDIDATES = ['/usr/bin/git', '/usr/local/bin/git', '/bin/git', '/opt/homebrew/bin/git'];

let gitBinaryCache: string | undefined;

/** The first of `candidates` (fixed paths) that is executable. */
export function firstExecutable(candidates: readonly string[]): string | undefined {
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next one
    }
  }
  return undefined;
}

export function gitBinary(): string {
  gitBinaryCache ??= firstExecutable(GIT_CANDIDATES);
  if (!gitBinaryCache) throw new Error(`git not found (looked in ${GIT_CANDIDATES.join(', ')})`);
  return gitBinaryCache;
}

// ---------------------------------------------------------------------------------------------
// Work-tree confinement. Git resolves work-tree paths by name, so an agent that swaps a folder
// for a symlink while git runs (after git's own lstat checks, which it caches) makes git write
// checked-out files — or read and stage files — wherever the symlink points, as the broker.
// Git cannot close that race; the kernel can: every git that touches the work tree runs in a
// private mount namespace where the work tree is re-mounted `nosymfollow` (Linux 5.10+), so no
// symlink inside it is ever followed during path resolution. Git itself only ever lstat()s and
// readlink()s symlinks, which still work. The namespace is the git spawn helper's own
// (spawner.ts), made once when it starts: as root a plain mount namespace, otherwise inside a user
// namespace (the broker's uid mapped to root there, so files keep its ownership).

const UNSHARE_CANDIDATES = ['/usr/bin/unshare', '/bin/unshare'];
const MOUNT_CANDIDATES = ['/usr/bin/mount', '/bin/mount'];

/** Binds the work tree ("$2") onto itself with nosymfollow and enters it; `then` runs after. */
const CONFINE_SCRIPT =
  '"$1" --bind -- "$2" "$2" && "$1" -o remount,bind,nosymfollow -- "$2" && cd -- "$2" && ';

export interface Confinement {
  /** argv prefix that runs the rest in a private mount namespace. */
  unshare: string[];
  mount: string;
  /** The namespace sits in a user namespace of its own (a broker not running as root). */
  userNamespace: boolean;
}

/**
 * The program and arguments that run `then` (a shell line; "$@" holds `rest`) in a fresh mount
 * namespace, after confining `dir` there — used by the probe and by per-command git.
 */
function confinedShell(
  unshare: readonly string[],
  mount: string,
  dir: string,
  then: string,
  rest: readonly string[] = [],
): [string, string[]] {
  const [file, ...prefix] = unshare;
  return [
    file!,
    [...prefix, '/bin/sh', '-c', `${CONFINE_SCRIPT}${then}`, 'airlock-confine', mount, dir, ...rest],
  ];
}

let confinementProbe: Promise<Confinement> | undefined;

/**
 * Finds a way to confine git (probed once, by really confining a scratch folder). Rejects when
 * the host offers none: work-tree commands then fail closed rather than run unconfined.
 */
export function workTreeConfinement(): Promise<Confinement> {
  confinementProbe ??= probeConfinement();
  return confinementProbe;
}

async function probeConfinement(): Promise<Confinement> {
  const unshare = firstExecutable(UNSHARE_CANDIDATES);
  const mount = firstExecutable(MOUNT_CANDIDATES);
  if (unshare && mount) {
    const namespaceFlags = ['--mount', '--propagation', 'private', '--'];
    const variants =
      process.getuid?.() === 0
        ? [
            [unshare, ...namespaceFlags],
            [unshare, '--user', '--map-root-user', ...namespaceFlags],
          ]
        : [[unshare, '--user', '--map-root-user', ...namespaceFlags]];
    const scratch = await fs.mkdtemp(join(os.tmpdir(), 'airlock-confine-'));
    try {
      await fs.mkdir(join(scratch, 'target'));
      await fs.symlink(join(scratch, 'target'), join(scratch, 'link'));
      for (const variant of variants) {
        // Confined, following the symlink must fail: only then is the variant good.
        const code = await new Promise<number | null>((resolve) => {
          const child = spawn(...confinedShell(variant, mount, scratch, '! test -d link/'), {
            env: { PATH: '/usr/bin:/bin' },
            stdio: 'ignore',
            timeout: 10_000,
          });
          child.on('error', () => resolve(null));
          child.on('close', resolve);
        });
        if (code === 0) {
          // The spawn helper starts in this variant's namespace (see spawnHelper).
          return { unshare: variant, mount, userNamespace: variant.includes('--user') };
        }
      }
    } finally {
      await fs.rm(scratch, { recursive: true, force: true });
    }
  }
  confinementProbe = undefined; // retry on the next call (e.g. after the host is fixed)
  throw new Error(
    'cannot confine git to the work tree: need Linux ≥ 5.10 with unshare(1) and mount(1), and ' +
      'either root or unprivileged user namespaces (refusing to run git over the work tree unconfined)',
  );
}

/**
 * Configuration forced on every git invocation (command-line scope beats every config file).
 * The repository config is host-owned and written only by Airlock, and system/global config is
 * off, so these are belt and braces — each one closes a way to make git run a program or talk
 * to somewhere other than the policy remote.
 */
export const HARDENING_CONFIG: readonly string[] = [
  'core.hooksPath=/dev/null', // no hooks (pre-commit, post-checkout, reference-transaction, …)
  'core.fsmonitor=false', // fsmonitor names a program to run on status/diff/add
  'core.pager=cat',
  'core.editor=false', // never an editor: messages come with -F/--no-edit; fail if asked
  'core.askPass=', // no askpass program; credentials only via our header
  'core.sshCommand=false', // ssh is not an allowed protocol anyway
  'core.attributesFile=/dev/null',
  'core.excludesFile=/dev/null',
  'core.untrackedCache=false',
  'credential.helper=', // an empty value resets the helper list
  'diff.external=', // plus --no-ext-diff on every diff-producing command
  'diff.ignoreSubmodules=all', // never spawn git inside a nested repository
  'status.submoduleSummary=false',
  'submodule.recurse=false',
  'fetch.recurseSubmodules=false',
  'push.recurseSubmodules=no',
  'push.followTags=false',
  'protocol.allow=never', // the allowed transport is re-enabled per call
  'http.followRedirects=false', // a redirect would carry the credential header elsewhere
  'safe.bareRepository=explicit', // an embedded bare repository is never discovered
  'commit.gpgSign=false',
  'tag.gpgSign=false',
  'log.showSignature=false',
  'merge.verifySignatures=false',
  'gc.auto=0', // no detached background `git gc`
  'maintenance.auto=false',
  'color.ui=false',
  'advice.detachedHead=false',
];

export type GitProtocol = 'https' | 'http' | 'file';

export interface GitEnvOptions {
  /** Empty host-owned folder used as HOME (git would otherwise read ~/.gitconfig). */
  home: string;
  /**
   * The one transport protocol the remote needs (`https`, or `http` for loopback; `file` only for
   * the broker's own policy repository on this host, never for an agent's workspace).
   */
  protocol: GitProtocol;
  author?: { name: string; email: string };
  /** Extra config passed through GIT_CONFIG_COUNT (the environment), e.g. the auth header. */
  envConfig?: Record<string, string>;
  /** For read-only commands: do not take optional locks (status would refresh the index). */
  noOptionalLocks?: boolean;
}

/** The complete environment of a git child. Nothing is inherited from the broker. */
export function gitEnv(opts: GitEnvOptions): Record<string, string> {
  const env: Record<string, string> = {
    PATH: [...new Set([dirname(gitBinary()), '/usr/bin', '/bin'])].join(':'),
    HOME: opts.home,
    XDG_CONFIG_HOME: opts.home,
    LC_ALL: 'C',
    LANG: 'C',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_CONFIG_SYSTEM: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    GIT_PAGER: 'cat',
    PAGER: 'cat',
    GIT_EDITOR: 'false',
    GIT_ALLOW_PROTOCOL: opts.protocol,
    GIT_PROTOCOL_FROM_USER: '0',
    GIT_NO_REPLACE_OBJECTS: '1',
    // Paths are literal: `:(exclude)`, `:/` and glob magic in an argument are not pathspecs.
    GIT_LITERAL_PATHSPECS: '1',
  };
  if (opts.noOptionalLocks) env.GIT_OPTIONAL_LOCKS = '0';
  if (opts.author) {
    env.GIT_AUTHOR_NAME = opts.author.name;
    env.GIT_AUTHOR_EMAIL = opts.author.email;
    env.GIT_COMMITTER_NAME = opts.author.name;
    env.GIT_COMMITTER_EMAIL = opts.author.email;
  }
  const extra = Object.entries(opts.envConfig ?? {});
  if (extra.length > 0) {
    env.GIT_CONFIG_COUNT = String(extra.length);
    extra.forEach(([key, value], i) => {
      env[`GIT_CONFIG_KEY_${i}`] = key;
      env[`GIT_CONFIG_VALUE_${i}`] = value;
    });
  }
  return env;
}

export interface GitRunOptions {
  /** Host-owned git dir; omitted only for commands that need no repository (check-ref-format). */
  gitDir?: string;
  workTree?: string;
  /** The process's working directory (the work tree, so relative pathspecs resolve inside it). */
  cwd: string;
  /** The git subcommand and its arguments. */
  args: readonly string[];
  env: Record<string, string>;
  /** The protocol re-enabled on the command line (must match GIT_ALLOW_PROTOCOL). */
  protocol: GitProtocol;
  input?: string | Buffer;
  /** Stop reading stdout after this many bytes, kill git and report `truncated`. */
  maxOutputBytes?: number;
  signal?: AbortSignal;
  timeoutMs: number;
  /** Scrubs stderr (and the caller scrubs stdout) of the credential. */
  redactor?: Redactor;
  /**
   * File-creation mask for this git process. Work-tree writers use 002 so checked-out files are
   * group-writable: with a setgid work tree whose group is the agent's, the agent can edit them
   * in place without the broker ever chowning paths inside a tree the agent controls.
   */
  umask?: number;
  /**
   * The work tree to confine git to (see workTreeConfinement): set for every command that runs
   * with a work tree. Git then starts with the work tree as its working directory.
   */
  confineTo?: string;
}

export interface GitRunResult {
  code: number | null;
  stdout: Buffer;
  /** Redacted, capped. */
  stderr: string;
  /** stdout hit maxOutputBytes and git was stopped. */
  truncated: boolean;
}

export class GitAbortError extends Error {
  constructor(readonly why: 'aborted' | 'timeout') {
    super(why === 'timeout' ? 'git timed out' : 'git was cancelled');
  }
}

const MAX_STDERR_BYTES = 64 * 1024;
const DEFAULT_MAX_STDOUT = 64 * 1024 * 1024;

export function buildArgv(opts: Pick<GitRunOptions, 'gitDir' | 'workTree' | 'args' | 'protocol'>): string[] {
  const argv: string[] = ['--no-pager', '--no-replace-objects'];
  for (const c of HARDENING_CONFIG) argv.push('-c', c);
  argv.push('-c', `protocol.${opts.protocol}.allow=always`);
  if (opts.gitDir) argv.push(`--git-dir=${opts.gitDir}`);
  if (opts.workTree) argv.push(`--work-tree=${opts.workTree}`);
  argv.push(...opts.args);
  return argv;
}

// ---------------------------------------------------------------------------------------------
// The spawn helper (spawner.ts), started on first use inside a private mount namespace of its own
// (the probed unshare: plain as root, in a user namespace otherwise), and every work tree is
// confined there once: bound onto itself nosymfollow by a mount(1) the helper forks. Like the
// per-work-tree namespaces this replaces, it sees the host's mounts as they were when it started,
// and nothing is ever mounted in the broker's own namespace. Commands that need no confinement
// run there too: the only difference there is that work trees cannot be followed through.

interface Helper {
  server: SpawnServer;
  /**
   * The helper runs in the confinement's namespace and confines work trees there. False only
   * when it started on a host that offered no confinement then: confined commands then run
   * behind confinedShell (a namespace per command).
   */
  namespaced: boolean;
  /** The helper's /proc/<pid>/mountinfo, kept open: each check is one read from offset 0. */
  mountinfo?: number;
  /** Work trees being confined in its namespace now (one mount at a time per tree). */
  confining: Map<string, Promise<void>>;
}

const MOUNTINFO_BUFFER_BYTES = 64 * 1024;
const mountinfoBuffer = Buffer.allocUnsafe(MOUNTINFO_BUFFER_BYTES);

/**
 * The mount table of the helper's namespace, as of now. Read synchronously, like the stats of
 * stillConfined: the kernel prints it from memory in microseconds, where each threadpool round
 * trip (and the event-loop wake-up after it) costs a git command ~0.1 ms of its latency.
 */
function helperMounts(helper: Helper): string {
  helper.mountinfo ??= openSync(`/proc/${helper.server.pid}/mountinfo`, 'r');
  const bytesRead = readSync(helper.mountinfo, mountinfoBuffer, 0, MOUNTINFO_BUFFER_BYTES, 0);
  // A table that fills the buffer may go on: read it whole.
  if (bytesRead === MOUNTINFO_BUFFER_BYTES)
    return readFileSync(`/proc/${helper.server.pid}/mountinfo`, 'utf8');
  return mountinfoBuffer.toString('utf8', 0, bytesRead);
}

let helperStart: Promise<Helper> | undefined;

async function spawnHelper(): Promise<Helper> {
  const current = await helperStart?.catch(() => undefined);
  if (current?.server.alive) return current;
  helperStart = (async () => {
    // Unconfined commands need no confinement: a host that offers none still gets a helper.
    const confinement = await workTreeConfinement().catch(() => undefined);
    const namespaced = confinement !== undefined;
    const server = await SpawnServer.start(namespaced ? confinement!.unshare : []);
    const helper: Helper = { server, namespaced, confining: new Map() };
    server.child.once('exit', () => {
      if (helper.mountinfo !== undefined) closeSync(helper.mountinfo);
      helper.mountinfo = undefined;
    });
    return helper;
  })();
  helperStart.catch(() => (helperStart = undefined));
  return helperStart;
}

/**
 * Makes sure `workTree` is confined in the helper's namespace, and is the same folder as the
 * host's: a work tree removed or replaced since (re-provisioned) lost its mount there.
 */
async function confineInHelper(helper: Helper, workTree: string, confinement: Confinement): Promise<void> {
  for (;;) {
    const inFlight = helper.confining.get(workTree);
    if (!inFlight) break;
    await inFlight.catch(() => undefined);
  }
  if (stillConfined(helper, workTree)) return;
  const mounting = (async () => {
    const r = await spawnThrough(helper.server, {
      file: '/bin/sh',
      args: [
        '-c',
        '"$1" --bind -- "$2" "$2" && "$1" -o remount,bind,nosymfollow -- "$2"',
        'airlock-confine',
        confinement.mount,
        workTree,
      ],
      cwd: '/',
      env: { PATH: '/usr/bin:/bin' },
      timeoutMs: 10_000,
    });
    if (r.code !== 0 || !stillConfined(helper, workTree)) {
      throw new Error(`cannot confine git to the work tree: ${r.stderr.trim() || 'mount failed'}`);
    }
  })();
  helper.confining.set(workTree, mounting);
  try {
    await mounting;
  } finally {
    helper.confining.delete(workTree);
  }
}

/**
 * The helper's namespace has the nosymfollow mount on the work tree, and it is the same folder as
 * now. (Removing a folder detaches mounts on it in every namespace, so a replaced work tree would
 * otherwise be seen there unconfined.)
 */
function stillConfined(helper: Helper, workTree: string): boolean {
  const pid = helper.server.pid;
  try {
    const info = helperMounts(helper);
    const now = statSync(workTree);
    const there = statSync(`/proc/${pid}/root${workTree}`);
    const mountPoint = escapeMountinfo(workTree);
    const confined = info.split('\n').some((line) => {
      const fields = line.split(' ');
      return fields[4] === mountPoint && (fields[5] ?? '').split(',').includes('nosymfollow');
    });
    return confined && now.dev === there.dev && now.ino === there.ino;
  } catch {
    return false;
  }
}

/** /proc/<pid>/mountinfo writes space, tab, newline and backslash in paths as octal escapes. */
function escapeMountinfo(p: string): string {
  return p.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

/** Runs one git command. Resolves with its exit code; rejects only on abort/timeout/spawn failure. */
export async function runGit(opts: GitRunOptions): Promise<GitRunResult> {
  const confinement = opts.confineTo === undefined ? undefined : await workTreeConfinement();
  let helper = await spawnHelper();
  const argv = buildArgv(opts);
  let [file, args] = [gitBinary(), argv];
  if (confinement && helper.namespaced) {
    try {
      await confineInHelper(helper, opts.confineTo!, confinement);
    } catch {
      // The helper sees the host's mounts as they were when it started: a work tree mounted
      // since (a volume) is not there. A fresh helper sees it; the old one finishes what it
      // runs and exits. Failing there too is final.
      helper.server.retire();
      helper = await spawnHelper();
      await confineInHelper(helper, opts.confineTo!, confinement);
    }
  } else if (confinement) {
    // A fresh user + mount namespace for this command; "$@" is git and its arguments.
    [file, args] = confinedShell(
      confinement.unshare,
      confinement.mount,
      opts.confineTo!,
      'shift 2 && exec "$@"',
      [gitBinary(), ...argv],
    );
  }
  return spawnThrough(helper.server, {
    file,
    args,
    // Confined, git starts in the work tree as resolved in the confined namespace.
    cwd: opts.confineTo ?? opts.cwd,
    env: opts.env,
    timeoutMs: opts.timeoutMs,
    ...(opts.input !== undefined ? { input: opts.input } : {}),
    ...(opts.umask !== undefined ? { umask: opts.umask } : {}),
    ...(opts.maxOutputBytes !== undefined ? { maxOutputBytes: opts.maxOutputBytes } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.redactor ? { redactor: opts.redactor } : {}),
  });
}

interface SpawnOptions {
  file: string;
  args: readonly string[];
  cwd: string;
  env: Record<string, string>;
  timeoutMs: number;
  input?: string | Buffer;
  umask?: number;
  maxOutputBytes?: number;
  signal?: AbortSignal;
  redactor?: Redactor;
}

/** One process through the helper: output capped, killed (its whole group) on abort or timeout. */
function spawnThrough(server: SpawnServer, opts: SpawnOptions): Promise<GitRunResult> {
  const maxOut = opts.maxOutputBytes ?? DEFAULT_MAX_STDOUT;
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) return reject(new GitAbortError('aborted'));
    const out: Buffer[] = [];
    let outBytes = 0;
    const err: Buffer[] = [];
    let errBytes = 0;
    let truncated = false;
    let stopped: 'aborted' | 'timeout' | undefined;
    let settled = false;

    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      fn();
    };
    const child = server.spawn(
      {
        file: opts.file,
        args: opts.args,
        cwd: opts.cwd,
        env: opts.env,
        maxOut,
        ...(opts.input !== undefined ? { input: opts.input } : {}),
        ...(opts.umask !== undefined ? { umask: opts.umask } : {}),
      },
      {
        stdout(chunk) {
          if (truncated) return;
          const room = maxOut - outBytes;
          if (chunk.length > room) {
            out.push(chunk.subarray(0, room));
            outBytes = maxOut;
            truncated = true;
            child.kill();
            return;
          }
          out.push(chunk);
          outBytes += chunk.length;
        },
        stderr(chunk) {
          if (errBytes >= MAX_STDERR_BYTES) return;
          err.push(chunk.subarray(0, MAX_STDERR_BYTES - errBytes));
          errBytes += Math.min(chunk.length, MAX_STDERR_BYTES - errBytes);
        },
        done(code, error) {
          finish(() => {
            if (stopped) return reject(new GitAbortError(stopped));
            if (error !== undefined) return reject(new Error(`could not run git: ${error}`));
            const stderrRaw = Buffer.concat(err).toString('utf8');
            resolve({
              code,
              stdout: Buffer.concat(out),
              stderr: opts.redactor ? opts.redactor.scrub(stderrRaw) : stderrRaw,
              truncated,
            });
          });
        },
      },
    );
    const onAbort = () => {
      stopped ??= 'aborted';
      child.kill();
    };
    const timer = setTimeout(() => {
      stopped ??= 'timeout';
      child.kill();
    }, opts.timeoutMs);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
  });
}
