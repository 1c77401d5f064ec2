// The core path: clone on first use, status/diff/add/commit, and a push that lands on a real
// smart-HTTP server only because Airlock injects the credential.
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  gitAdd,
  gitCommit,
  gitCreateBranch,
  gitDiff,
  gitPush,
  gitStatus,
  gitCheckout,
  gitLog,
} from '../../servers/git/tools.js';
import { callTool, mustCall, useGitRemote } from './context.js';
import { createBareRepo, fixtureGitEnv, refOf } from './smart-http-server.js';

const run = promisify(execFile);
const SECRET = 'ghs_TopSecretToken_4f9a2c';
const BASIC = Buffer.from(`x-access-token:${SECRET}`).toString('base64');

const fx = useGitRemote(SECRET);
let bare: string;

beforeAll(async () => {
  bare = await createBareRepo(fx.repos, 'app.git', {
    files: { 'README.md': '# app\n', 'src/main.ts': 'export {};\n' },
  });
});

function context(name: string) {
  return fx.context({
    stateDir: path.join(fx.root, `state-${name}`),
    workTree: path.join(fx.root, `wt-${name}`),
    branch: 'main',
  });
}

describe('git server against a real smart-HTTP remote', () => {
  it('clones on first use into a host-owned git dir, and the push through Airlock lands', async () => {
    const ctx = context('a');
    const status = await mustCall(gitStatus, ctx, { workspace: 'api' });
    expect(status.structured).toMatchObject({ branch: 'main', clean: true, ahead: 0, behind: 0 });
    const workTree = path.join(fx.root, 'wt-a');
    expect(await fs.readFile(path.join(workTree, 'README.md'), 'utf8')).toBe('# app\n');
    // No git metadata in the agent's work tree; it lives under <stateDir>/git/<team>/<ws>.git.
    await expect(fs.lstat(path.join(workTree, '.git'))).rejects.toThrow();
    await fs.access(path.join(fx.root, 'state-a', 'git', 'payments', 'api.git', 'HEAD'));

    await fs.writeFile(path.join(workTree, 'README.md'), '# app\n\nfixed\n');
    const diff = await mustCall(gitDiff, ctx, { workspace: 'api' });
    expect(diff.structured.diff).toContain('+fixed');
    await mustCall(gitAdd, ctx, { workspace: 'api', paths: ['README.md'] });
    const staged = await mustCall(gitDiff, ctx, { workspace: 'api', staged: true });
    expect(staged.structured.diff).toContain('+fixed');
    const commit = await mustCall(gitCommit, ctx, { workspace: 'api', message: 'Fix the readme' });
    const sha = commit.structured.sha as string;
    expect(sha).toMatch(/^[0-9a-f]{40}$/);
    // The commit is ahead of the last fetch of main.
    const committed = await mustCall(gitStatus, ctx, { workspace: 'api' });
    expect(committed.structured).toMatchObject({ branch: 'main', ahead: 1, behind: 0 });
    const log = await mustCall(gitLog, ctx, { workspace: 'api', maxCount: 1 });
    expect(log.structured.commits).toEqual([
      expect.objectContaining({
        sha,
        subject: 'Fix the readme',
        author: 'Airlock Agent',
        email: 'airlock-agent@localhost',
      }),
    ]);

    await mustCall(gitCreateBranch, ctx, { workspace: 'api', name: 'agent/fix' });
    await mustCall(gitCheckout, ctx, { workspace: 'api', branch: 'agent/fix' });
    // A branch its remote does not have yet: nothing to count against.
    const unpushed = await mustCall(gitStatus, ctx, { workspace: 'api' });
    expect(unpushed.structured).toMatchObject({ branch: 'agent/fix', ahead: null, behind: null });
    const before = fx.server.requests.length;
    const push = await mustCall(
      gitPush,
      ctx,
      { workspace: 'api', branch: 'agent/fix' },
      { branches: ['agent/*'] },
    );
    expect(push.structured).toMatchObject({ pushed: true, ref: 'refs/heads/agent/fix', sha });
    expect(refOf(bare, 'refs/heads/agent/fix')).toBe(sha);
    // The push carried the credential on every request.
    const pushRequests = fx.server.requests.slice(before);
    expect(pushRequests.length).toBeGreaterThan(0);
    expect(pushRequests.every((r) => r.authorized)).toBe(true);
    // Tracking ref updated, so status reports nothing ahead.
    const after = await mustCall(gitStatus, ctx, { workspace: 'api' });
    expect(after.structured).toMatchObject({ branch: 'agent/fix', ahead: 0, behind: 0 });

    for (const result of [status, diff, staged, commit, log, push, after]) {
      const serialized = JSON.stringify(result);
      expect(serialized).not.toContain(SECRET);
      expect(serialized).not.toContain(BASIC);
    }
    // Only the policy remote was contacted.
    expect(fx.server.requests.every((r) => r.url.startsWith('/app.git/'))).toBe(true);
  });

  it('the same push without Airlock injecting the credential is refused', async () => {
    const ctx = context('b');
    const workTree = path.join(fx.root, 'wt-b');
    await mustCall(gitStatus, ctx, { workspace: 'api' });
    await fs.writeFile(path.join(workTree, 'raw.txt'), 'raw\n');
    await mustCall(gitAdd, ctx, { workspace: 'api', paths: ['raw.txt'] });
    const { structured } = await mustCall(gitCommit, ctx, { workspace: 'api', message: 'raw' });
    const gitDir = path.join(fx.root, 'state-b', 'git', 'payments', 'api.git');
    const before = fx.server.requests.length;
    const raw = run(
      'git',
      [
        '--git-dir',
        gitDir,
        'push',
        fx.server.repoUrl('app.git'),
        `${structured.sha as string}:refs/heads/agent/raw`,
      ],
      {
        env: fixtureGitEnv(),
      },
    );
    await expect(raw).rejects.toThrow(/Authentication failed|could not read Username|401/);
    expect(refOf(bare, 'refs/heads/agent/raw')).toBeUndefined();
    const rawRequests = fx.server.requests.slice(before);
    expect(rawRequests.length).toBeGreaterThan(0);
    expect(rawRequests.every((r) => r.status === 401 && !r.authorized)).toBe(true);

    // And the tool, with the credential, lands the very same commit.
    await mustCall(gitCreateBranch, ctx, { workspace: 'api', name: 'agent/raw' });
    const pushed = await mustCall(
      gitPush,
      ctx,
      { workspace: 'api', branch: 'agent/raw' },
      { branches: ['agent/*'] },
    );
    expect(pushed.structured.pushed).toBe(true);
    expect(refOf(bare, 'refs/heads/agent/raw')).toBe(structured.sha);
  });

  it('a wrong credential fails cleanly without echoing it', async () => {
    const wrong = 'ghs_WrongTokenValue_77aa31';
    const ctx = fx.context({
      stateDir: path.join(fx.root, 'state-c'),
      workTree: path.join(fx.root, 'wt-c'),
      branch: 'main',
      secret: wrong,
    });
    const outcome = await callTool(gitStatus, ctx, { workspace: 'api' });
    expect(outcome.ok).toBe(false);
    expect(outcome.ok ? '' : outcome.text).toMatch(/^error: git fetch failed/);
    const serialized = JSON.stringify(outcome, (_k, v: unknown) =>
      v instanceof Error ? { message: v.message, stack: v.stack } : v,
    );
    expect(serialized).not.toContain(wrong);
    expect(serialized).not.toContain(Buffer.from(`x-access-token:${wrong}`).toString('base64'));
    // A failed first clone leaves no half-made git dir behind.
    expect(await fs.readdir(path.join(fx.root, 'state-c', 'git', 'payments'))).toEqual(['.home']);
  });

  it('starts from an empty remote: first commit on an unborn branch, pushed as a new branch', async () => {
    await createBareRepo(fx.repos, 'empty.git');
    const ctx = fx.context({
      stateDir: path.join(fx.root, 'state-empty'),
      workTree: path.join(fx.root, 'wt-empty'),
      remote: fx.server.repoUrl('empty.git'),
      branch: 'trunk',
    });
    const status = await mustCall(gitStatus, ctx, { workspace: 'api' });
    expect(status.structured).toMatchObject({ branch: 'trunk', head: null, clean: true, ahead: null });
    const log = await mustCall(gitLog, ctx, { workspace: 'api' });
    expect(log.structured.commits).toEqual([]);
    await fs.writeFile(path.join(fx.root, 'wt-empty', 'first.txt'), 'first\n');
    await mustCall(gitAdd, ctx, { workspace: 'api', paths: ['.'] });
    const { structured } = await mustCall(gitCommit, ctx, { workspace: 'api', message: 'first' });
    const push = await mustCall(gitPush, ctx, { workspace: 'api', branch: 'trunk' }, { branches: ['trunk'] });
    expect(push.structured.pushed).toBe(true);
    expect(refOf(path.join(fx.repos, 'empty.git'), 'refs/heads/trunk')).toBe(structured.sha);
  });

  it('keeps the files of a non-empty work tree on first use and writes only the missing ones', async () => {
    const workTree = path.join(fx.root, 'wt-full');
    await fs.mkdir(workTree);
    await fs.writeFile(path.join(workTree, 'README.md'), 'the agent was here first\n');
    const ctx = fx.context({ stateDir: path.join(fx.root, 'state-full'), workTree });
    const status = await mustCall(gitStatus, ctx, { workspace: 'api' });
    expect(await fs.readFile(path.join(workTree, 'README.md'), 'utf8')).toBe('the agent was here first\n');
    // The agent's own file stays (and shows as a change); the branch's other files are written.
    expect(await fs.readFile(path.join(workTree, 'src/main.ts'), 'utf8')).toBe('export {};\n');
    expect(status.structured.files).toEqual([expect.objectContaining({ path: 'README.md', workTree: 'M' })]);
  });

  it('pushes a tag only where the policy allows tags', async () => {
    const ctx = context('tag');
    await mustCall(gitStatus, ctx, { workspace: 'api' });
    const gitDir = path.join(fx.root, 'state-tag', 'git', 'payments', 'api.git');
    await run('git', ['--git-dir', gitDir, 'tag', 'v1.0', 'HEAD'], { env: fixtureGitEnv() });
    const denied = await callTool(
      gitPush,
      ctx,
      { workspace: 'api', branch: 'refs/tags/v1.0' },
      { branches: ['**'] },
    );
    expect(denied).toMatchObject({ ok: false, denied: true, rule: 'git.tools.git_push.tags' });
    expect(refOf(bare, 'refs/tags/v1.0')).toBeUndefined();
    const pushed = await mustCall(
      gitPush,
      ctx,
      { workspace: 'api', branch: 'refs/tags/v1.0' },
      { tags: true },
    );
    expect(pushed.structured).toMatchObject({ pushed: true, ref: 'refs/tags/v1.0' });
    expect(refOf(bare, 'refs/tags/v1.0')).toBe(refOf(gitDir, 'refs/tags/v1.0^{commit}'));
  });
});
