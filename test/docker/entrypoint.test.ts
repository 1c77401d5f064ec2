// docker/agent-entrypoint.sh with the real bridge (dist/src/bridge.cjs from `npm run build`, copied
// extension-less like the Dockerfile does) in front of a Unix-socket HTTP server standing in for
// the broker's model socket.
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dockerDir, repoRoot } from './helpers.js';

const entrypoint = path.join(dockerDir, 'agent-entrypoint.sh');
const builtBridge = path.join(repoRoot, 'dist', 'src', 'bridge.cjs');

let root: string;
let binDir: string;
let home: string;
let modelServer: http.Server;
let seen: Array<{ method?: string; url?: string; body: string }>;

async function freeLoopbackPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the entrypoint in its own process group and kills that group afterwards (the bridge outlives the command). */
function runEntrypoint(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [entrypoint, ...args], {
      // HOME is the test's own folder: the entrypoint writes Claude Code's config there.
      env: {
        ...process.env,
        PATH: `${binDir}:${process.env.PATH}`,
        HOME: home,
        AIRLOCK_SOCKET_DIR: root,
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), 15_000);
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('exit', (status) => {
      clearTimeout(timer);
      try {
        process.kill(-child.pid!, 'SIGTERM');
      } catch {
        // the group is already gone
      }
      resolve({ status, stdout, stderr });
    });
  });
}

beforeEach(async () => {
  root = mkdtempSync(path.join(tmpdir(), 'airlock-entry-'));
  binDir = path.join(root, 'bin');
  mkdirSync(binDir);
  home = path.join(root, 'home');
  mkdirSync(home);
  copyFileSync(builtBridge, path.join(binDir, 'airlock-bridge'));
  chmodSync(path.join(binDir, 'airlock-bridge'), 0o755);
  seen = [];
  modelServer = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
    req.on('end', () => {
      seen.push({ method: req.method, url: req.url, body });
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(
        JSON.stringify({ type: 'message', content: [{ type: 'text', text: 'hello from the model socket' }] }),
      );
    });
  });
  await new Promise<void>((resolve) => modelServer.listen(path.join(root, 'model.sock'), resolve));
});

afterEach(async () => {
  modelServer.closeAllConnections();
  await new Promise<void>((resolve) => modelServer.close(() => resolve()));
  rmSync(root, { recursive: true, force: true });
});

describe('agent-entrypoint.sh', () => {
  it('is valid bash, executable, and defaults to claude', () => {
    expect(spawnSync('bash', ['-n', entrypoint]).status).toBe(0);
    expect(statSync(entrypoint).mode & 0o111).toBe(0o111);
    expect(readFileSync(entrypoint, 'utf8')).toContain('set -- claude');
  });

  it('bridges ANTHROPIC_BASE_URL to the model socket before running the command', async () => {
    const port = await freeLoopbackPort();
    const baseUrl = `http://127.0.0.1:${port}`;
    const client = `
      fetch(process.env.ANTHROPIC_BASE_URL + '/v1/messages', { method: 'POST', body: '{"max_tokens":1}' })
        .then((r) => r.text()).then((t) => console.log(t), (e) => { console.error(e); process.exit(3); });
    `;
    const result = await runEntrypoint([process.execPath, '-e', client], {
      AIRLOCK_MODEL_SOCKET: path.join(root, 'model.sock'),
      AIRLOCK_MODEL_LISTEN: `127.0.0.1:${port}`,
      ANTHROPIC_BASE_URL: baseUrl,
    });
    expect(result.stderr).not.toContain('exited');
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('hello from the model socket');
    // Exactly the agent's request reached the socket: no readiness probe connection.
    expect(seen).toEqual([{ method: 'POST', url: '/v1/messages', body: '{"max_tokens":1}' }]);
  });

  it('runs the command without a bridge when there is no model socket', async () => {
    const result = await runEntrypoint(['echo', 'ran'], {
      AIRLOCK_MODEL_SOCKET: path.join(root, 'absent.sock'),
    });
    expect(result.status).toBe(0);
    expect(result.stdout).toBe('ran\n');
    expect(result.stderr).toContain('absent.sock');
  });

  describe("writes Claude Code's MCP config for the mounted sockets", () => {
    const listeners: net.Server[] = [];
    const listen = async (file: string) => {
      const server = net.createServer((socket) => socket.end());
      await new Promise<void>((resolve) => server.listen(file, resolve));
      listeners.push(server);
    };
    afterEach(async () => {
      await Promise.all(listeners.splice(0).map((s) => new Promise((r) => s.close(r))));
    });

    it('one airlock-bridge server per socket except model.sock, and permissions for their tools', async () => {
      await listen(path.join(root, 'git.sock'));
      await listen(path.join(root, 'http.sock'));
      await listen(path.join(root, 'Bad Name.sock'));
      writeFileSync(path.join(root, 'plain.sock'), 'not a socket');
      // model.sock is there (and bridged, on a free port): it is the model API, not an MCP server.
      const result = await runEntrypoint(['true'], {
        AIRLOCK_MODEL_SOCKET: path.join(root, 'model.sock'),
        AIRLOCK_MODEL_LISTEN: `127.0.0.1:${await freeLoopbackPort()}`,
      });
      expect(result.status, result.stderr).toBe(0);
      expect(result.stderr).toContain('ignoring');
      expect(result.stderr).toContain('Bad\\ Name.sock');
      const claudeJson = JSON.parse(readFileSync(path.join(home, '.claude.json'), 'utf8'));
      expect(claudeJson).toEqual({
        hasCompletedOnboarding: true,
        mcpServers: {
          git: { type: 'stdio', command: 'airlock-bridge', args: [path.join(root, 'git.sock')] },
          http: { type: 'stdio', command: 'airlock-bridge', args: [path.join(root, 'http.sock')] },
        },
      });
      const settings = JSON.parse(readFileSync(path.join(home, '.claude', 'settings.json'), 'utf8'));
      expect(settings).toEqual({ permissions: { allow: ['mcp__git__*', 'mcp__http__*'] } });
    });

    it('says so when no server socket is mounted, and still runs the command', async () => {
      const result = await runEntrypoint(['echo', 'ran'], {
        AIRLOCK_MODEL_SOCKET: path.join(root, 'model.sock'),
      });
      expect(result.status).toBe(0);
      expect(result.stdout).toBe('ran\n');
      expect(result.stderr).toContain('no MCP server sockets');
      expect(JSON.parse(readFileSync(path.join(home, '.claude.json'), 'utf8')).mcpServers).toEqual({});
    });

    it('leaves an existing ~/.claude.json alone', async () => {
      await listen(path.join(root, 'git.sock'));
      writeFileSync(path.join(home, '.claude.json'), '{"mine":true}');
      const result = await runEntrypoint(['true'], { AIRLOCK_MODEL_SOCKET: path.join(root, 'absent.sock') });
      expect(result.status).toBe(0);
      expect(result.stderr).toContain('leaving the MCP config as it is');
      expect(readFileSync(path.join(home, '.claude.json'), 'utf8')).toBe('{"mine":true}');
    });

    it('runs the command when HOME cannot be written', async () => {
      await listen(path.join(root, 'git.sock'));
      // A HOME below a regular file: nothing can be created there, not even by root.
      writeFileSync(path.join(root, 'a-file'), '');
      const result = await runEntrypoint(['echo', 'ran'], {
        HOME: path.join(root, 'a-file', 'home'),
        AIRLOCK_MODEL_SOCKET: path.join(root, 'absent.sock'),
      });
      expect(result.status).toBe(0);
      expect(result.stdout).toBe('ran\n');
      expect(result.stderr).toContain('cannot write to');
    });
  });
});
