// The git policy source in-process (the same code `airlock serve` runs, driven by reload() as
// SIGHUP drives it): the `path` subfolder, files that are not taken, a symlink and a missing
// folder refused, the folder in force that other commands read, and an on-demand fetch.
import { symlinkSync } from 'node:fs';
import { mkdtemp, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type AirlockConfig } from '../../src/config/airlock-yaml.js';
import { createLogger } from '../../src/log.js';
import { loadGitPolicies } from '../../src/policy/git-source.js';
import { checkPolicyFiles, type PolicyStore } from '../../src/policy/team-policy.js';
import { Redactor } from '../../src/secrets/redact.js';
import { SecretStore } from '../../src/secrets/store.js';
import { SERVERS } from '../../src/servers.js';
import { makeInstallation, type Installation } from '../helpers/fixture.js';
import { runCli } from '../approvals/helpers.js';
import {
  git,
  gitInstallation,
  makePolicyRepo,
  policyStatus,
  teamPolicy,
  type PolicyRepo,
} from './policy-git-helpers.js';

let root: string;
let repo: PolicyRepo;
let inst: Installation;
let config: AirlockConfig;
let store: PolicyStore;

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'al-psrc-'));
  repo = await makePolicyRepo(root);
  repo.commit({
    'teams/alpha.yaml': teamPolicy('alpha', ''),
    'teams/README.md': '# not a policy\n',
    'teams/nested/gamma.yaml': teamPolicy('gamma', ''),
    'root.yaml': teamPolicy('root', ''),
  });
  // A long interval: every fetch below is asked for, as SIGHUP asks.
  inst = await gitInstallation(
    ['policies:', `  git: ${repo.url}`, '  every: 1d', '  path: teams'].join('\n'),
  );
  config = await loadConfig(inst.configFile);
  const redactor = new Redactor();
  store = await loadGitPolicies(
    config,
    SERVERS,
    createLogger(redactor, 'silent'),
    new SecretStore({}, redactor),
  );
});

afterAll(async () => {
  store.close();
  await inst.cleanup();
  await rm(root, { recursive: true, force: true });
});

describe('git policy source', () => {
  it('takes the policy files of `path` only, and writes them out as the folder in force', async () => {
    expect(store.teams().map((p) => p.team)).toEqual(['alpha']);
    expect(store.get('alpha')!.file).toBe(path.join(config.policies, 'alpha.yaml'));
    const { status } = await policyStatus(inst);
    expect(await readlink(config.policies)).toBe(path.join('trees', status.commit!));
    // What `airlock policy check`, `call` and `stdio` read: the same set.
    const checked = await checkPolicyFiles(config, SERVERS);
    expect(checked.issues).toEqual([]);
    expect(checked.policies.map((p) => p.team)).toEqual(['alpha']);
  });

  it('fetches on demand (SIGHUP) and reports the teams that changed', async () => {
    const commit = repo.commit({ 'teams/beta.yaml': teamPolicy('beta', 'http_request: {}') });
    const { changed, errors } = await store.reload();
    expect(errors).toEqual([]);
    expect(changed).toEqual(['beta']);
    expect((await policyStatus(inst)).status).toMatchObject({ commit, teams: ['alpha', 'beta'] });
  });

  it('refuses a commit whose policy file is a symlink, naming it as in the repository', async () => {
    const work = path.join(root, 'policies-work');
    symlinkSync('/etc/passwd', path.join(work, 'teams', 'evil.yaml'));
    const commit = repo.commit({ 'teams/beta.yaml': teamPolicy('beta', '') });
    const { changed, errors } = await store.reload();
    expect(changed).toEqual([]);
    expect(errors.map((e) => `${e.file}:${e.line}:${e.col}`)).toEqual([
      `${commit.slice(0, 12)}:teams/evil.yaml:1:1`,
    ]);
    expect(errors[0]!.message).toMatch(/is a symlink/);
    expect(store.get('beta')!.servers.http!.tools).toEqual({ http_request: {} });
    const { status } = await policyStatus(inst);
    expect(status.lastError).toMatchObject({ commit });
    git(['rm', '--quiet', 'teams/evil.yaml'], { cwd: work });
  });

  it('refuses a commit without the folder, and a team defined twice', async () => {
    const gone = repo.commit({
      'teams/alpha.yaml': null,
      'teams/beta.yaml': null,
      'teams/README.md': null,
      'teams/nested/gamma.yaml': null,
    });
    expect((await store.reload()).errors[0]!.message).toBe(
      `commit ${gone.slice(0, 12)} has no folder "teams"`,
    );
    repo.commit({ 'teams/a.yaml': teamPolicy('alpha', ''), 'teams/b.yaml': teamPolicy('alpha', '') });
    const { errors } = await store.reload();
    expect(errors.map((e) => e.message)).toEqual([expect.stringMatching(/team "alpha" is already defined/)]);
    expect(store.teams().map((p) => p.team)).toEqual(['alpha', 'beta']);
  });

  it('policy status with a policy folder names the folder and exits 0', async () => {
    const folder = await makeInstallation({});
    try {
      const text = await runCli(['policy', 'status', '--config', folder.configFile]);
      expect(text).toMatchObject({ code: 0 });
      expect(text.stdout).toContain(`folder ${folder.policiesDir} (not from git`);
      const json = await runCli(['policy', 'status', '--json', '--config', folder.configFile]);
      expect(JSON.parse(json.stdout)).toEqual({ source: { folder: folder.policiesDir } });
    } finally {
      await folder.cleanup();
    }
  });

  it('before serve has fetched anything, policy check and policy status say so', async () => {
    const fresh = await gitInstallation(['policies:', `  git: ${repo.url}`].join('\n'));
    try {
      const check = await runCli(['policy', 'check', '--config', fresh.configFile]);
      expect(check.code).toBe(1);
      expect(check.stdout).toContain(`no policy commit in force yet: airlock serve fetches ${repo.url}`);
      const status = await runCli(['policy', 'status', '--config', fresh.configFile]);
      expect(status.code).toBe(1);
      expect(status.stdout).toContain(`no status yet: airlock serve has not fetched ${repo.url}`);
    } finally {
      await fresh.cleanup();
    }
  });
});
