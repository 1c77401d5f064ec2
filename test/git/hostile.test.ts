// A hostile work tree: everything an agent can plant to make host-side git run a program or
// talk to another server. Every tool runs over it; no planted program may ever run (each one
// appends to a marker file) and no request may go anywhere but the policy remote.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { gitTools } from '../../servers/git/tools.js';
import { mustCall, useGitRemote } from './context.js';
import { createBareRepo, fixtureGitEnv, refOf } from './smart-http-server.js';

const run = promisify(execFile);
const SECRET = 'ghs_HostileTreeSecret_91bd0e';
const tool = Object.fromEntries(gitTools.map((t) => [t.name, t]));
const fx = useGitRemote(SECRET);

const HOOKS = [
  'pre-commit',
  'prepare-commit-msg',
  'commit-msg',
  'post-commit',
  'pre-push',
  'post-checkout',
  'post-merge',
  'pre-merge-commit',
  'reference-transaction',
  'post-index-change',
  'pre-auto-gc',
  'post-rewrite',
  'fsmonitor-watchman',
  'push-to-checkout',
  'pre-rebase',
  'sendemail-validate',
  'p4-pre-submit',
  'post-update',
  'pre-receive',
  'update',
];

class Plant {
  constructor(
    readonly dir: string,
    readonly markers: string,
  ) {}
  /** A program that appends its name to a marker file when run. */
  async program(name: string): Promise<string> {
    const file = path.join(this.dir, `${name}.sh`);
    await fs.writeFile(
      file,
      `#!/bin/sh\necho "$0 $*" >> '${path.join(this.markers, name)}'\ncat >/dev/null 2>&1 &\nexit 0\n`,
      { mode: 0o755 },
    );
    return file;
  }
  async markersFound(): Promise<string[]> {
    return fs.readdir(this.markers);
  }
  async clearMarkers(): Promise<void> {
    for (const m of await fs.readdir(this.markers)) await fs.rm(path.join(this.markers, m));
  }
}

/** A git config that names a planted program in every slot git would run one from. */
async function evilConfig(
  plant: Plant,
  tag: string,
  hooksDir: string,
  policyRemote: string,
): Promise<string> {
  const p = (n: string) => plant.program(`${tag}-${n}`);
  return `[core]
\tfsmonitor = ${await p('fsmonitor')}
\thooksPath = ${hooksDir}
\tpager = ${await p('pager')}
\teditor = ${await p('editor')}
\tsshCommand = ${await p('ssh')}
\taskPass = ${await p('askpass')}
\tgitProxy = ${await p('gitproxy')}
[diff]
\texternal = ${await p('diff-external')}
[diff "evil"]
\ttextconv = ${await p('textconv')}
\tcommand = ${await p('diff-command')}
[filter "evil"]
\tclean = ${await p('filter-clean')}
\tsmudge = ${await p('filter-smudge')}
\trequired = true
[merge "evil"]
\tdriver = ${await p('merge-driver')}
[credential]
\thelper = !${await p('credential-helper')}
[url "ext::${await p('ext-insteadof')}"]
\tinsteadOf = ${policyRemote}
[remote "origin"]
\turl = ext::${await p('ext-remote')}
\tfetch = +refs/heads/*:refs/remotes/origin/*
[protocol]
\tallow = always
[gpg]
\tprogram = ${await p('gpg')}
[commit]
\tgpgSign = true
[log]
\tshowSignature = true
[uploadpack]
\tpackObjectsHook = ${await p('pack-objects-hook')}
[alias]
\tstatus = !${await p('alias')}
\tpush = !${await p('alias')}
`;
}

/** A real repository at `gitDir` (work tree `workTree`) whose config and hooks are all planted. */
async function evilRepo(
  plant: Plant,
  tag: string,
  workTree: string,
  gitDir: string,
  policyRemote: string,
  bare = false,
): Promise<void> {
  const env = fixtureGitEnv();
  if (bare) await run('git', ['init', '--quiet', '--bare', gitDir], { env });
  else {
    const inPlace = gitDir === path.join(workTree, '.git');
    await run('git', ['init', '--quiet', ...(inPlace ? [] : [`--separate-git-dir=${gitDir}`]), workTree], {
      env,
    });
    await fs.writeFile(path.join(workTree, `${tag}-file.txt`), `${tag}\n`);
    await run('git', ['-C', workTree, 'add', '-A'], { env });
    await run('git', ['-C', workTree, 'commit', '--quiet', '-m', tag], { env });
  }
  const hooksDir = path.join(gitDir, 'hooks');
  await fs.mkdir(hooksDir, { recursive: true });
  for (const hook of HOOKS)
    await fs.copyFile(await plant.program(`${tag}-hook-${hook}`), path.join(hooksDir, hook));
  for (const hook of HOOKS) await fs.chmod(path.join(hooksDir, hook), 0o755);
  await fs.appendFile(path.join(gitDir, 'config'), await evilConfig(plant, tag, hooksDir, policyRemote));
}

async function treeDigest(dir: string): Promise<string> {
  const hash = createHash('sha256');
  const walk = async (d: string): Promise<void> => {
    for (const e of (await fs.readdir(d, { withFileTypes: true })).sort((a, b) =>
      a.name.localeCompare(b.name),
    )) {
      const full = path.join(d, e.name);
      hash.update(full);
      if (e.isDirectory()) await walk(full);
      else if (e.isFile()) hash.update(await fs.readFile(full));
    }
  };
  await walk(dir);
  return hash.digest('hex');
}

describe.each([
  ['a planted .git directory', 'dir'],
  ['a .git file pointing at a planted repository', 'file'],
] as const)('hostile work tree with %s', (_label, variant) => {
  it('runs no planted program, touches no planted metadata and talks only to the policy remote', async () => {
    const base = path.join(fx.root, variant);
    const markers = path.join(base, 'markers');
    await fs.mkdir(markers, { recursive: true });
    const repos = fx.repos;
    const repoName = `hostile-${variant}.git`;
    const bare = await createBareRepo(repos, repoName, {
      files: { 'README.md': 'hello\n', 'data.bin': 'v1\n' },
    });
    const remote = fx.server.repoUrl(repoName);
    const workTree = path.join(base, 'wt');
    // Made here as the broker once made it (root's, 2775): the unconfined git run below must
    // trust it, so that run shows what the plants would do.
    await fs.mkdir(workTree);
    await fs.chmod(workTree, 0o2775);
    const ctx = fx.context({ stateDir: path.join(base, 'state'), workTree, remote, branch: 'main' });
    // First use on a clean tree, then the agent goes rogue.
    await mustCall(tool.git_status!, ctx, { workspace: 'api' });
    const plant = new Plant(path.join(workTree, 'tools'), markers);
    await fs.mkdir(plant.dir);

    // 1. The root `.git`: a real repository with evil config and every hook (or a file pointing at one).
    if (variant === 'dir')
      await evilRepo(plant, 'root', path.join(base, 'scratch-root'), path.join(workTree, '.git'), remote);
    else {
      await evilRepo(
        plant,
        'root',
        path.join(base, 'scratch-root'),
        path.join(base, 'elsewhere.git'),
        remote,
      );
      await fs.writeFile(path.join(workTree, '.git'), `gitdir: ${path.join(base, 'elsewhere.git')}\n`);
    }
    // 2. A nested repository with a commit (becomes a gitlink), 3. an embedded bare repository,
    // 4. a `.git` file in a subfolder pointing elsewhere.
    await evilRepo(
      plant,
      'nested',
      path.join(workTree, 'nested'),
      path.join(workTree, 'nested', '.git'),
      remote,
    );
    await evilRepo(plant, 'bare', '', path.join(workTree, 'vendor', 'bare.git'), remote, true);
    await evilRepo(
      plant,
      'linked',
      path.join(base, 'scratch-linked'),
      path.join(base, 'linked-elsewhere.git'),
      remote,
    );
    await fs.mkdir(path.join(workTree, 'linked'));
    await fs.writeFile(
      path.join(workTree, 'linked', '.git'),
      `gitdir: ${path.join(base, 'linked-elsewhere.git')}\n`,
    );
    await fs.writeFile(path.join(workTree, 'linked', 'linked-file.txt'), 'linked\n');
    // 5. Attributes naming filter/diff/merge drivers, a .gitmodules with an ext:: url and a command.
    await fs.writeFile(path.join(workTree, '.gitattributes'), '* filter=evil diff=evil merge=evil\n');
    await fs.writeFile(
      path.join(workTree, '.gitmodules'),
      `[submodule "nested"]\n\tpath = nested\n\turl = ext::${await plant.program('gitmodules-ext')}\n\tupdate = !${await plant.program('gitmodules-update')}\n`,
    );
    // 6. Symlinks out of the tree and into git metadata.
    await fs.mkdir(path.join(base, 'outside'), { recursive: true });
    await fs.writeFile(path.join(base, 'outside', 'secret.txt'), 'outside\n');
    await fs.symlink(path.join(base, 'outside'), path.join(workTree, 'escape'));
    await fs.symlink(path.join(base, 'state', 'git', 'payments', 'api.git'), path.join(workTree, 'hostgit'));
    await fs.writeFile(path.join(workTree, 'README.md'), 'hello\nchanged by the agent\n');
    await fs.writeFile(path.join(workTree, 'data.bin'), 'v2\n');

    // Control: the plants are live — plain git (discovering the planted metadata) runs them.
    await run('git', ['status', '--short'], { cwd: workTree, env: fixtureGitEnv() }).catch(() => undefined);
    await run('git', ['status', '--short'], {
      cwd: path.join(workTree, 'nested'),
      env: fixtureGitEnv(),
    }).catch(() => undefined);
    const control = await plant.markersFound();
    expect(control).toEqual(
      expect.arrayContaining(['root-fsmonitor', 'root-hook-post-index-change', 'nested-fsmonitor']),
    );
    await plant.clearMarkers();
    const plantedRoot = variant === 'dir' ? path.join(workTree, '.git') : path.join(base, 'elsewhere.git');
    const plantedDigest = await treeDigest(plantedRoot);
    const requestsBefore = fx.server.requests.length;

    // Someone else moves main on the remote, so pull has work to do.
    const other = path.join(base, 'other');
    await run('git', ['clone', '--quiet', bare, other], { env: fixtureGitEnv() });
    await fs.writeFile(path.join(other, 'UPSTREAM.md'), 'upstream\n');
    await run('git', ['-C', other, 'add', '-A'], { env: fixtureGitEnv() });
    await run('git', ['-C', other, 'commit', '--quiet', '-m', 'upstream'], { env: fixtureGitEnv() });
    await run('git', ['-C', other, 'push', '--quiet', 'origin', 'main'], { env: fixtureGitEnv() });

    const call = (name: string, args: Record<string, unknown> = {}, options: Record<string, unknown> = {}) =>
      mustCall(tool[name]!, ctx, { workspace: 'api', ...args }, options);
    await call('git_status');
    await call('git_diff');
    await call('git_diff', { paths: ['README.md', 'data.bin', 'nested', 'linked'] });
    await call('git_diff', { ref: 'HEAD' });
    await call('git_log');
    await call('git_show', { ref: 'HEAD' });
    await call('git_branch_list');
    await call('git_fetch');
    await call('git_pull');
    await call('git_add', { paths: ['.'] });
    await call('git_diff', { staged: true });
    await call('git_status');
    await call('git_commit', { message: 'agent commit over a hostile tree' });
    await call('git_show', { ref: 'HEAD' });
    await call('git_create_branch', { name: 'agent/hostile' });
    await call('git_checkout', { branch: 'agent/hostile' });
    const pushed = await call('git_push', { branch: 'agent/hostile' }, { branches: ['agent/*'] });
    expect(pushed.structured.pushed).toBe(true);
    await call('git_checkout', { branch: 'main' });
    await call('git_log', { ref: 'agent/hostile', maxCount: 5 });

    // Nothing planted ran; planted metadata untouched; host git dir config is ours alone.
    expect(await plant.markersFound()).toEqual([]);
    expect(await treeDigest(plantedRoot)).toBe(plantedDigest);
    const hostConfig = await fs.readFile(
      path.join(base, 'state', 'git', 'payments', 'api.git', 'config'),
      'utf8',
    );
    expect(hostConfig).not.toMatch(/fsmonitor|hooksPath|filter|textconv|ext::|insteadOf|helper/);
    // Only the policy remote was contacted, always with the credential.
    const requests = fx.server.requests.slice(requestsBefore);
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.every((r) => r.url.startsWith(`/${repoName}/`) && r.authorized)).toBe(true);
    // The pushed commit holds the agent's files as content (the gitlinks as links, not their metadata).
    const files = (
      await run('git', ['--git-dir', bare, 'ls-tree', '-r', '--name-only', 'refs/heads/agent/hostile'], {
        env: fixtureGitEnv(),
      })
    ).stdout.split('\n');
    expect(files).toEqual(
      expect.arrayContaining([
        '.gitattributes',
        'README.md',
        'UPSTREAM.md',
        'vendor/bare.git/config',
        'nested',
        'escape',
      ]),
    );
    expect(files.some((f) => f.startsWith('.git/') || f === '.git')).toBe(false);
    expect(refOf(bare, 'refs/heads/agent/hostile')).toMatch(/^[0-9a-f]{40}$/);
  });
});
