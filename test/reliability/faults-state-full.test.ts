// The state folder full: stateDir is a small tmpfs (CI runs as root), filled to the last byte
// while the broker runs. A git call (objects, FETCH_HEAD, index in the host-owned git dir), a call
// held for approval (its pending file) and saving the rate-limit counters all fail with an error
// that says the state folder is full; the broker stays up, team beta (no state) is answered
// throughout (latency printed), and everything works again once space is freed, without a restart.
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import {
  createBareRepo,
  refOf,
  startSmartHttpServer,
  type SmartHttpServer,
} from '../../src/demo/git-http-server.js';
import { acmeHttpPolicy, startEchoUpstream, type EchoUpstream } from '../helpers/fixture.js';
import {
  baseline,
  pushRemoteCommit,
  startFaultBroker,
  victimDuringFault,
  type FaultBroker,
} from './faults.js';

const GIT_PASSWORD = 'git-state-full-password-3f7a9c';

describe('state folder full', () => {
  let fb: FaultBroker;
  let remote: SmartHttpServer;
  let upstream: EchoUpstream;
  let root: string;
  let bare: string;
  let workTree: string;
  let mounted = '';
  let acme: Client;
  let held: Client;
  let baselineMs: number[];
  const logLines: string[] = [];
  const victim = () => fb.victim();
  const filler = () => path.join(mounted, 'filler');

  beforeAll(async () => {
    root = await mkdtemp('/tmp/al-statefull-');
    await mkdir(path.join(root, 'repos'));
    bare = await createBareRepo(path.join(root, 'repos'), 'app.git', { files: { 'README.md': '# app\n' } });
    remote = await startSmartHttpServer({
      root: path.join(root, 'repos'),
      username: 'x-access-token',
      password: GIT_PASSWORD,
    });
    upstream = await startEchoUpstream();
    workTree = path.join(root, 'work');
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
      git_fetch: { rateLimit: 1000/hour }
      git_status: {}
`,
        // POSTs wait for an approval (2 s, then expire): holding one writes a pending file.
        'held.yaml': acmeHttpPolicy(upstream.origin)
          .replace('team: acme', 'team: held')
          .replace(
            '      http_request: {}',
            '      http_request:\n        approve: { when: { methods: [POST] }, timeout: 2s }',
          ),
      },
      prepare: async (inst) => {
        await mkdir(inst.stateDir, { recursive: true, mode: 0o700 });
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m,mode=0700', 'tmpfs', inst.stateDir]);
        mounted = inst.stateDir;
      },
      brokerOptions: {
        log: pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) }),
      },
    });
    acme = await fb.client('acme', 'git');
    held = await fb.client('held', 'http');
    expect((await git('git_fetch')).isError).toBe(false); // the first call clones
    baselineMs = await baseline(victim);
  }, 60_000);

  afterAll(async () => {
    await fb?.broker.stop(1000).catch(() => undefined);
    if (mounted) execFileSync('umount', ['--lazy', mounted]);
    await fb?.close().catch(() => undefined);
    await remote?.close();
    await upstream?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  async function git(tool: string): Promise<{ isError: boolean; text: string }> {
    const r = (await acme.callTool({ name: tool, arguments: { workspace: 'app' } })) as CallToolResult;
    return { isError: r.isError === true, text: (r.content[0] as { text: string }).text };
  }
  async function post(): Promise<{ isError: boolean; text: string }> {
    const r = (await held.callTool({
      name: 'http_request',
      arguments: { method: 'POST', url: `${upstream.origin}/v1/orders`, body: '{}' },
    })) as CallToolResult;
    return { isError: r.isError === true, text: (r.content[0] as { text: string }).text };
  }

  /** Fills the tmpfs to the last block (dd stops at ENOSPC). */
  function fill() {
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${filler()}`, 'bs=64k'], { stdio: 'ignore' });
    } catch {
      // dd exits 1 at "No space left on device": that is the point.
    }
  }

  it('git and approvals fail clearly while full, beta is answered, and both work once space is freed', async () => {
    const head = await pushRemoteCommit(bare, 1024 * 1024); // a fetch must write a 1 MiB pack
    const { value } = await victimDuringFault(
      'state folder full',
      async () => {
        fill();
        const during = { fetch: await git('git_fetch'), status: await git('git_status'), post: await post() };
        await rm(filler());
        return during;
      },
      victim,
      baselineMs,
    );
    expect(value.fetch.isError).toBe(true);
    expect(value.fetch.text).toMatch(/^error: git fetch failed: .*(No space left on device|ENOSPC)/);
    expect(value.post).toEqual({
      isError: true,
      text: 'denied: http.tools.http_request.approve: the call could not be held for approval (ENOSPC: no space left on device, write); nothing was done',
    });
    for (const t of [value.fetch.text, value.status.text, value.post.text]) expect(t).not.toContain(mounted);

    // Space is back: no restart, the same sessions.
    const fetched = await git('git_fetch');
    expect(fetched.isError, fetched.text).toBe(false);
    expect(refOf(path.join(mounted, 'git', 'acme', 'app.git'), 'refs/remotes/origin/main')).toBe(head);
    const status = await git('git_status');
    expect(status.isError, status.text).toBe(false);
    const again = await post(); // held again: it expires after 2 s with nobody to decide
    expect(again.text).toMatch(/^denied: http\.tools\.http_request\.approve: approval [0-9a-f]{12} expired/);
    await victim();
  }, 60_000);

  it('rate-limit counters are counted in place while full (no new space needed), and the broker stops cleanly', async () => {
    // git_fetch has a rateLimit: its first call writes <stateDir>/ratelimits.json.
    expect((await git('git_fetch')).isError).toBe(false);
    const tokens = () =>
      (
        JSON.parse(readFileSync(path.join(mounted, 'ratelimits.json'), 'utf8')) as Record<
          string,
          { tokens: number }
        >
      )['acme/git/git_fetch']!.tokens;
    const before = tokens();
    fill();
    // The file is rewritten in place (padded, never grown past its block): a full folder still counts.
    expect((await git('git_fetch')).isError).toBe(false);
    expect(tokens()).toBeLessThan(before);
    await fb.broker.stop(1000);
    expect(logLines.filter((l) => /"level":(50|60)/.test(l) && l.includes('rate'))).toEqual([]);
    await rm(filler());
  }, 30_000);
});
