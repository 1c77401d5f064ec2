// The work tree is the agent's; git runs as the broker. Files git writes must stay editable by
// the agent without the broker chowning paths inside a tree the agent controls: work-tree
// writers run with umask 002, so a setgid work tree with the agent's group does the rest.
import { execFileSync, spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { gitCheckout, gitCreateBranch, gitStatus } from '../../servers/git/tools.js';
import { mustCall, useGitRemote } from './context.js';
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
