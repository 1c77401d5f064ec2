// The git server with a githubApp credential: each network command gets an installation token
// minted for the workspace remote's one repository — contents: read to clone/fetch, contents:
// write to push — through the same environment channel as a token secret. The smart-HTTP git
// server accepts exactly the tokens the GitHub API stand-in issued, for that repository and level.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redactor } from '../../src/secrets/redact.js';
import { SecretStore } from '../../src/secrets/store.js';
import { startGithubApiStandIn, type GithubApiStandIn } from '../../src/demo/github-api/server.js';
import { sampleRepo } from '../../src/demo/github-api/data.js';
import {
  gitAdd,
  gitCheckout,
  gitCommit,
  gitCreateBranch,
  gitFetch,
  gitPush,
  gitStatus,
} from '../../servers/git/tools.js';
import { callTool, gitContext, mustCall, tempDir } from '../git/context.js';
import {
  createBareRepo,
  refOf,
  startSmartHttpServer,
  type SmartHttpServer,
} from '../git/smart-http-server.js';
import { APP_ID, appKeyPair, INSTALLATION_ID } from './harness.js';

let root: string;
let api: GithubApiStandIn;
let git: SmartHttpServer;
let bare: string;
const keys = appKeyPair();

beforeAll(async () => {
  root = await tempDir('airlock-gh-git-');
  api = await startGithubApiStandIn({
    app: {
      appId: APP_ID,
      installationId: INSTALLATION_ID,
      publicKey: keys.publicKey,
      repositories: ['acme/payments-api', 'acme/ledger'],
      permissions: { contents: 'write', metadata: 'read' },
    },
    repos: [sampleRepo('acme', 'payments-api'), sampleRepo('acme', 'ledger', 102)],
  });
  await fs.mkdir(path.join(root, 'repos', 'acme'), { recursive: true });
  bare = await createBareRepo(path.join(root, 'repos'), 'acme/payments-api.git', {
    files: { 'README.md': '# app\n' },
  });
  git = await startSmartHttpServer({
    root: path.join(root, 'repos'),
    username: 'nobody',
    password: 'no-static-password-accepted',
    alsoAccept: (user, password, { repoPath, push }) => {
      const repo = /^\/([^/]+\/[^/]+)\.git$/.exec(repoPath)?.[1];
      return (
        user === 'x-access-token' &&
        repo !== undefined &&
        api.tokenAllows(password, repo, 'contents', push ? 'write' : 'read')
      );
    },
  });
});
afterAll(async () => {
  await git?.close();
  await api?.close();
  if (root) await fs.rm(root, { recursive: true, force: true });
});

function appContext(name: string) {
  const redactor = new Redactor();
  const store = new SecretStore(
    {
      'gh-app': { githubApp: { appId: APP_ID, installationId: INSTALLATION_ID, privateKey: { env: 'KEY' } } },
    },
    redactor,
    { env: { KEY: keys.privateKey } },
  );
  const ctx = gitContext({
    stateDir: path.join(root, `state-${name}`),
    section: {
      workspaces: {
        api: {
          path: path.join(root, `wt-${name}`),
          remote: git.repoUrl('acme/payments-api.git'),
          credential: 'gh-app',
          githubApiUrl: api.apiUrl,
        },
      },
    },
  });
  return { ctx: { ...ctx, secrets: store.forTeam('payments') }, redactor };
}

describe('git push through a githubApp workspace', () => {
  it('clones with a contents:read token and pushes with a contents:write token, both for that one repository', async () => {
    const { ctx, redactor } = appContext('a');
    await fs.mkdir(path.join(root, 'wt-a'), { recursive: true });
    await mustCall(gitStatus, ctx, { workspace: 'api' });
    expect(api.mints.map((m) => [m.repositories, m.permissions])).toEqual([
      [['payments-api'], { contents: 'read' }],
    ]);
    const readToken = api.mints[0]!.token;
    expect(api.tokenAllows(readToken, 'acme/payments-api', 'contents', 'write')).toBe(false);

    await fs.writeFile(path.join(root, 'wt-a', 'README.md'), '# app\n\nfrom the agent\n');
    await mustCall(gitAdd, ctx, { workspace: 'api', paths: ['README.md'] });
    const commit = await mustCall(gitCommit, ctx, { workspace: 'api', message: 'Agent change' });
    await mustCall(gitCreateBranch, ctx, { workspace: 'api', name: 'agent/app-push' });
    await mustCall(gitCheckout, ctx, { workspace: 'api', branch: 'agent/app-push' });
    const before = git.requests.length;
    const push = await callTool(
      gitPush,
      ctx,
      { workspace: 'api', branch: 'agent/app-push' },
      { branches: ['agent/*'] },
    );
    expect(push.ok, push.ok ? '' : push.text).toBe(true);
    expect(refOf(bare, 'refs/heads/agent/app-push')).toBe(commit.structured.sha);

    const pushMints = api.mints.slice(1);
    expect(pushMints.map((m) => [m.repositories, m.permissions])).toEqual([
      [['payments-api'], { contents: 'write' }],
    ]);
    const pushRequests = git.requests.slice(before);
    expect(pushRequests.some((r) => r.url.includes('git-receive-pack'))).toBe(true);
    expect(pushRequests.every((r) => r.authorized)).toBe(true);
    // Both tokens are registered with the store's redactor: nothing the tools return can carry them.
    for (const m of api.mints) expect(redactor.scrub(m.token)).toBe('[redacted]');
    expect(JSON.stringify(push)).not.toContain(pushMints[0]!.token);
  });

  it('a later fetch reuses the cached contents:read token; one mint per store (broker)', async () => {
    const before = api.mints.length;
    const { ctx } = appContext('a');
    await mustCall(gitFetch, ctx, { workspace: 'api' });
    // A fresh SecretStore (another broker) has its own cache: one read mint, then reuse.
    expect(api.mints.length).toBe(before + 1);
    await mustCall(gitFetch, ctx, { workspace: 'api' });
    expect(api.mints.length).toBe(before + 1);
    expect(api.mints.at(-1)!.permissions).toEqual({ contents: 'read' });
  });

  it('a remote that is not OWNER/REPO shaped cannot get an App token: a clear error, nothing minted', async () => {
    const { ctx } = appContext('c');
    ctx.section.workspaces.api!.remote = git.repoUrl('flat.git');
    const before = api.mints.length;
    await fs.mkdir(path.join(root, 'wt-c'), { recursive: true });
    const r = await callTool(gitStatus, ctx, { workspace: 'api' });
    expect(r.ok).toBe(false);
    expect(r.ok ? '' : r.text).toMatch(
      /does not end in \/OWNER\/REPO\(\.git\), so no GitHub App token can be scoped to it/,
    );
    expect(api.mints.length).toBe(before);
  });
});
