// A real smart-HTTP git server on loopback for the demo, the tests and the benchmarks: node:http
// in front of `git http-backend` (CGI), demanding Basic auth with one user/password and
// recording every request, so a test can assert nothing went anywhere else and the demo can
// show that each request carried the credential Airlock injected.
import { spawn, execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface RecordedRequest {
  method: string;
  /** Path and query as requested. */
  url: string;
  /** True if the request carried the right credential. */
  authorized: boolean;
  /** True if it carried any Authorization header. */
  hadAuthorization: boolean;
  status: number;
}

export interface SmartHttpServer {
  /** e.g. http://127.0.0.1:41234 */
  origin: string;
  /** Folder holding the bare repositories (GIT_PROJECT_ROOT). */
  root: string;
  requests: RecordedRequest[];
  /** URL of a repository under root, e.g. repoUrl('app.git'). */
  repoUrl(name: string): string;
  /** Makes the server misbehave from the next request on (undefined: behave again). */
  setFault(fault: GitRemoteFault | undefined): void;
  close(): Promise<void>;
}

/**
 * How the stand-in misbehaves, for fault tests: `status` answers every authorized request with
 * that HTTP status; `hangMidPack` sends the first `afterBytes` bytes of an upload-pack answer
 * (the pack a fetch downloads) and then nothing more, holding the connection open until close.
 */
export type GitRemoteFault = { status: number } | { hangMidPack: { afterBytes: number } };

export interface SmartHttpServerOptions {
  root: string;
  username: string;
  password: string;
  /**
   * Also accepts other Basic credentials (e.g. GitHub App installation tokens checked against the
   * GitHub API stand-in): `push` is true for receive-pack requests, `repoPath` the repository path.
   */
  alsoAccept?: (user: string, password: string, request: { repoPath: string; push: boolean }) => boolean;
}

const GIT_EXEC_PATH = execFileSync('git', ['--exec-path'], { encoding: 'utf8' }).trim();

/** An environment for fixture-side git commands: no user or system config. */
export function fixtureGitEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: '/nonexistent',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    LC_ALL: 'C',
    GIT_AUTHOR_NAME: 'Fixture',
    GIT_AUTHOR_EMAIL: 'fixture@example.test',
    GIT_COMMITTER_NAME: 'Fixture',
    GIT_COMMITTER_EMAIL: 'fixture@example.test',
    ...extra,
  };
}

function checkAuth(header: string | undefined, opts: SmartHttpServerOptions, url: URL): boolean {
  if (!header?.startsWith('Basic ')) return false;
  const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
  if (decoded === `${opts.username}:${opts.password}`) return true;
  const colon = decoded.indexOf(':');
  if (!opts.alsoAccept || colon < 0) return false;
  const push =
    url.pathname.endsWith('/git-receive-pack') || url.searchParams.get('service') === 'git-receive-pack';
  const repoPath = url.pathname.replace(/\/(info\/refs|git-upload-pack|git-receive-pack)$/, '');
  return opts.alsoAccept(decoded.slice(0, colon), decoded.slice(colon + 1), { repoPath, push });
}

export async function startSmartHttpServer(opts: SmartHttpServerOptions): Promise<SmartHttpServer> {
  const requests: RecordedRequest[] = [];
  let fault: GitRemoteFault | undefined;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const hadAuthorization = req.headers.authorization !== undefined;
    const authorized = checkAuth(req.headers.authorization, opts, url);
    const record: RecordedRequest = {
      method: req.method ?? '',
      url: req.url ?? '',
      authorized,
      hadAuthorization,
      status: 0,
    };
    requests.push(record);
    if (!authorized) {
      record.status = 401;
      req.resume();
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="git"', 'Content-Type': 'text/plain' });
      res.end('authentication required\n');
      return;
    }
    if (fault && 'status' in fault) {
      record.status = fault.status;
      req.resume();
      res.writeHead(fault.status, { 'Content-Type': 'text/plain' });
      res.end('the git server failed\n');
      return;
    }
    // Bytes of the answer still to forward before a hang; Infinity when not hanging.
    let forwardBudget =
      fault && 'hangMidPack' in fault && url.pathname.endsWith('/git-upload-pack')
        ? fault.hangMidPack.afterBytes
        : Infinity;
    const env: Record<string, string> = {
      ...fixtureGitEnv(),
      GIT_PROJECT_ROOT: opts.root,
      GIT_HTTP_EXPORT_ALL: '1',
      GIT_CONFIG_COUNT: '1',
      GIT_CONFIG_KEY_0: 'http.receivepack',
      GIT_CONFIG_VALUE_0: 'true',
      PATH_INFO: decodeURIComponent(url.pathname),
      REQUEST_METHOD: req.method ?? 'GET',
      QUERY_STRING: url.search.replace(/^\?/, ''),
      CONTENT_TYPE: req.headers['content-type'] ?? '',
      REMOTE_USER: opts.username,
      REMOTE_ADDR: req.socket.remoteAddress ?? '127.0.0.1',
      SERVER_PROTOCOL: 'HTTP/1.1',
    };
    if (req.headers['content-length']) env.CONTENT_LENGTH = req.headers['content-length'];
    if (req.headers['content-encoding']) env.HTTP_CONTENT_ENCODING = String(req.headers['content-encoding']);
    if (req.headers['git-protocol']) env.GIT_PROTOCOL = String(req.headers['git-protocol']);
    const backend = spawn(path.join(GIT_EXEC_PATH, 'git-http-backend'), [], {
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    req.pipe(backend.stdin);
    backend.stdin.on('error', () => undefined);
    backend.stderr.resume();

    // CGI response: headers up to a blank line, then the body (streamed through).
    let head = Buffer.alloc(0);
    let headersDone = false;
    backend.stdout.on('data', (chunk: Buffer) => {
      if (headersDone) {
        if (forwardBudget <= 0) return; // hanging: drop the rest, keep the connection open
        if (chunk.length > forwardBudget) chunk = chunk.subarray(0, forwardBudget);
        forwardBudget -= chunk.length;
        if (!res.write(chunk)) {
          backend.stdout.pause();
          res.once('drain', () => backend.stdout.resume());
        }
        return;
      }
      head = Buffer.concat([head, chunk]);
      let end = head.indexOf('\r\n\r\n');
      let sepLen = 4;
      if (end < 0) {
        end = head.indexOf('\n\n');
        sepLen = 2;
      }
      if (end < 0) return;
      headersDone = true;
      let status = 200;
      const headers: Record<string, string> = {};
      for (const line of head.subarray(0, end).toString('latin1').split(/\r?\n/)) {
        const i = line.indexOf(':');
        if (i < 0) continue;
        const name = line.slice(0, i).trim();
        const value = line.slice(i + 1).trim();
        if (name.toLowerCase() === 'status') status = Number.parseInt(value, 10) || 200;
        else headers[name] = value;
      }
      record.status = status;
      res.writeHead(status, headers);
      let rest = head.subarray(end + sepLen);
      if (rest.length > forwardBudget) rest = rest.subarray(0, forwardBudget);
      forwardBudget -= rest.length;
      if (rest.length) res.write(rest);
    });
    backend.on('close', () => {
      if (forwardBudget <= 0) return; // hanging mid-pack: never end the answer
      if (!headersDone) {
        record.status = 502;
        if (!res.headersSent) res.writeHead(502);
      }
      res.end();
    });
    req.on('aborted', () => backend.kill('SIGKILL'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;
  return {
    origin,
    root: opts.root,
    requests,
    repoUrl: (name) => `${origin}/${name}`,
    setFault: (f) => (fault = f),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Creates `<root>/<name>` as a bare repository whose `branch` holds `files` (one commit), or
 * an empty repository when `files` is omitted.
 */
export async function createBareRepo(
  root: string,
  name: string,
  opts: { branch?: string; files?: Record<string, string> } = {},
): Promise<string> {
  const branch = opts.branch ?? 'main';
  const bare = path.join(root, name);
  const env = fixtureGitEnv();
  execFileSync('git', ['init', '--quiet', '--bare', `--initial-branch=${branch}`, bare], { env });
  if (opts.files) {
    const seed = await fs.mkdtemp(path.join(root, '.seed-'));
    execFileSync('git', ['init', '--quiet', `--initial-branch=${branch}`, seed], { env });
    for (const [file, content] of Object.entries(opts.files)) {
      await fs.mkdir(path.dirname(path.join(seed, file)), { recursive: true });
      await fs.writeFile(path.join(seed, file), content);
    }
    execFileSync('git', ['-C', seed, 'add', '-A'], { env });
    execFileSync('git', ['-C', seed, 'commit', '--quiet', '-m', 'initial commit'], { env });
    execFileSync('git', ['-C', seed, 'push', '--quiet', bare, `HEAD:refs/heads/${branch}`], { env });
    await fs.rm(seed, { recursive: true, force: true });
  }
  return bare;
}

/** Commit id of `ref` in a (bare) repository, or undefined. */
export function refOf(gitDir: string, ref: string): string | undefined {
  try {
    return execFileSync('git', ['--git-dir', gitDir, 'rev-parse', '--verify', '--quiet', ref], {
      env: fixtureGitEnv(),
      encoding: 'utf8',
    }).trim();
  } catch {
    return undefined;
  }
}
