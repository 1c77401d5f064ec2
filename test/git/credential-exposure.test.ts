// Where a git credential could surface on the host besides results: a process's argv (readable
// by every local user, the agent's uid included, through /proc) and files git leaves behind in
// the work tree or the host git dir. While git talks to the remote, every process's command line
// is read; afterwards every file the tools touched is searched for the token in any encoding.
import { promises as fs, readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Redactor } from '../../src/secrets/redact.js';
import { gitAdd, gitCommit, gitCreateBranch, gitFetch, gitPush, gitStatus } from '../../servers/git/tools.js';
import { gitContext, mustCall, ownedByAgent, tempDir } from './context.js';
import { createBareRepo, startSmartHttpServer, type SmartHttpServer } from './smart-http-server.js';

const SECRET = 'ghs_ExposureCheckToken_7f3e9a1b2c';
let root: string;
let server: SmartHttpServer;
let proxy: http.Server;
let proxyOrigin: string;
const commandLinesSeen: string[] = [];

/** Every process's argv right now. */
function allCommandLines(): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      out.push(readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').join(' '));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

beforeAll(async () => {
  root = await tempDir();
  await ownedByAgent(root);
  await fs.mkdir(path.join(root, 'repos'));
  await createBareRepo(path.join(root, 'repos'), 'app.git', { files: { 'README.md': '# app\n' } });
  server = await startSmartHttpServer({
    root: path.join(root, 'repos'),
    username: 'x-access-token',
    password: SECRET,
  });
  // In front of the git server: while each request is in flight (git and its helpers alive),
  // take a snapshot of every command line on the machine, then pass the request on.
  proxy = http.createServer((req, res) => {
    commandLinesSeen.push(...allCommandLines());
    const upstream = http.request(
      `${server.origin}${req.url}`,
      { method: req.method, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    req.pipe(upstream);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  proxyOrigin = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
});

afterAll(async () => {
  proxy?.closeAllConnections();
  proxy?.close();
  await server?.close();
  await fs.rm(root, { recursive: true, force: true });
});

it('never puts the credential in any process argv, nor in a file of the work tree or git dir', async () => {
  const workTree = path.join(root, 'wt');
  const stateDir = path.join(root, 'state');
  const ctx = gitContext({
    stateDir,
    secrets: { 'github-token': SECRET },
    section: {
      workspaces: {
        api: { path: workTree, remote: `${proxyOrigin}/app.git`, credential: 'github-token', branch: 'main' },
      },
    },
  });
  await mustCall(gitStatus, ctx, { workspace: 'api' }); // clone through the proxy
  await fs.writeFile(path.join(workTree, 'README.md'), '# app\nchanged\n');
  await mustCall(gitAdd, ctx, { workspace: 'api', paths: ['README.md'] });
  await mustCall(gitCommit, ctx, { workspace: 'api', message: 'change' });
  await mustCall(gitCreateBranch, ctx, { workspace: 'api', name: 'agent/x' });
  await mustCall(gitFetch, ctx, { workspace: 'api' });
  const pushed = await mustCall(
    gitPush,
    ctx,
    { workspace: 'api', branch: 'agent/x' },
    { branches: ['agent/*'] },
  );
  expect(pushed.structured).toMatchObject({ pushed: true });

  // The proxy saw git's requests (so the snapshots were taken while git ran), and they carried
  // the credential: the check below looks where it could have leaked, not at a run without it.
  expect(server.requests.length).toBeGreaterThan(3);
  expect(server.requests.every((r) => r.authorized)).toBe(true);
  expect(commandLinesSeen.some((c) => c.includes('git'))).toBe(true);

  const secret = new Redactor();
  secret.add(SECRET);
  secret.add(Buffer.from(`x-access-token:${SECRET}`).toString('base64'));
  expect(commandLinesSeen.filter((c) => secret.contains(c))).toEqual([]);

  const leaks: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await fs.readdir(dir, { withFileTypes: true })) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) await walk(full);
      else if (e.isFile() && secret.contains((await fs.readFile(full)).toString('latin1'))) leaks.push(full);
    }
  };
  await walk(workTree);
  await walk(stateDir);
  expect(leaks).toEqual([]);
});
