// Two tool calls on one workspace at once: writers queue on the workspace lock, and each reads
// the state it acts on (the current branch) only once it holds the lock.
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect, it } from 'vitest';
import { gitTools } from '../../servers/git/tools.js';
import { withLock } from '../../servers/git/workspace.js';
import { callTool, mustCall, useGitRemote } from './context.js';
import { createBareRepo, fixtureGitEnv, refOf } from './smart-http-server.js';

const SECRET = 'ghs_ConcurrencySecret_1a2b3c';
const tool = Object.fromEntries(gitTools.map((t) => [t.name, t]));
const fx = useGitRemote(SECRET);

it('a git_pull queued behind a git_checkout pulls the branch checked out, not the one it first saw', async () => {
  const bare = await createBareRepo(fx.repos, 'app.git', { files: { 'README.md': 'v1\n' } });
  const ctx = fx.context({ stateDir: path.join(fx.root, 'state'), workTree: path.join(fx.root, 'wt') });
  await mustCall(tool.git_status!, ctx, { workspace: 'api' });
  const created = await mustCall(tool.git_create_branch!, ctx, { workspace: 'api', name: 'agent/x' });
  // main moves on the remote, so a pull of main would fast-forward.
  const other = path.join(fx.root, 'other');
  const env = fixtureGitEnv();
  execFileSync('git', ['clone', '--quiet', bare, other], { env });
  await fs.writeFile(path.join(other, 'README.md'), 'v2\n');
  execFileSync('git', ['-C', other, 'commit', '--quiet', '-am', 'v2'], { env });
  execFileSync('git', ['-C', other, 'push', '--quiet', 'origin', 'main'], { env });

  const gitDir = path.join(fx.root, 'state', 'git', 'payments', 'api.git');
  let checkout: ReturnType<typeof callTool> | undefined;
  let pull: ReturnType<typeof callTool> | undefined;
  // Hold the lock while the two calls queue up: checkout first, then pull.
  await withLock(gitDir, async () => {
    checkout = callTool(tool.git_checkout!, ctx, { workspace: 'api', branch: 'agent/x' });
    await sleep(300);
    pull = callTool(tool.git_pull!, ctx, { workspace: 'api' });
    await sleep(300);
  });
  expect((await checkout!).ok).toBe(true);
  const pulled = await pull!;
  // agent/x has no remote branch: the pull says so, and nothing moved agent/x to main.
  expect(pulled.ok).toBe(false);
  if (!pulled.ok) expect(pulled.text).toMatch(/agent\/x/);
  expect(refOf(gitDir, 'refs/heads/agent/x')).toBe(created.structured.sha);
});
