// Hostile arguments: option-looking refs and paths, `..` and symlink escapes, `.git` paths.
// Each is refused with a clear "invalid argument:" message before git could act on it.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { gitTools } from '../../servers/git/tools.js';
import { callTool, mustCall, useGitRemote, type GitTestContext } from './context.js';
import { createBareRepo } from './smart-http-server.js';

const SECRET = 'ghs_ArgumentsSecret_0c1d2e';
const tool = Object.fromEntries(gitTools.map((t) => [t.name, t]));

const fx = useGitRemote(SECRET);
let ctx: GitTestContext;
let workTree: string;

beforeAll(async () => {
  await createBareRepo(fx.repos, 'app.git', {
    files: { 'README.md': 'hi\n', 'src/a.ts': 'a\n' },
  });
  workTree = path.join(fx.root, 'wt');
  ctx = fx.context({ stateDir: path.join(fx.root, 'state'), workTree });
  await mustCall(tool.git_status!, ctx, { workspace: 'api' });
  await fs.mkdir(path.join(fx.root, 'outside'));
  await fs.writeFile(path.join(fx.root, 'outside', 'secret.txt'), 'outside\n');
  await fs.symlink(path.join(fx.root, 'outside'), path.join(workTree, 'escape'));
  await fs.symlink(path.join(fx.root, 'outside', 'secret.txt'), path.join(workTree, 'escape-file'));
  await fs.symlink(path.join(fx.root, 'state', 'git', 'payments', 'api.git'), path.join(workTree, 'hostgit'));
  await fs.mkdir(path.join(workTree, '.git'));
  await fs.writeFile(path.join(workTree, '.git', 'config'), '[core]\n\tfsmonitor = /bin/false\n');
  await fs.symlink('.git', path.join(workTree, 'dotgit-link'));
  await fs.writeFile(path.join(workTree, 'README.md'), 'hi\nchanged\n');
});

async function expectInvalid(
  name: string,
  args: Record<string, unknown>,
  why: RegExp,
  options: Record<string, unknown> = {},
) {
  const outcome = await callTool(tool[name]!, ctx, { workspace: 'api', ...args }, options);
  expect(outcome.ok, `${name} ${JSON.stringify(args)} should be refused`).toBe(false);
  if (!outcome.ok) {
    expect(outcome.text).toMatch(/^invalid argument: /);
    expect(outcome.text).toMatch(why);
  }
}

describe('option-looking refs never reach git as options', () => {
  const pwned = () => path.join(fx.root, 'pwned');
  it.each([
    ['git_diff', { ref: '--output=PWNED' }],
    ['git_log', { ref: '--output=PWNED' }],
    ['git_show', { ref: '--output=PWNED' }],
    ['git_log', { ref: '--upload-pack=touch PWNED' }],
    ['git_create_branch', { name: 'x', from: '--output=PWNED' }],
  ])('%s %j', async (name, args) => {
    const withPath = Object.fromEntries(
      Object.entries(args).map(([k, v]) => [k, v.replace('PWNED', pwned())]),
    );
    await expectInvalid(name, withPath, /must not start with "-"/);
    await expect(fs.access(pwned())).rejects.toThrow();
  });

  it.each([
    ['git_create_branch', { name: '--force' }],
    ['git_create_branch', { name: '-D' }],
    ['git_checkout', { branch: '--orphan=x' }],
    ['git_checkout', { branch: '-' }],
  ])('branch names %s %j', async (name, args) => {
    await expectInvalid(name, args, /must not start with "-"/);
  });

  it('a push of an option-looking branch is refused even where the globs match anything', async () => {
    await expectInvalid('git_push', { branch: '--upload-pack=touch /tmp/x' }, /must not start with "-"/, {
      branches: ['**'],
    });
    await expectInvalid('git_push', { branch: '--receive-pack=x' }, /must not start with "-"/, {
      branches: ['**'],
    });
  });

  it.each([
    ['git_create_branch', { name: 'a..b' }],
    ['git_create_branch', { name: 'x.lock' }],
    ['git_create_branch', { name: 'refs/heads/main' }],
    ['git_checkout', { branch: '@{-1}' }],
    ['git_checkout', { branch: 'a b' }],
  ])('malformed branch names %s %j', async (name, args) => {
    await expectInvalid(name, args, /valid git ref name|not a plain branch name/);
  });

  it('refs that name no commit are refused, and a range is not a ref', async () => {
    await expectInvalid('git_show', { ref: 'no-such-branch' }, /does not name a commit/);
    await expectInvalid('git_diff', { ref: 'HEAD..HEAD~1' }, /does not name a commit/);
    await expectInvalid('git_log', { ref: 'HEAD\n--all' }, /control character/);
  });

  it('ordinary refs still work', async () => {
    const shown = await mustCall(tool.git_show!, ctx, { workspace: 'api', ref: 'main' });
    expect(shown.structured.message).toBe('initial commit');
    const diff = await mustCall(tool.git_diff!, ctx, { workspace: 'api', ref: 'HEAD' });
    expect(diff.structured.diff).toContain('+changed');
  });
});

describe('paths stay inside the work tree', () => {
  it.each([
    ['--output=/tmp/airlock-pwned', /must not start with "-"/],
    ['../outside/secret.txt', /escapes the work tree/],
    ['src/../../outside', /escapes the work tree/],
    ['/etc/passwd', /absolute/],
    ['escape/secret.txt', /outside the work tree \(symlink\)/],
    ['escape', /outside the work tree \(symlink\)/],
    ['escape-file', /outside the work tree \(symlink\)/],
    ['hostgit/config', /outside the work tree \(symlink\)/],
    ['.git/config', /inside \.git/],
    ['.GIT/config', /inside \.git/],
    ['src/../.git', /inside \.git/],
    ['dotgit-link/config', /inside \.git/],
    ['a\0b', /NUL/],
  ])('git_add and git_diff refuse %j', async (p, why) => {
    await expectInvalid('git_add', { paths: ['README.md', p] }, why);
    await expectInvalid('git_diff', { paths: [p] }, why);
  });

  it('nothing was staged by the refused calls, and good paths work', async () => {
    const staged = await mustCall(tool.git_diff!, ctx, { workspace: 'api', staged: true });
    expect(staged.structured.diff).toBe('');
    const added = await mustCall(tool.git_add!, ctx, { workspace: 'api', paths: ['./README.md', 'src/'] });
    expect(added.structured.staged).toEqual(['README.md']);
  });

  it('pathspec magic is taken literally', async () => {
    const outcome = await callTool(tool.git_add!, ctx, { workspace: 'api', paths: [':(exclude)README.md'] });
    expect(outcome.ok).toBe(false);
    if (!outcome.ok) expect(outcome.text).toMatch(/did not match any files/);
  });
});

describe('workspaces and inputs', () => {
  it('an unknown workspace is denied by policy', async () => {
    const outcome = await callTool(tool.git_status!, ctx, { workspace: 'other' });
    expect(outcome).toMatchObject({ ok: false, denied: true, rule: 'git.workspaces' });
    const proto = await callTool(tool.git_status!, ctx, { workspace: '__proto__' });
    expect(proto).toMatchObject({ ok: false, denied: true, rule: 'git.workspaces' });
  });

  it('unknown arguments are refused by the input schema', async () => {
    const outcome = await callTool(tool.git_fetch!, ctx, { workspace: 'api', uploadPack: 'touch /tmp/x' });
    expect(outcome.ok).toBe(false);
    if (!outcome.ok) expect(outcome.text).toMatch(/^invalid argument:/);
  });

  it('a commit message is data: option-looking text is committed verbatim, never parsed', async () => {
    const commit = await mustCall(tool.git_commit!, ctx, {
      workspace: 'api',
      message: '--amend --no-edit\n\n--author=evil <e@x>',
    });
    const shown = await mustCall(tool.git_show!, ctx, {
      workspace: 'api',
      ref: commit.structured.sha as string,
    });
    expect(shown.structured.message).toBe('--amend --no-edit\n\n--author=evil <e@x>');
    expect(shown.structured.author).toBe('Airlock Agent');
  });
});
