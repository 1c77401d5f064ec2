// A real Docker engine and the real images for the container tests. The engine is the one already
// running (.ci/run starts one), or one started here and stopped afterwards; the base image is made
// once per machine by docker/build-base-image.sh (cached by tag), the agent image by
// docker/build-image.sh (Docker's layer cache makes a rebuild with unchanged inputs quick).
// Nothing is skipped: when the engine or a build cannot work, the error says why.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, writeFileSync, closeSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { dockerDir } from './helpers.js';

export const BASE_IMAGE = 'airlock-base:bookworm-node20.20.2';
export const TEST_IMAGE = 'airlock-agent:test';
/** Where the marker CA (and the engine log of an engine started here) are kept between runs. */
export const CACHE_DIR = path.join(
  process.env.XDG_CACHE_HOME ?? path.join(homedir(), '.cache'),
  'airlock-docker-test',
);

export interface CommandResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (bounded by `timeoutMs`), collecting its output. */
export function run(
  command: string,
  args: string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string; cwd?: string } = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: { ...process.env, ...opts.env },
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

export function docker(args: string[], timeoutMs = 120_000): Promise<CommandResult> {
  return run('docker', args, { timeoutMs });
}

function engineAnswers(): boolean {
  return spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { timeout: 20_000 }).status === 0;
}

export interface Engine {
  /** true when this process started dockerd (and so stops it). */
  started: boolean;
  stop(): Promise<void>;
}

/**
 * The running engine, or one started here: overlay2 first, vfs when overlay2 cannot work. Throws
 * with the reason (and dockerd's last log lines) when neither starts.
 */
export async function ensureEngine(): Promise<Engine> {
  if (engineAnswers()) return { started: false, stop: async () => undefined };
  if (spawnSync('docker', ['--version']).status !== 0)
    throw new Error('the docker client is not installed (apt-get install docker.io)');
  if (spawnSync('sh', ['-c', 'command -v dockerd']).status !== 0)
    throw new Error('no Docker engine is running and dockerd is not installed (apt-get install docker.io)');
  if (process.getuid?.() !== 0)
    throw new Error('no Docker engine is running, and starting dockerd needs root');
  mkdirSync(CACHE_DIR, { recursive: true });
  const failures: string[] = [];
  for (const driver of ['overlay2', 'vfs']) {
    const logFile = path.join(CACHE_DIR, `dockerd-${driver}.log`);
    const log = openSync(logFile, 'w');
    const daemon: ChildProcess = spawn(
      'dockerd',
      [`--storage-driver=${driver}`, '--iptables=false', '--bridge=none'],
      { stdio: ['ignore', log, log], detached: true },
    );
    closeSync(log);
    let exited = false;
    daemon.once('exit', () => (exited = true));
    // Bounded wait: up to 90 s for the engine to answer.
    for (let i = 0; i < 180 && !exited && !engineAnswers(); i++) await new Promise((r) => setTimeout(r, 500));
    if (!exited && engineAnswers()) {
      return {
        started: true,
        stop: async () => {
          if (exited) return;
          const gone = new Promise((r) => daemon.once('exit', r));
          daemon.kill('SIGTERM');
          const timer = setTimeout(() => daemon.kill('SIGKILL'), 30_000);
          await gone;
          clearTimeout(timer);
        },
      };
    }
    if (!exited) daemon.kill('SIGKILL');
    const tail = readFileSync(logFile, 'utf8').trim().split('\n').slice(-5).join('\n  ');
    failures.push(`dockerd --storage-driver=${driver} did not start:\n  ${tail}`);
  }
  throw new Error(`no Docker engine could be started on this machine:\n${failures.join('\n')}`);
}

/**
 * The CA bundle the agent build uses: the host's (it holds the TLS-intercepting proxy's CA when
 * there is one) plus a marker CA made once per machine, whose text the layer test looks for.
 */
export function buildCaBundle(): { bundle: string; marker: string } {
  mkdirSync(CACHE_DIR, { recursive: true });
  const markerFile = path.join(CACHE_DIR, 'marker-ca.pem');
  if (!existsSync(markerFile)) {
    const made = spawnSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        '/dev/null',
        '-subj',
        '/CN=airlock build-ca marker (not trusted by anything)',
        '-days',
        '3650',
        '-out',
        markerFile,
      ],
      { encoding: 'utf8' },
    );
    if (made.status !== 0) throw new Error(`openssl could not make the marker CA: ${made.stderr}`);
  }
  const marker = readFileSync(markerFile, 'utf8');
  const hostBundle = [
    process.env.SSL_CERT_FILE,
    process.env.NODE_EXTRA_CA_CERTS,
    '/etc/ssl/certs/ca-certificates.crt',
  ]
    .filter((f): f is string => !!f && existsSync(f))
    .map((f) => readFileSync(f, 'utf8'))[0];
  if (!hostBundle)
    throw new Error('no host CA bundle found (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, /etc/ssl/certs)');
  const bundle = path.join(CACHE_DIR, 'build-ca-bundle.pem');
  const content = `${hostBundle.trimEnd()}\n${marker}`;
  // Rewritten only when it changes, so the build's layer cache keeps matching.
  if (!existsSync(bundle) || readFileSync(bundle, 'utf8') !== content) writeFileSync(bundle, content);
  return { bundle, marker };
}

/** The base image (built once per machine) and the agent image built through build-image.sh. */
export async function ensureImages(caBundle: string): Promise<{ baseLog: string; agentLog: string }> {
  const base = await run('bash', [path.join(dockerDir, 'build-base-image.sh'), '--tag', BASE_IMAGE], {
    timeoutMs: 20 * 60_000,
  });
  if (base.status !== 0) throw new Error(`docker/build-base-image.sh failed:\n${base.stderr.slice(-4000)}`);
  const agent = await run(
    'bash',
    [
      path.join(dockerDir, 'build-image.sh'),
      '--tag',
      TEST_IMAGE,
      '--base',
      BASE_IMAGE,
      '--ca-file',
      caBundle,
    ],
    { timeoutMs: 30 * 60_000 },
  );
  if (agent.status !== 0) throw new Error(`docker/build-image.sh failed:\n${agent.stderr.slice(-4000)}`);
  return { baseLog: base.stderr, agentLog: agent.stderr };
}
