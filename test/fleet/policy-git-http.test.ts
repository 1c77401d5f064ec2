// Policy from git over smart HTTP with a credential: the broker authenticates with the secret
// named in `policies.credential` (sent by git as a Basic header from its environment), and the
// token shows up nowhere — not in the status file, not in the log, not in a failure message.
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSmartHttpServer, type SmartHttpServer } from '../git/smart-http-server.js';
import { startServe, waitFor } from '../approvals/helpers.js';
import { policyGitStatusFile } from '../../src/policy/git-source.js';
import { gitInstallation, makePolicyRepo, policyStatus, teamPolicy } from './policy-git-helpers.js';

const TOKEN = 'policy-repo-token-8f3a1c9e5b7d';
let root: string;
let server: SmartHttpServer;
let first: string;

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'al-phttp-'));
  const repo = await makePolicyRepo(root);
  first = repo.commit({ 'alpha.yaml': teamPolicy('alpha', 'http_request: {}') });
  server = await startSmartHttpServer({ root, username: 'x-access-token', password: TOKEN });
});

afterAll(async () => {
  await server.close();
  await rm(root, { recursive: true, force: true });
});

const block = () =>
  ['policies:', `  git: ${server.repoUrl('policies.git')}`, '  every: 1s', '  credential: policy-token'].join(
    '\n',
  );

describe('policies from git over smart HTTP', () => {
  it('fetches with the credential, which appears in no status, log or message', async () => {
    const inst = await gitInstallation(block(), { 'policy-token': TOKEN });
    const serve = await startServe(inst, [inst.socket('alpha', 'http')]);
    try {
      const { code, status } = await policyStatus(inst);
      expect(code).toBe(0);
      expect(status).toMatchObject({ commit: first, teams: ['alpha'], lastError: null });
      expect(server.requests.some((r) => r.authorized && r.url.includes('git-upload-pack'))).toBe(true);
      const basic = Buffer.from(`x-access-token:${TOKEN}`).toString('base64');
      const written = await readFile(policyGitStatusFile(inst.stateDir), 'utf8');
      for (const text of [written, serve.log()]) {
        expect(text).not.toContain(TOKEN);
        expect(text).not.toContain(basic);
      }
    } finally {
      await serve.stop();
      await inst.cleanup();
    }
  });

  it('a wrong credential: no teams, and the status says the fetch failed', async () => {
    const wrong = 'not-the-policy-token-1b2c3d';
    const inst = await gitInstallation(block(), { 'policy-token': wrong });
    const serve = await startServe(inst, []);
    try {
      const { code, status } = await waitFor('a status', async () => {
        const s = await policyStatus(inst).catch(() => undefined);
        return s?.status.checkedAt ? s : undefined;
      });
      expect(code).toBe(1);
      expect(status.commit).toBeNull();
      // The server saw the wrong credential and refused it.
      expect(server.requests.some((r) => r.hadAuthorization && !r.authorized && r.status === 401)).toBe(true);
      expect(status.lastError!.message).toMatch(
        /fetching main from http:\/\/127\.0\.0\.1:\d+\/policies\.git failed/,
      );
      await waitFor('the log line', () =>
        serve.log().includes('starting with no teams') ? true : undefined,
      );
      const written = await readFile(policyGitStatusFile(inst.stateDir), 'utf8');
      for (const text of [written, serve.log()]) expect(text).not.toContain(wrong);
    } finally {
      await serve.stop();
      await inst.cleanup();
    }
  });
});
