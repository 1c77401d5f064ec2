// The git remote answering 500, or stalling in the middle of the pack a fetch downloads: the
// calling session gets a clear error (the stall after NETWORK_STALL_SECONDS without a byte, not
// after the 10-minute network deadline), the workspace stays usable, and another team's session
// is answered throughout (latency printed).
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import {
  createBareRepo,
  startSmartHttpServer,
  type SmartHttpServer,
} from '../../src/demo/git-http-server.js';
import { NETWORK_STALL_SECONDS } from '../../servers/git/workspace.js';
import {
  baseline,
  pushRemoteCommit,
  startFaultBroker,
  victimDuringFault,
  type FaultBroker,
} from './faults.js';

const GIT_PASSWORD = 'git-fault-password-8d1e4c2a7b';

describe('git remote faults', () => {
  let fb: FaultBroker;
  let remote: SmartHttpServer;
  let acme: Client;
  let bare: string;
  let root: string;
  let baselineMs: number[];
  const texts: string[] = [];
  const victim = () => fb.victim();

  beforeAll(async () => {
    root = await mkdtemp('/tmp/al-gitfault-');
    await mkdir(path.join(root, 'repos'));
    bare = await createBareRepo(path.join(root, 'repos'), 'app.git', {
      files: { 'README.md': '# app\n' },
    });
    remote = await startSmartHttpServer({
      root: path.join(root, 'repos'),
      username: 'x-access-token',
      password: GIT_PASSWORD,
    });
    const workTree = path.join(root, 'work');
    await mkdir(workTree);
    fb = await startFaultBroker({
      secrets: { 'git-token': GIT_PASSWORD },
      policies: {
        'acme.yaml': `team: acme
servers:
  git:
    workspaces:
      app: { path: ${workTree}, remote: ${remote.repoUrl('app.git')}, credential: git-token }
    tools:
      git_fetch: {}
      git_status: {}
`,
      },
    });
    acme = await fb.client('acme', 'git');
    // The first call clones.
    expect((await git('git_fetch')).isError).toBeFalsy();
    baselineMs = await baseline(victim);
  });

  afterAll(async () => {
    await fb?.close();
    await remote?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  async function git(name: string): Promise<CallToolResult> {
    const r = (await acme.callTool({ name, arguments: { workspace: 'app' } })) as CallToolResult;
    texts.push(JSON.stringify(r));
    return r;
  }
  const textOf = (r: CallToolResult) => (r.content[0] as { text: string }).text;

  const remoteCommit = (bytes: number) => pushRemoteCommit(bare, bytes);

  it('a remote answering 500: "git fetch failed" naming the status', async () => {
    remote.setFault({ status: 500 });
    const { value } = await victimDuringFault(
      'git remote 500',
      async () => {
        const out: string[] = [];
        for (let i = 0; i < 5; i++) out.push(textOf(await git('git_fetch')));
        return out;
      },
      victim,
      baselineMs,
    );
    remote.setFault(undefined);
    for (const t of value) {
      expect(t).toMatch(/^error: git fetch failed: /);
      expect(t).toContain('returned error: 500');
    }
  });

  it(
    'a remote that stalls mid-pack: an error once no byte moved for NETWORK_STALL_SECONDS',
    async () => {
      const head = await remoteCommit(2 * 1024 * 1024);
      remote.setFault({ hangMidPack: { afterBytes: 4096 } });
      const { value } = await victimDuringFault(
        'git remote stalls mid-pack',
        () => git('git_fetch'),
        victim,
        baselineMs,
      );
      remote.setFault(undefined);
      expect(value.isError).toBe(true);
      expect(textOf(value)).toMatch(/^error: git fetch failed: /);
      expect(textOf(value)).toContain(
        `Operation too slow. Less than 1 bytes/sec transferred the last ${NETWORK_STALL_SECONDS} seconds`,
      );
      // The workspace is not left blocked: the next fetch gets the commit, status answers.
      const again = await git('git_fetch');
      expect(again.isError, textOf(again)).toBeFalsy();
      expect(textOf(again)).toContain(`-> ${head.slice(0, 12)}`);
      expect((await git('git_status')).isError).toBeFalsy();
    },
    (NETWORK_STALL_SECONDS + 40) * 1000,
  );

  it('no result carried the git credential', () => {
    const all = texts.join('\n');
    expect(texts.length).toBeGreaterThan(6);
    expect(all).not.toContain(GIT_PASSWORD);
    expect(all).not.toContain(Buffer.from(`x-access-token:${GIT_PASSWORD}`).toString('base64'));
  });
});
