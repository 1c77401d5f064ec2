// A policy repository for the policy-from-git tests: a bare repository (what brokers fetch, as
// file://) and a work clone the "policy team" commits in, optionally signing with ssh or OpenPGP.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fixtureGitEnv } from '../git/smart-http-server.js';
import { makeInstallation, type Installation } from '../helpers/fixture.js';
import { runCli } from '../approvals/helpers.js';
import type { PolicyGitStatus } from '../../src/policy/git-source.js';

export type Signing = { ssh: string } | { openpgp: { key: string; gnupgHome: string } };

export interface PolicyRepo {
  bare: string;
  url: string;
  /** Writes (or with null removes) files, commits, pushes to main; returns the commit id. */
  commit(files: Record<string, string | null>, opts?: { sign?: Signing; message?: string }): string;
  /** Points main at `commit` (a force-push). */
  forcePush(commit: string): void;
}

export function git(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): string {
  return execFileSync('git', args, {
    cwd: opts.cwd,
    env: fixtureGitEnv(opts.env),
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  }).trim();
}

export async function makePolicyRepo(root: string): Promise<PolicyRepo> {
  const bare = path.join(root, 'policies.git');
  const work = path.join(root, 'policies-work');
  git(['init', '--quiet', '--bare', '--initial-branch=main', bare]);
  git(['init', '--quiet', '--initial-branch=main', work]);
  return {
    bare,
    url: `file://${bare}`,
    commit(files, opts = {}) {
      for (const [name, content] of Object.entries(files)) {
        const file = path.join(work, name);
        if (content === null) rmSync(file, { force: true });
        else {
          mkdirSync(path.dirname(file), { recursive: true });
          writeFileSync(file, content);
        }
      }
      git(['add', '-A'], { cwd: work });
      const sign = opts.sign;
      const signArgs =
        sign === undefined
          ? []
          : 'ssh' in sign
            ? ['-c', 'gpg.format=ssh', '-c', `user.signingkey=${sign.ssh}`]
            : ['-c', 'gpg.format=openpgp', '-c', `user.signingkey=${sign.openpgp.key}`];
      git(
        [
          ...signArgs,
          'commit',
          '--quiet',
          '--allow-empty',
          ...(sign ? ['-S'] : ['--no-gpg-sign']),
          '-m',
          opts.message ?? 'policy change',
        ],
        { cwd: work, env: sign && 'openpgp' in sign ? { GNUPGHOME: sign.openpgp.gnupgHome } : {} },
      );
      git(['push', '--quiet', '--force', bare, 'HEAD:refs/heads/main'], { cwd: work });
      return git(['rev-parse', 'HEAD'], { cwd: work });
    },
    forcePush(commit) {
      git(['push', '--quiet', '--force', bare, `${commit}:refs/heads/main`], { cwd: work });
    },
  };
}

/** An ssh key pair made with ssh-keygen: `private` signs, `public` is the .pub file. */
export async function sshKeyPair(dir: string, name: string): Promise<{ private: string; public: string }> {
  const file = path.join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${name}@example.test`, '-f', file]);
  return { private: file, public: `${file}.pub` };
}

/** The SHA256 fingerprint ssh-keygen prints for a public key file. */
export function sshFingerprint(pub: string): string {
  return execFileSync('ssh-keygen', ['-l', '-f', pub], { encoding: 'utf8' }).split(' ')[1]!;
}

/** A throwaway GnuPG home with one signing key; `key` is its fingerprint, `armored` the public key. */
export async function gpgKey(
  name: string,
): Promise<{ gnupgHome: string; key: string; armored: string; cleanup(): Promise<void> }> {
  // Short path: gpg-agent's socket lives in the home (Unix socket paths are limited).
  const gnupgHome = await mkdtemp(path.join(os.tmpdir(), 'gpg-'));
  const env = { ...process.env, GNUPGHOME: gnupgHome };
  execFileSync(
    'gpg',
    [
      '--batch',
      '--passphrase',
      '',
      '--quick-gen-key',
      `${name} <${name}@example.test>`,
      'ed25519',
      'sign',
      'never',
    ],
    { env, stdio: 'ignore' },
  );
  const colons = execFileSync('gpg', ['--batch', '--with-colons', '--list-keys'], {
    env,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const key = /^fpr:+([0-9A-F]+):/m.exec(colons)![1]!;
  const armored = execFileSync('gpg', ['--batch', '--armor', '--export', key], { env, encoding: 'utf8' });
  return {
    gnupgHome,
    key,
    armored,
    cleanup: async () => {
      try {
        execFileSync('gpgconf', ['--kill', 'all'], { env, stdio: 'ignore' });
      } catch {
        // no agent was started
      }
      await rm(gnupgHome, { recursive: true, force: true });
    },
  };
}

/** An installation whose airlock.yaml takes its policies from `policiesYaml` (a git block). */
export async function gitInstallation(
  policiesYaml: string,
  secrets: Record<string, string> = {},
): Promise<Installation> {
  const inst = await makeInstallation({ secrets });
  const text = await readFile(inst.configFile, 'utf8');
  await writeFile(inst.configFile, text.replace('policies: ./policies\n', `${policiesYaml.trimEnd()}\n`));
  await mkdir(inst.stateDir, { recursive: true, mode: 0o700 });
  return inst;
}

/** `airlock policy status --json` as a process: its exit code and the status it printed. */
export async function policyStatus(
  inst: Installation,
): Promise<{ code: number | null; status: PolicyGitStatus & { brokerRunning?: boolean; error?: string } }> {
  const r = await runCli(['policy', 'status', '--json', '--config', inst.configFile]);
  if (!r.stdout.trim()) throw new Error(`policy status printed nothing (${r.code}): ${r.stderr}`);
  return { code: r.code, status: JSON.parse(r.stdout) as PolicyGitStatus };
}

/** A team policy: the http server with `tools` (YAML flow mapping body, e.g. `http_request: {}`). */
export function teamPolicy(team: string, tools: string): string {
  return [
    `team: ${team}`,
    'servers:',
    '  http:',
    '    hosts:',
    '      - origin: http://127.0.0.1:9',
    '        allowPrivateAddress: true',
    `    tools: {${tools}}`,
    '',
  ].join('\n');
}
