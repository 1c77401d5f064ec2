// Policy from git with `requireSignedBy`: a real `airlock serve` follows a repository every
// second and takes only commits signed by a listed key — ssh keys (made with ssh-keygen, commits
// signed with `git -c gpg.format=ssh -c user.signingkey=… commit -S`) and OpenPGP keys (gpg).
// Unsigned commits and commits signed by another key are refused; the set in force stays.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectSocketClient, type Installation } from '../helpers/fixture.js';
import { startServe, waitFor, type ServeProcess } from '../approvals/helpers.js';
import {
  gitInstallation,
  gpgKey,
  makePolicyRepo,
  policyStatus,
  sshFingerprint,
  sshKeyPair,
  teamPolicy,
  type PolicyRepo,
} from './policy-git-helpers.js';

let root: string;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'al-psig-'));
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  await rm(root, { recursive: true, force: true });
});

async function toolNames(inst: Installation): Promise<string[]> {
  const { client, socket } = await connectSocketClient(inst.socket('alpha', 'http'));
  try {
    return (await client.listTools()).tools.map((t) => t.name).sort();
  } finally {
    await client.close();
    socket.destroy();
  }
}

/** Waits until the broker has checked `commit` and returns its status. */
async function statusAfter(inst: Installation, commit: string) {
  return waitFor(`the check of ${commit.slice(0, 12)}`, async () => {
    const s = await policyStatus(inst);
    return s.status.commit === commit || s.status.lastError?.commit === commit ? s : undefined;
  });
}

async function start(
  repo: PolicyRepo,
  requireSignedBy: string,
): Promise<{ inst: Installation; serve: ServeProcess }> {
  const inst = await gitInstallation(
    ['policies:', `  git: ${repo.url}`, '  every: 1s', `  requireSignedBy: ${requireSignedBy}`].join('\n'),
  );
  const serve = await startServe(inst, [inst.socket('alpha', 'http')]);
  cleanups.push(async () => {
    await serve.stop();
    await inst.cleanup();
  });
  return { inst, serve };
}

describe('requireSignedBy with ssh keys', () => {
  it('takes a commit signed by the listed key; refuses an unsigned one and one signed by another key', async () => {
    const repo = await makePolicyRepo(await mkdtemp(path.join(root, 'ssh-')));
    const right = await sshKeyPair(root, 'release');
    const other = await sshKeyPair(root, 'intruder');
    const first = repo.commit({ 'alpha.yaml': teamPolicy('alpha', '') }, { sign: { ssh: right.private } });
    const { inst, serve } = await start(repo, `[${right.public}]`);

    const initial = (await statusAfter(inst, first)).status;
    expect(initial.commit).toBe(first);
    expect(initial.signer).toMatch(
      new RegExp(`^ssh ED25519 ${sshFingerprint(right.public).replace(/\+/g, '\\+')} `),
    );
    expect(initial.signer).toContain('release@example.test');
    expect(await toolNames(inst)).toEqual([]);

    const unsigned = repo.commit({ 'alpha.yaml': teamPolicy('alpha', 'http_request: {}') });
    const a = await statusAfter(inst, unsigned);
    expect(a.code).toBe(1);
    expect(a.status.commit).toBe(first);
    expect(a.status.lastError!.message).toMatch(/is not signed; requireSignedBy needs a signature/);
    expect(await toolNames(inst)).toEqual([]);

    const intruder = repo.commit(
      { 'alpha.yaml': teamPolicy('alpha', 'http_request: {}') },
      { sign: { ssh: other.private }, message: 'signed by someone else' },
    );
    const b = await statusAfter(inst, intruder);
    expect(b.status.commit).toBe(first);
    expect(b.status.lastError!.message).toMatch(/is signed, but not by a key in requireSignedBy/);
    expect(await toolNames(inst)).toEqual([]);
    expect(serve.log()).toContain('not by a key in requireSignedBy');

    const signed = repo.commit(
      { 'alpha.yaml': teamPolicy('alpha', 'http_request: {}') },
      { sign: { ssh: right.private }, message: 'release' },
    );
    const c = await statusAfter(inst, signed);
    expect(c.code).toBe(0);
    expect(c.status).toMatchObject({ commit: signed, subject: 'release', lastError: null });
    expect(c.status.signer).toContain(sshFingerprint(right.public));
    expect(await toolNames(inst)).toEqual(['http_request']);
  });
});

describe('requireSignedBy with an OpenPGP key', () => {
  it('takes a commit signed by the listed key (given inline, armored) and refuses one signed by another key', async () => {
    const right = await gpgKey('policy-release');
    const other = await gpgKey('policy-intruder');
    cleanups.push(right.cleanup, other.cleanup);
    const repo = await makePolicyRepo(await mkdtemp(path.join(root, 'pgp-')));
    const first = repo.commit(
      { 'alpha.yaml': teamPolicy('alpha', '') },
      { sign: { openpgp: { key: right.key, gnupgHome: right.gnupgHome } } },
    );
    // The armored key inline, as a YAML block scalar.
    const inline = `\n    - |\n${right.armored
      .trimEnd()
      .split('\n')
      .map((l) => `      ${l}`)
      .join('\n')}`;
    const { inst } = await start(repo, inline);

    const initial = (await statusAfter(inst, first)).status;
    expect(initial.commit).toBe(first);
    expect(initial.signer).toBe(`openpgp ${right.key} policy-release <policy-release@example.test>`);

    const intruder = repo.commit(
      { 'alpha.yaml': teamPolicy('alpha', 'http_request: {}') },
      { sign: { openpgp: { key: other.key, gnupgHome: other.gnupgHome } } },
    );
    const refused = await statusAfter(inst, intruder);
    expect(refused.status.commit).toBe(first);
    expect(refused.status.lastError!.message).toMatch(/is signed, but not by a key in requireSignedBy/);
    expect(await toolNames(inst)).toEqual([]);

    const signed = repo.commit(
      { 'alpha.yaml': teamPolicy('alpha', 'http_request: {}') },
      { sign: { openpgp: { key: right.key, gnupgHome: right.gnupgHome } } },
    );
    const taken = await statusAfter(inst, signed);
    expect(taken.status).toMatchObject({ commit: signed, lastError: null });
    expect(taken.status.signer).toContain(right.key);
    expect(await toolNames(inst)).toEqual(['http_request']);
  });
});
