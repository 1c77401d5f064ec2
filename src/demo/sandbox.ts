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
