// The real docker client, pointed at a loopback Unix socket that stands in for the engine's API
// (there is no engine on the test machine). It checks that the client accepts every flag
// run-agent.sh passes and turns them into the container config the sandbox needs.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dockerDir, runAgentScript, Sandbox, TEAM } from './helpers.js';

interface CreateRequest {
  Image: string;
  Cmd: string[] | null;
  User: string;
  Env: string[];
  WorkingDir: string;
  HostConfig: Record<string, unknown> & {
    Binds: string[];
    SecurityOpt: string[];
    Tmpfs: Record<string, string>;
    Ulimits: Array<{ Name: string; Soft: number; Hard: number }>;
  };
}

let sandbox: Sandbox;
let server: http.Server;
let created: CreateRequest[];
let requested: string[];

beforeEach(async () => {
  sandbox = new Sandbox();
  created = [];
  requested = [];
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
    req.on('end', () => {
      requested.push(`${req.method} ${req.url}`);
      if (req.url?.endsWith('/_ping')) {
        res.writeHead(200, { 'API-Version': '1.47', OSType: 'linux', 'Content-Type': 'text/plain' });
        res.end(req.method === 'HEAD' ? undefined : 'OK');
        return;
      }
      // run-agent.sh first checks that the image is on this machine.
      if (req.method === 'GET' && /\/images\/airlock-agent:latest\/json$/.test(req.url ?? '')) {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ Id: 'sha256:' + '0'.repeat(64), RepoTags: ['airlock-agent:latest'] }));
        return;
      }
      const image = /\/images\/(.+)\/json$/.exec(req.url ?? '');
      if (req.method === 'GET' && image) {
        // What the engine answers for an image it does not have.
        res.writeHead(404, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ message: `No such image: ${decodeURIComponent(image[1]!)}` }));
        return;
      }
      if (req.method === 'POST' && /\/containers\/create/.test(req.url ?? '')) created.push(JSON.parse(body));
      // Refuse everything, so the client stops after sending the create request.
      res.writeHead(400, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ message: 'airlock test: request recorded' }));
    });
  });
  await new Promise<void>((resolve) => server.listen(path.join(sandbox.root, 'engine.sock'), resolve));
});

afterEach(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  sandbox.cleanup();
});

function runAgainstStandIn(args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [runAgentScript, ...args], {
      env: {
        ...process.env,
        DOCKER_HOST: `unix://${path.join(sandbox.root, 'engine.sock')}`,
        DOCKER_CONFIG: path.join(sandbox.root, 'docker-config'),
        DOCKER_CONTEXT: '',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: 20_000,
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stderr }));
  });
}

describe('the docker client accepts the run-agent.sh command', () => {
  it('and refuses, naming the build script, when the image is not on this machine', async () => {
    const result = await runAgainstStandIn([...sandbox.baseArgs(), '--image', 'airlock-agent:absent']);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('never pulls');
    expect(result.stderr).toContain('docker/build-image.sh --tag airlock-agent:absent');
    expect(created).toEqual([]);
  });

  it('and asks the engine for the sandboxed container', async () => {
    const result = await runAgainstStandIn([...sandbox.baseArgs(), '--', 'claude', '-p', 'hello']);
    expect(result.stderr).toContain('airlock test: request recorded');
    expect(result.status).not.toBe(0);
    expect(created).toHaveLength(1);
    // --pull never: the client never asks the engine to pull the image.
    expect(requested.filter((r) => r.includes('/images/create'))).toEqual([]);
    const request = created[0]!;
    const host = request.HostConfig;

    expect(request.Image).toBe('airlock-agent:latest');
    expect(request.Cmd).toEqual(['claude', '-p', 'hello']);
    expect(request.User).toBe('1000:1000');
    expect(request.WorkingDir).toBe('/workspace');
    expect(request.Env).toEqual(['ANTHROPIC_BASE_URL=http://127.0.0.1:8080']);

    expect(host.NetworkMode).toBe('none');
    expect(host.CapDrop).toEqual(['ALL']);
    expect(host.CapAdd ?? null).toBeNull();
    expect(host.Privileged).toBe(false);
    expect(host.ReadonlyRootfs).toBe(true);
    expect(host.AutoRemove).toBe(true);
    expect(host.Init).toBe(true);
    expect(host.IpcMode).toBe('private');
    expect(host.Memory).toBe(4 * 1024 ** 3);
    expect(host.MemorySwap).toBe(4 * 1024 ** 3);
    expect(host.NanoCpus).toBe(2e9);
    expect(host.PidsLimit).toBe(512);
    expect(host.Ulimits).toEqual([{ Name: 'core', Soft: 0, Hard: 0 }]);
    expect(host.Binds.sort()).toEqual(
      [`${sandbox.workspace}:/workspace`, `${path.join(sandbox.socketDir, TEAM)}:/run/airlock:ro`].sort(),
    );
    expect(host.Tmpfs).toEqual({
      '/tmp': 'rw,noexec,nosuid,nodev,size=512m',
      '/home/agent': 'rw,noexec,nosuid,nodev,size=512m,uid=1000,gid=1000,mode=0700',
    });

    // The client reads the profile itself and sends its content.
    expect(host.SecurityOpt).toContain('no-new-privileges');
    const seccomp = host.SecurityOpt.find((o) => o.startsWith('seccomp='));
    expect(seccomp).toBeDefined();
    const profileSent = JSON.parse(seccomp!.slice('seccomp='.length));
    expect(profileSent).toEqual(JSON.parse(readFileSync(path.join(dockerDir, 'seccomp.json'), 'utf8')));
  });
});
