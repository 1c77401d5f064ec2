// The agent's boundary for the demo and the boundary tests: a process in its own network
// namespace (so it has a loopback of its own and no route to the host's), running as an
// unprivileged uid whose only supplementary group is the socket group, with no capabilities,
// no way to regain privileges, and an environment that holds nothing of the broker's.
// What it can still reach of the host is the shared filesystem under its uid's permissions —
// which is how the Unix sockets reach it (as a bind mount would in a container).
import { spawn } from 'node:child_process';
import { accessSync, constants, promises as fs } from 'node:fs';
import path from 'node:path';

/** The uid/gid the agent runs as (the first regular user on most Linux machines). */
export const AGENT_UID = 1000;
export const AGENT_GID = 1000;

/** PATH inside the sandbox: system folders plus the folder of the node binary that runs us. */
export function agentPath(): string {
  const dirs = [path.dirname(process.execPath), '/usr/local/bin', '/usr/bin', '/bin'];
  return [...new Set(dirs)].join(':');
}

export interface AgentIdentity {
  uid: number;
  gid: number;
  /** Supplementary groups: just the socket group (when there is one). */
  groups: number[];
}

export interface SandboxCheck {
  ok: boolean;
  reason?: string;
}

export interface AgentRunOptions {
  /** Program and arguments, run as the agent. */
  command: string;
  args: string[];
  /** The agent's HOME (and working directory): an empty folder owned by the agent's uid. */
  home: string;
  /** true: network namespace + uid switch; false: run as this process's user on the host network. */
  sandbox: boolean;
  identity?: Partial<AgentIdentity>;
  /** Extra environment entries (never secrets). */
  env?: Record<string, string>;
  /** Written to the agent's stdin, which is then closed. */
  input?: string;
  timeoutMs?: number;
  /** Kills the agent when aborted. */
  signal?: AbortSignal;
}

export interface AgentRunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

function identityOf(partial: Partial<AgentIdentity> | undefined): AgentIdentity {
  return {
    uid: partial?.uid ?? AGENT_UID,
    gid: partial?.gid ?? AGENT_GID,
    groups: partial?.groups ?? [],
  };
}

/** The environment the agent starts with: built from nothing, never copied from ours. */
export function agentEnv(home: string, extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: agentPath(), HOME: home, LANG: 'C.UTF-8', ...extra };
}

/**
 * argv that runs `command args…` inside the boundary. `unshare --net` gives the process a new
 * network namespace (its own, empty network stack); inside it, `ip link set lo up` brings up
 * that namespace's loopback; then `setpriv` drops to the agent's uid/gid with only the given
 * supplementary groups, an empty capability bounding set, no inheritable capabilities and
 * no_new_privs, and is killed if we die. The command and its arguments are passed as "$@" to a
 * fixed script, never spliced into shell text.
 */
export function sandboxArgv(command: string, args: string[], identity: AgentIdentity): string[] {
  const groups = identity.groups.length ? ['--groups', identity.groups.join(',')] : ['--clear-groups'];
  // Absolute paths: the agent's PATH has no sbin folders, and `ip` usually lives in one.
  const tool = (name: string) => findTool(name) ?? name;
  return [
    tool('unshare'),
    '--net',
    '--',
    '/bin/sh',
    '-c',
    '"$0" link set lo up && exec "$@"',
    tool('ip'),
    tool('setpriv'),
    '--reuid',
    String(identity.uid),
    '--regid',
    String(identity.gid),
    ...groups,
    '--inh-caps=-all',
    '--bounding-set=-all',
    '--no-new-privs',
    '--pdeathsig',
    'KILL',
    '--',
    command,
    ...args,
  ];
}

/** Runs a command as the agent (see sandboxArgv) and collects its output. */
export function runAsAgent(opts: AgentRunOptions): Promise<AgentRunResult> {
  const identity = identityOf(opts.identity);
  const argv = opts.sandbox ? sandboxArgv(opts.command, opts.args, identity) : [opts.command, ...opts.args];
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: opts.home,
      env: agentEnv(opts.home, opts.env),
      stdio: ['pipe', 'pipe', 'pipe'],
      // Its own process group, so a deadline or abort reaches everything the agent started
      // (an orphaned client or bridge would otherwise hold stdio open and the run never ends).
      detached: true,
    });
    const killAll = (sig: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, sig);
      } catch {
        child.kill(sig);
      }
    };
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      killAll('SIGKILL');
    }, opts.timeoutMs ?? 60_000);
    // SIGTERM first, so the agent can close its sessions (and the bridges it started).
    const abort = () => {
      killAll('SIGTERM');
      setTimeout(() => killAll('SIGKILL'), 3000).unref();
    };
    opts.signal?.addEventListener('abort', abort, { once: true });
    child.on('error', (err) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', abort);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', abort);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

/**
 * An empty HOME for the agent under `parent`: owned by the agent (when we can chown, i.e. as
 * root) and private to it.
 */
export async function makeAgentHome(parent: string, identity?: Partial<AgentIdentity>): Promise<string> {
  const id = identityOf(identity);
  const home = path.join(parent, 'agent-home');
  await fs.mkdir(home, { mode: 0o700 });
  if (process.getuid?.() === 0) await fs.chown(home, id.uid, id.gid);
  return home;
}

/**
 * Lets other users pass through `dir` and its parents up to `/` without listing them (adds
 * o+x, i.e. 0711 on a 0700 mkdtemp folder). Needed so the agent's uid can reach a socket or
 * its HOME inside our temp folder; the folder's other entries keep their own modes.
 */
export async function makeTraversable(dir: string): Promise<void> {
  let current = path.resolve(dir);
  for (;;) {
    const st = await fs.stat(current);
    if ((st.mode & 0o001) === 0) await fs.chmod(current, (st.mode & 0o7777) | 0o011);
    const parent = path.dirname(current);
    if (parent === current) return;
    current = parent;
  }
}

export interface StagedTree {
  /** The staging folder (every user can read it). */
  root: string;
  /** Where `relative` (a path relative to the source root) is in the staging folder. */
  path(relative: string): string;
}

/**
 * Copies what the agent's uid runs into `dest`, a folder every user can read, so the boundary
 * works wherever the repository lives: a clone in a 0700 folder (root's home, `mktemp -d`) cannot
 * be read by uid 1000, however its own files are set. `files` are files or folders relative to
 * `sourceRoot`; `packages` are installed packages (`node_modules/<name>`), each with everything
 * it depends on, found as Node would find them. Relative paths are kept, so relative imports,
 * `package.json`'s "type" and node_modules lookups resolve in the copy as in the tree. A file
 * every user may already read is hard-linked when it can be (no copy of a large binary); any
 * other is copied and made readable (the original keeps its mode).
 */
export async function stageForAgent(opts: {
  sourceRoot: string;
  dest: string;
  files: string[];
  packages?: string[];
}): Promise<StagedTree> {
  const sourceRoot = path.resolve(opts.sourceRoot);
  const wanted = new Set(opts.files.map((f) => path.resolve(sourceRoot, f)));
  for (const name of opts.packages ?? []) {
    for (const dir of await packageClosure(sourceRoot, name)) wanted.add(dir);
  }
  // A folder inside another wanted one comes along with it.
  const tops = [...wanted].filter(
    (p) => ![...wanted].some((other) => other !== p && p.startsWith(other + path.sep)),
  );
  await fs.mkdir(opts.dest, { recursive: true, mode: 0o755 });
  await fs.chmod(opts.dest, 0o755);
  for (const source of tops) {
    const relative = path.relative(sourceRoot, source);
    if (relative.startsWith('..') || path.isAbsolute(relative))
      throw new Error(`cannot stage ${source}: not inside ${sourceRoot}`);
    const target = path.join(opts.dest, relative);
    await mkdirReadable(opts.dest, path.dirname(target));
    await copyReadable(source, target);
  }
  return { root: opts.dest, path: (relative) => path.join(opts.dest, relative) };
}

/**
 * The demo agent (dist/src/demo/agent.js, the bridge it starts, the MCP SDK it imports) staged
 * under `dest` for uid 1000. `repoRoot` is the built repository (dist/ and node_modules/).
 */
export async function stageDemoAgent(
  repoRoot: string,
  dest: string,
): Promise<{ root: string; script: string; sdkPackage: string }> {
  const staged = await stageForAgent({
    sourceRoot: repoRoot,
    dest,
    // package.json for its "type": "module" (agent.js is ESM); the bridge is ../bridge.cjs to it.
    files: ['package.json', 'dist/src/demo/agent.js', 'dist/src/bridge.cjs'],
    packages: ['@modelcontextprotocol/sdk'],
  });
  return {
    root: staged.root,
    script: staged.path('dist/src/demo/agent.js'),
    sdkPackage: staged.path('node_modules/@modelcontextprotocol/sdk/package.json'),
  };
}

/** The folders of `name` and of every package it needs, resolved from `sourceRoot` as Node would. */
async function packageClosure(sourceRoot: string, name: string): Promise<string[]> {
  const found = new Set<string>();
  const visit = async (from: string, dep: string, required: boolean): Promise<void> => {
    // Node's lookup: <folder>/node_modules/<dep>, walking up, but never above the source root.
    let dir: string | undefined;
    for (let at = from; ; at = path.dirname(at)) {
      const candidate = path.join(at, 'node_modules', dep);
      if (await exists(path.join(candidate, 'package.json'))) {
        dir = candidate;
        break;
      }
      if (at === sourceRoot || path.dirname(at) === at) break;
    }
    if (!dir) {
      if (required) throw new Error(`cannot stage package ${dep}: not installed under ${from}`);
      return; // an optional or peer dependency that is not installed
    }
    if (found.has(dir)) return;
    found.add(dir);
    const manifest = JSON.parse(await fs.readFile(path.join(dir, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>;
      optionalDependencies?: Record<string, string>;
      peerDependencies?: Record<string, string>;
    };
    for (const d of Object.keys(manifest.dependencies ?? {})) await visit(dir, d, true);
    for (const d of Object.keys({ ...manifest.optionalDependencies, ...manifest.peerDependencies }))
      await visit(dir, d, false);
  };
  await visit(sourceRoot, name, true);
  return [...found];
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

/** Creates `dir` and its missing parents below `root`, each 0755. */
async function mkdirReadable(root: string, dir: string): Promise<void> {
  if (dir === root || !dir.startsWith(root + path.sep)) return;
  await mkdirReadable(root, path.dirname(dir));
  await fs.mkdir(dir, { mode: 0o755 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  await fs.chmod(dir, 0o755);
}

async function copyReadable(source: string, target: string): Promise<void> {
  const st = await fs.lstat(source);
  if (st.isSymbolicLink()) {
    await fs.symlink(await fs.readlink(source), target);
  } else if (st.isDirectory()) {
    await fs.mkdir(target, { mode: 0o755 });
    await fs.chmod(target, 0o755);
    for (const entry of await fs.readdir(source))
      await copyReadable(path.join(source, entry), path.join(target, entry));
  } else if (st.isFile()) {
    // Executable for all if executable for anyone; readable for all.
    const mode = (st.mode & 0o111 ? 0o755 : 0o644) as number;
    if ((st.mode & 0o777) === mode) {
      try {
        await fs.link(source, target);
        return;
      } catch {
        // another file system, or links not allowed: copy instead
      }
    }
    await fs.copyFile(source, target);
    await fs.chmod(target, mode);
  }
  // Sockets, FIFOs and devices are not code; they are left out.
}

/**
 * Whether this machine can run the agent boundary: we are root (setpriv needs it to switch
 * uid), unshare/ip/setpriv exist and work, and the agent's uid can run node and read `readable`
 * (e.g. the agent script and its node_modules). The reason says what is missing.
 */
export async function canCreateSandbox(
  opts: { readable?: string[]; identity?: Partial<AgentIdentity> } = {},
): Promise<SandboxCheck> {
  if (process.platform !== 'linux')
    return { ok: false, reason: `network namespaces are Linux-only (this is ${process.platform})` };
  if (process.getuid?.() !== 0) {
    return {
      ok: false,
      reason: 'not running as root: creating a network namespace and switching to the agent uid needs root',
    };
  }
  const tools = ['unshare', 'setpriv', 'ip'];
  for (const tool of tools) {
    if (!findTool(tool)) return { ok: false, reason: `"${tool}" is not installed (util-linux / iproute2)` };
  }
  const identity = identityOf(opts.identity);
  const readable = opts.readable ?? [];
  // Everything the agent needs, tried once for real: namespace, lo up, uid switch, node, files.
  const check = `const fs=require('fs');for(const p of process.argv.slice(1)){try{fs.accessSync(p,fs.constants.R_OK)}catch(e){console.error('cannot read '+p+' as uid '+process.getuid()+': '+e.code);process.exit(3)}}`;
  let result: AgentRunResult;
  try {
    result = await runAsAgent({
      command: process.execPath,
      args: ['-e', check, ...readable],
      home: '/', // any folder every uid can enter; the trial writes nothing
      sandbox: true,
      identity,
      timeoutMs: 15_000,
    });
  } catch (err) {
    return { ok: false, reason: `cannot start unshare: ${(err as Error).message}` };
  }
  if (result.timedOut) return { ok: false, reason: 'the sandbox trial run timed out' };
  if (result.code !== 0) {
    const why =
      result.stderr.trim().split('\n').slice(-3).join('; ') || `exit ${result.code ?? result.signal}`;
    return { ok: false, reason: `the sandbox trial run failed: ${why}` };
  }
  return { ok: true };
}

/** Absolute path of a system tool, looked up in the usual folders (not our PATH), or undefined. */
export function findTool(name: string): string | undefined {
  for (const dir of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next folder
    }
  }
  return undefined;
}
