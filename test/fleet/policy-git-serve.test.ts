// Policy from git with two real `airlock serve` processes (two state folders) following one
// repository every second: a pushed commit reaches both, a broken one keeps the last good set on
// both (and `airlock policy status` says why), a rollback is refused, and a restart without the
// repository starts from the previous good commit — or, with none, with no teams.
import { existsSync } from 'node:fs';
import { mkdtemp, rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectSocketClient, type Installation } from '../helpers/fixture.js';
import { startServe, waitFor, type ServeProcess } from '../approvals/helpers.js';
import {
  gitInstallation,
  makePolicyRepo,
  policyStatus,
  teamPolicy,
  type PolicyRepo,
} from './policy-git-helpers.js';

let root: string;
let repo: PolicyRepo;
let first: string;
const insts: Installation[] = [];
const serves: ServeProcess[] = [];

const gitBlock = (url: string) => ['policies:', `  git: ${url}`, '  ref: main', '  every: 1s'].join('\n');

async function toolNames(inst: Installation, team: string): Promise<string[]> {
  const { client, socket } = await connectSocketClient(inst.socket(team, 'http'));
  try {
    return (await client.listTools()).tools.map((t) => t.name).sort();
  } finally {
    await client.close();
    socket.destroy();
  }
}

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'al-pgit-'));
  repo = await makePolicyRepo(root);
  first = repo.commit({ 'alpha.yaml': teamPolicy('alpha', '') }, { message: 'alpha, no tools' });
  for (let i = 0; i < 2; i++) {
    const inst = await gitInstallation(gitBlock(repo.url));
    insts.push(inst);
    serves.push(await startServe(inst, [inst.socket('alpha', 'http')]));
  }
}, 60_000);

afterAll(async () => {
  await Promise.all(serves.map((s) => s.stop()));
  await Promise.all(insts.map((i) => i.cleanup()));
  await rm(root, { recursive: true, force: true });
});

describe('policies from git, two brokers', () => {
  it('both brokers start with the commit in force and policy status shows it', async () => {
    for (const inst of insts) {
      expect(await toolNames(inst, 'alpha')).toEqual([]);
      const { code, status } = await policyStatus(inst);
      expect(code).toBe(0);
      expect(status).toMatchObject({
        commit: first,
        subject: 'alpha, no tools',
        teams: ['alpha'],
        lastError: null,
        signer: null,
        brokerRunning: true,
        source: { git: repo.url, ref: 'main', every: '1s' },
      });
      expect(status.fetchedAt).not.toBeNull();
    }
  });

  it('a pushed commit reaches both brokers within the interval; live sessions get tools/list_changed', async () => {
    // One live session per broker, opened before the push.
    const sessions = await Promise.all(
      insts.map((inst) => connectSocketClient(inst.socket('alpha', 'http'))),
    );
    const notified = sessions.map(({ client }) => {
      let seen = false;
      client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
        seen = true;
      });
      return () => seen;
    });
    try {
      const pushedAt = Date.now();
      const commit = repo.commit({ 'alpha.yaml': teamPolicy('alpha', 'http_request: {}') });
      const reached = await Promise.all(
        sessions.map(({ client }, i) =>
          waitFor(
            `the new policy on broker ${i}`,
            async () => {
              const names = (await client.listTools()).tools.map((t) => t.name);
              return names.includes('http_request') ? Date.now() - pushedAt : undefined;
            },
            15_000,
          ),
        ),
      );
      console.log(
        `policy-git: push → in force on both brokers: ${reached.map((ms) => `${ms} ms`).join(', ')}`,
      );
      await waitFor('tools/list_changed on both sessions', () =>
        notified.every((f) => f()) ? true : undefined,
      );
      for (const inst of insts) {
        const { code, status } = await policyStatus(inst);
        expect(code).toBe(0);
        expect(status.commit).toBe(commit);
        expect(status.lastError).toBeNull();
      }
    } finally {
      for (const { client, socket } of sessions) {
        await client.close();
        socket.destroy();
      }
    }
  });

  it('a commit with a broken policy file keeps the last good set on both brokers; status says why', async () => {
    const good = (await policyStatus(insts[0]!)).status.commit;
    const broken = repo.commit({
      'alpha.yaml': teamPolicy('alpha', 'http_request: {}, http_delete_everything: {}'),
      'beta.yaml': teamPolicy('beta', 'http_request: {}'),
    });
    for (const inst of insts) {
      const { code, status } = await waitFor('the refusal in policy status', async () => {
        const s = await policyStatus(inst);
        return s.status.lastError?.commit === broken ? s : undefined;
      });
      expect(code).toBe(1);
      expect(status.commit).toBe(good);
      expect(status.teams).toEqual(['alpha']);
      // Named as the author sees it: <commit>:<file>:<line>:<col>.
      expect(status.lastError!.message).toMatch(
        new RegExp(`${broken.slice(0, 12)}:alpha\\.yaml:7:\\d+: .*http_delete_everything`),
      );
      // The whole commit is refused: the valid new team of the same commit is not taken either.
      expect(existsSync(inst.socket('beta', 'http'))).toBe(false);
      expect(await toolNames(inst, 'alpha')).toEqual(['http_request']);
    }
    // The text form, as an operator reads it.
    const { runCli } = await import('../approvals/helpers.js');
    const text = await runCli(['policy', 'status', '--config', insts[0]!.configFile]);
    expect(text.code).toBe(1);
    expect(text.stdout).toContain(`commit:     ${good}`);
    expect(text.stdout).toMatch(/last error: .*policy error/);
    expect(serves[0]!.log()).toContain('http_delete_everything');
  });

  it('the fix is taken; a team removed by a later commit loses its socket', async () => {
    const fixed = repo.commit({
      'alpha.yaml': teamPolicy('alpha', 'http_request: {}'),
      'beta.yaml': teamPolicy('beta', 'http_request: {}'),
    });
    for (const inst of insts) {
      await waitFor('beta socket', () => (existsSync(inst.socket('beta', 'http')) ? true : undefined));
      expect((await policyStatus(inst)).status).toMatchObject({
        commit: fixed,
        lastError: null,
        teams: ['alpha', 'beta'],
      });
    }
    const { client, socket } = await connectSocketClient(insts[0]!.socket('beta', 'http'));
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    repo.commit({ 'beta.yaml': null });
    for (const inst of insts) {
      await waitFor('beta socket gone', () => (existsSync(inst.socket('beta', 'http')) ? undefined : true));
    }
    await waitFor('the beta session closed', () => closed.then(() => true));
    await client.close().catch(() => undefined);
  });

  it('a force-push to an older commit (rollback) is refused and the newer set stays', async () => {
    const before = (await policyStatus(insts[0]!)).status.commit!;
    repo.forcePush(first);
    for (const inst of insts) {
      const { status } = await waitFor('the rollback refusal', async () => {
        const s = await policyStatus(inst);
        return s.status.lastError?.commit === first ? s : undefined;
      });
      expect(status.commit).toBe(before);
      expect(status.lastError!.message).toMatch(/does not descend from .*rollback/);
      expect(await toolNames(inst, 'alpha')).toEqual(['http_request']);
    }
    repo.forcePush(before);
    await waitFor('the error cleared', async () =>
      (await policyStatus(insts[0]!)).status.lastError === null ? true : undefined,
    );
  });

  it('without the repository: a restart keeps the previous good commit; a new broker starts with no teams', async () => {
    const inForce = (await policyStatus(insts[0]!)).status.commit!;
    const away = `${repo.bare}.away`;
    await rename(repo.bare, away);
    try {
      await serves[0]!.stop();
      serves[0] = await startServe(insts[0]!, [insts[0]!.socket('alpha', 'http')]);
      expect(await toolNames(insts[0]!, 'alpha')).toEqual(['http_request']);
      const { code, status } = await waitFor('a failed fetch in status', async () => {
        const s = await policyStatus(insts[0]!);
        return s.status.pid === serves[0]!.child.pid && s.status.lastError ? s : undefined;
      });
      expect(code).toBe(1);
      expect(status.commit).toBe(inForce);
      expect(status.lastError!.message).toMatch(/fetching main from file:.* failed/);

      const fresh = await gitInstallation(gitBlock(repo.url));
      insts.push(fresh);
      const serve = await startServe(fresh, []);
      serves.push(serve);
      const none = await waitFor('the status of the broker without a commit', async () => {
        const s = await policyStatus(fresh).catch(() => undefined);
        return s?.status.checkedAt ? s : undefined;
      });
      expect(none.code).toBe(1);
      expect(none.status.commit).toBeNull();
      expect(none.status.teams).toEqual([]);
      expect(none.status.lastError!.message).toMatch(/failed/);
      await waitFor('the log line', () =>
        serve.log().includes('starting with no teams') ? true : undefined,
      );
      expect(existsSync(fresh.socket('alpha', 'http'))).toBe(false);
    } finally {
      await rename(away, repo.bare);
    }
    // Once the repository is back, the new broker takes the commit.
    await waitFor('alpha on the new broker', () =>
      existsSync(insts[2]!.socket('alpha', 'http')) ? true : undefined,
    );
  });
});
