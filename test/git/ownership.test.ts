// The work tree is the agent's; git runs as the broker. Files git writes must stay editable by
// the agent without the broker chowning paths inside a tree the agent controls: work-tree
// writers run with umask 002, so a setgid work tree with the agent's group does the rest.
import { execFileSync, spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { gitCheckout, gitCreateBranch, gitStatus } from '../../servers/git/tools.js';
import { callTool, mustCall, useGitRemote } from './context.js';
import { createBareRepo } from './smart-http-server.js';

const SECRET = 'ghs_OwnershipTestToken_77aa';
const AGENT = 1000;
const fx = useGitRemote(SECRET);

beforeAll(async () => {
  await fs.chmod(fx.root, 0o755);
  await createBareRepo(fx.repos, 'app.git', {
    files: { 'README.md': '# app\n', 'src/a.ts': 'x\n' },
  });
});

it('checked-out files are group-writable in a setgid work tree, so the agent edits them in place', async () => {
  expect(process.getuid?.(), 'this test needs root to set up uid 1000').toBe(0);
  const workTree = path.join(fx.root, 'wt');
  await fs.mkdir(workTree);
  await fs.chown(workTree, AGENT, AGENT);
  await fs.chmod(workTree, 0o2775);
  const ctx = fx.context({ stateDir: path.join(fx.root, 'state'), workTree, branch: 'main' });
  await mustCall(gitStatus, ctx, { workspace: 'api' });
  await mustCall(gitCreateBranch, ctx, { workspace: 'api', name: 'agent/x' });
  await mustCall(gitCheckout, ctx, { workspace: 'api', branch: 'agent/x' });
  for (const rel of ['README.md', 'src', 'src/a.ts']) {
    const st = await fs.stat(path.join(workTree, rel));
    expect(st.gid, rel).toBe(AGENT);
    expect(st.mode & 0o020, `${rel} group-writable`).toBe(0o020);
  }
  // The agent (uid 1000, group 1000) edits a checked-out file in place.
  const edit = spawnSync(
    'setpriv',
    [
      '--reuid',
      String(AGENT),
      '--regid',
      String(AGENT),
      '--clear-groups',
      '--',
      '/bin/sh',
      '-c',
      'echo edited >> "$0"',
      path.join(workTree, 'src/a.ts'),
    ],
    { encoding: 'utf8' },
  );
  expect(edit.status, edit.stderr).toBe(0);
  expect(await fs.readFile(path.join(workTree, 'src/a.ts'), 'utf8')).toBe('x\nedited\n');
  // Git's own metadata stays out of the agent's reach.
  const gitDirMode = (await fs.stat(path.join(fx.root, 'state'))).mode & 0o777;
  expect(gitDirMode & 0o007).toBe(0);
  expect(execFileSync('ls', [workTree]).toString()).not.toContain('.git');
});

describe('a work tree that does not exist yet', () => {
  it("is created owned like the folder that holds it, mode 2775, when that folder is the agent's", async () => {
    expect(process.getuid?.(), 'this test needs root to set up uid 1000').toBe(0);
    const agentFolder = path.join(fx.root, 'agents-team');
    await fs.mkdir(agentFolder);
    await fs.chown(agentFolder, AGENT, AGENT);
    const workTree = path.join(agentFolder, 'api');
    const ctx = fx.context({ stateDir: path.join(fx.root, 'state-created'), workTree, branch: 'main' });
    await mustCall(gitStatus, ctx, { workspace: 'api' });
    const st = await fs.stat(workTree);
    expect([st.uid, st.gid, (st.mode & 0o7777).toString(8)]).toEqual([AGENT, AGENT, '2775']);
    // Checked out into it, the agent's files.
    expect((await fs.stat(path.join(workTree, 'README.md'))).gid).toBe(AGENT);
  });

  it.each([
    [
      'belongs to root:root',
      'and the folder that holds it belongs to group root, so a work tree made like it would be root-owned',
    ],
    ['does not exist', 'nor does the folder that would hold it'],
  ])('is refused with the fix, and nothing made, when its folder %s', async (label, problem) => {
    expect(process.getuid?.(), 'the broker runs as root here').toBe(0);
    const rootFolder = path.join(fx.root, `root-owned-${label.replace(/\W/g, '')}`);
    if (label === 'belongs to root:root') await fs.mkdir(rootFolder); // root:root, as made by root
    const workTree = path.join(rootFolder, 'api');
    const ctx = fx.context({ stateDir: path.join(fx.root, `state-${label.length}`), workTree });
    const r = await callTool(gitStatus, ctx, { workspace: 'api' });
    expect(r.ok).toBe(false);
    expect(r.ok ? '' : r.text).toBe(
      `error: the <work tree> of workspace "api" does not exist, ${problem}; the operator must create it for the agent (install -d -o <agent uid> -g <agent gid> -m 2775 <work tree>) or run airlock doctor`,
    );
    // Host paths stay out of what the agent reads.
    expect(r.ok ? '' : r.text).not.toContain(fx.root);
    await expect(fs.stat(workTree)).rejects.toMatchObject({ code: 'ENOENT' });
    if (label === 'does not exist')
      await expect(fs.stat(rootFolder)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
