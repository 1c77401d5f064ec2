// Push and pull policy, the policy schema, credential scrubbing when git fails, cancellation.
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { gitServer } from '../../servers/git/index.js';
import { gitSectionSchema, pushOptionsSchema } from '../../servers/git/policy.js';
import { gitTools } from '../../servers/git/tools.js';
import { callTool, mustCall, useGitRemote, type GitTestContext } from './context.js';
import { createBareRepo, fixtureGitEnv, refOf, startSmartHttpServer } from './smart-http-server.js';

const run = promisify(execFile);
const SECRET = 'ghs_PolicySecret_5e6f7a8b';
const BASIC = Buffer.from(`x-access-token:${SECRET}`).toString('base64');
const tool = Object.fromEntries(gitTools.map((t) => [t.name, t]));

const fx = useGitRemote(SECRET);
let bare: string;

beforeAll(async () => {
  bare = await createBareRepo(fx.repos, 'app.git', { files: { 'README.md': 'hi\n' } });
});

let counter = 0;
async function freshWorkspace(remote = fx.server.repoUrl('app.git')) {
  const n = ++counter;
  const workTree = path.join(fx.root, `wt-${n}`);
  const ctx = fx.context({ stateDir: path.join(fx.root, `state-${n}`), workTree, remote });
  return { ctx, workTree };
}

async function commitFile(ctx: GitTestContext, workTree: string, file: string, content: string) {
  await fs.writeFile(path.join(workTree, file), content);
  await mustCall(tool.git_add!, ctx, { workspace: 'api', paths: [file] });
  return (await mustCall(tool.git_commit!, ctx, { workspace: 'api', message: `edit ${file}` })).structured
    .sha as string;
}

/** Pushes a commit to `branch` of the bare repository behind Airlock's back (another developer). */
async function upstreamCommit(branch: string, file: string): Promise<string> {
  const other = await fs.mkdtemp(path.join(fx.root, 'other-'));
  const env = fixtureGitEnv();
  await run('git', ['clone', '--quiet', '--branch', branch, bare, other], { env });
  await fs.writeFile(path.join(other, file), `${file}\n`);
  await run('git', ['-C', other, 'add', '-A'], { env });
  await run('git', ['-C', other, 'commit', '--quiet', '-m', `upstream ${file}`], { env });
  await run('git', ['-C', other, 'push', '--quiet', 'origin', branch], { env });
  return refOf(bare, `refs/heads/${branch}`)!;
}

describe('git_push policy', () => {
  it.each([
    [{ branch: 'main' }, { branches: ['agent/*'] }, 'git.tools.git_push.branches'],
    [{ branch: 'agent/x' }, {}, 'git.tools.git_push.branches'],
    [{ branch: 'agent/x/y' }, { branches: ['agent/*'] }, 'git.tools.git_push.branches'],
    [{ branch: 'agent/x', force: true }, { branches: ['agent/*'] }, 'git.tools.git_push.force'],
    [{ branch: 'agent/x', delete: true }, { branches: ['agent/*'] }, 'git.tools.git_push.delete'],
    [{ branch: 'refs/tags/v1' }, { branches: ['**'] }, 'git.tools.git_push.tags'],
  ])('%j with %j is denied by %s, and nothing reaches the remote', async (args, options, rule) => {
    const { ctx } = await freshWorkspace();
    await mustCall(tool.git_status!, ctx, { workspace: 'api' });
    const before = fx.server.requests.length;
    const outcome = await callTool(tool.git_push!, ctx, { workspace: 'api', ...args }, options);
    expect(outcome).toMatchObject({ ok: false, denied: true, rule });
    if (!outcome.ok) expect(outcome.text).toMatch(new RegExp(`^denied: ${rule.replace(/\./g, '\\.')}: `));
    expect(fx.server.requests.length).toBe(before);
  });

  it('a non-fast-forward push without force is rejected by the remote and reported, not forced', async () => {
    const { ctx, workTree } = await freshWorkspace();
    await mustCall(tool.git_create_branch!, ctx, { workspace: 'api', name: 'agent/nff' });
    await mustCall(tool.git_checkout!, ctx, { workspace: 'api', branch: 'agent/nff' });
    await commitFile(ctx, workTree, 'one.txt', '1\n');
    await mustCall(tool.git_push!, ctx, { workspace: 'api', branch: 'agent/nff' }, { branches: ['agent/*'] });
    const upstream = await upstreamCommit('agent/nff', 'theirs.txt');
    const mine = await commitFile(ctx, workTree, 'two.txt', '2\n');
    const push = await mustCall(
      tool.git_push!,
      ctx,
      { workspace: 'api', branch: 'agent/nff' },
      { branches: ['agent/*'] },
    );
    expect(push.structured).toMatchObject({ pushed: false });
    expect(push.text).toMatch(/rejected/);
    expect(refOf(bare, 'refs/heads/agent/nff')).toBe(upstream);

    // Force is allowed here, but the lease (our last fetch) protects the commit we have not seen.
    const leased = await mustCall(
      tool.git_push!,
      ctx,
      { workspace: 'api', branch: 'agent/nff', force: true },
      { branches: ['agent/*'], force: true },
    );
    expect(leased.structured.pushed).toBe(false);
    expect(refOf(bare, 'refs/heads/agent/nff')).toBe(upstream);
    // After fetching, the agent has seen it, and the force push goes through.
    await mustCall(tool.git_fetch!, ctx, { workspace: 'api' });
    const forced = await mustCall(
      tool.git_push!,
      ctx,
      { workspace: 'api', branch: 'agent/nff', force: true },
      { branches: ['agent/*'], force: true },
    );
    expect(forced.structured).toMatchObject({ pushed: true, forced: true });
    expect(refOf(bare, 'refs/heads/agent/nff')).toBe(mine);
  });

  it('deletes a remote branch only where the policy allows it', async () => {
    const { ctx } = await freshWorkspace();
    await mustCall(tool.git_create_branch!, ctx, { workspace: 'api', name: 'agent/gone' });
    await mustCall(
      tool.git_push!,
      ctx,
      { workspace: 'api', branch: 'agent/gone' },
      { branches: ['agent/*'] },
    );
    expect(refOf(bare, 'refs/heads/agent/gone')).toBeDefined();
    const del = await mustCall(
      tool.git_push!,
      ctx,
      { workspace: 'api', branch: 'agent/gone', delete: true },
      { branches: ['agent/*'], delete: true },
    );
    expect(del.structured).toMatchObject({ pushed: true, deleted: true });
    expect(refOf(bare, 'refs/heads/agent/gone')).toBeUndefined();
  });

  it('pushing a branch that does not exist locally is an invalid argument', async () => {
    const { ctx } = await freshWorkspace();
    const outcome = await callTool(
      tool.git_push!,
      ctx,
      { workspace: 'api', branch: 'agent/none' },
      { branches: ['agent/*'] },
    );
    expect(outcome.ok).toBe(false);
    if (!outcome.ok) expect(outcome.text).toMatch(/^invalid argument: no local branch/);
  });
});

describe('git_pull', () => {
  it('fast-forwards, and refuses a diverged branch unless merges are allowed', async () => {
    await createBareRepo(fx.repos, 'pull.git', { files: { 'README.md': 'hi\n' } });
    const pullBare = path.join(fx.repos, 'pull.git');
    const { ctx, workTree } = await freshWorkspace(fx.server.repoUrl('pull.git'));
    await mustCall(tool.git_status!, ctx, { workspace: 'api' });
    const other = path.join(fx.root, 'pull-other');
    const env = fixtureGitEnv();
    await run('git', ['clone', '--quiet', pullBare, other], { env });
    const pushUpstream = async (file: string) => {
      await fs.writeFile(path.join(other, file), `${file}\n`);
      await run('git', ['-C', other, 'add', '-A'], { env });
      await run('git', ['-C', other, 'commit', '--quiet', '-m', file], { env });
      await run('git', ['-C', other, 'push', '--quiet', 'origin', 'main'], { env });
    };
    await pushUpstream('up1.txt');
    const ff = await mustCall(tool.git_pull!, ctx, { workspace: 'api' });
    expect(ff.structured.result).toBe('fast-forward');
    expect(await fs.readFile(path.join(workTree, 'up1.txt'), 'utf8')).toBe('up1.txt\n');

    await pushUpstream('up2.txt');
    await commitFile(ctx, workTree, 'mine.txt', 'mine\n');
    const refused = await callTool(tool.git_pull!, ctx, { workspace: 'api' });
    expect(refused).toMatchObject({ ok: false, denied: true, rule: 'git.tools.git_pull.merge' });
    const merged = await mustCall(tool.git_pull!, ctx, { workspace: 'api' }, { merge: true });
    expect(merged.structured.result).toBe('merge');
    const log = await mustCall(tool.git_log!, ctx, { workspace: 'api', maxCount: 1 });
    expect((log.structured.commits as { author: string }[])[0]!.author).toBe('Airlock Agent');
  });
});

describe('the credential never comes back', () => {
  it('is scrubbed from git errors even when the remote echoes it', async () => {
    await createBareRepo(fx.repos, 'echo.git', { files: { 'README.md': 'hi\n' } });
    const hook = path.join(fx.repos, 'echo.git', 'hooks', 'pre-receive');
    await fs.writeFile(hook, `#!/bin/sh\necho "rejected for ${SECRET} / Basic ${BASIC}" >&2\nexit 1\n`, {
      mode: 0o755,
    });
    const { ctx } = await freshWorkspace(fx.server.repoUrl('echo.git'));
    await mustCall(tool.git_create_branch!, ctx, { workspace: 'api', name: 'agent/echo' });
    const outcome = await callTool(
      tool.git_push!,
      ctx,
      { workspace: 'api', branch: 'agent/echo' },
      { branches: ['agent/*'] },
    );
    const serialized = JSON.stringify(outcome, (_k, v: unknown) =>
      v instanceof Error ? { message: v.message } : v,
    );
    expect(outcome).toMatchObject({ ok: true, result: { structured: { pushed: false } } });
    expect(serialized).toMatch(/rejected for \[redacted\]/); // the echo did come back, scrubbed
    expect(serialized).not.toContain(SECRET);
    expect(serialized).not.toContain(BASIC);
  });

  it('is not in the error for an unreachable remote', async () => {
    const closed = http.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const { ctx } = await freshWorkspace(`http://127.0.0.1:${port}/app.git`);
    const outcome = await callTool(tool.git_fetch!, ctx, { workspace: 'api' });
    expect(outcome.ok).toBe(false);
    if (!outcome.ok) {
      expect(outcome.text).toMatch(
        /^error: git fetch failed: .*(Failed to connect|Connection refused|Couldn't connect)/s,
      );
      expect(outcome.text).not.toContain(SECRET);
      expect(outcome.text).not.toContain(BASIC);
    }
  });

  it('a redirect from the remote is not followed: the credential never goes to another origin', async () => {
    const elsewhere = await startSmartHttpServer({
      root: fx.repos,
      username: 'x-access-token',
      password: SECRET,
    });
    const redirector = http.createServer((req, res) => {
      res.writeHead(302, { Location: `${elsewhere.origin}${req.url ?? '/'}` });
      res.end();
    });
    await new Promise<void>((r) => redirector.listen(0, '127.0.0.1', r));
    try {
      const { ctx } = await freshWorkspace(
        `http://127.0.0.1:${(redirector.address() as AddressInfo).port}/app.git`,
      );
      const outcome = await callTool(tool.git_status!, ctx, { workspace: 'api' });
      expect(outcome.ok).toBe(false);
      expect(elsewhere.requests).toEqual([]);
    } finally {
      await elsewhere.close();
      await new Promise<void>((r) => redirector.close(() => r()));
    }
  });

  it('a hanging remote is cut off when the call is cancelled, killing git', async () => {
    const sockets = new Set<import('node:net').Socket>();
    const hanging = http.createServer(() => undefined); // never answers
    hanging.on('connection', (s) => sockets.add(s));
    await new Promise<void>((r) => hanging.listen(0, '127.0.0.1', r));
    const port = (hanging.address() as AddressInfo).port;
    const abort = new AbortController();
    const n = ++counter;
    const ctx = fx.context({
      stateDir: path.join(fx.root, `state-${n}`),
      workTree: path.join(fx.root, `wt-${n}`),
      remote: `http://127.0.0.1:${port}/app.git`,
      signal: abort.signal,
    });
    setTimeout(() => abort.abort(), 300);
    // The remote never answers, so only the abort can end the call: its error says so.
    const outcome = await callTool(tool.git_status!, ctx, { workspace: 'api' });
    expect(outcome.ok).toBe(false);
    if (!outcome.ok) expect(outcome.text).toMatch(/cancelled/);
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => hanging.close(() => r()));
  });
});

describe('policy section', () => {
  const ws = (remote: string, extra: Record<string, unknown> = {}) => ({
    workspaces: { api: { path: '/srv/wt', remote, ...extra } },
  });
  it.each([
    ['ext::sh -c touch% /tmp/pwned', /whitespace/],
    ['ext::/tmp/evil.sh', /protocol "ext:"/],
    ['file:///srv/repo.git', /protocol "file:"/],
    ['ssh://git@github.com/acme/x.git', /protocol "ssh:"/],
    ['git@github.com:acme/x.git', /not a URL|protocol/],
    ['http://github.com/acme/x.git', /loopback/],
    ['https://user:pw@github.com/acme/x.git', /user info/],
    ['https://github.com/acme/x.git --upload-pack=x', /whitespace/],
  ])('rejects remote %j', (remote, why) => {
    const result = gitSectionSchema.safeParse(ws(remote));
    expect(result.success).toBe(false);
    expect(result.error?.issues.map((i) => i.message).join('\n')).toMatch(why);
  });

  it('accepts https and loopback http, applies defaults, rejects unknown keys', () => {
    const parsed = gitSectionSchema.parse(
      ws('https://github.com/acme/x.git', { credential: 'github-token' }),
    );
    expect(parsed.workspaces.api).toMatchObject({
      branch: 'main',
      credentialUser: 'x-access-token',
      author: { name: 'Airlock Agent' },
    });
    expect(gitSectionSchema.safeParse(ws('http://127.0.0.1:8080/x.git')).success).toBe(true);
    expect(gitSectionSchema.safeParse(ws('https://github.com/acme/x.git', { hooks: true })).success).toBe(
      false,
    );
    expect(
      gitSectionSchema.safeParse(ws('https://github.com/acme/x.git', { branch: '--orphan' })).success,
    ).toBe(false);
    expect(
      gitSectionSchema.safeParse(ws('https://github.com/acme/x.git', { path: 'relative/wt' })).success,
    ).toBe(false);
    expect(pushOptionsSchema.parse({})).toEqual({ branches: [], force: false, tags: false, delete: false });
    expect(pushOptionsSchema.safeParse({ branches: ['agent/*'], mirror: true }).success).toBe(false);
  });

  it('reports each workspace credential as a secret reference', () => {
    const section = gitSectionSchema.parse({
      workspaces: {
        api: { path: '/a', remote: 'https://github.com/a/a.git', credential: 'github-token' },
        docs: { path: '/b', remote: 'https://github.com/a/b.git' },
      },
    });
    expect(gitServer.secretRefs(section)).toEqual([
      { name: 'github-token', path: ['workspaces', 'api', 'credential'] },
    ]);
    expect(gitServer.tools.map((t) => t.name).sort()).toEqual([
      'git_add',
      'git_branch_list',
      'git_checkout',
      'git_commit',
      'git_create_branch',
      'git_diff',
      'git_fetch',
      'git_log',
      'git_pull',
      'git_push',
      'git_show',
      'git_status',
    ]);
  });
});
