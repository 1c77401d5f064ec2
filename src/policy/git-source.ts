// Team policies from a git repository (`policies: { git: <url>, … }` in airlock.yaml).
//
// `airlock serve` fetches the repository every `every` into a host-owned bare repository under
// <stateDir>/policy-git, with the git server's hardened runner (environment built from nothing,
// `-c` overrides, the credential only through GIT_CONFIG_COUNT). A fetched commit is put in force
// only when it passes every check, in this order:
//   1. it descends from the last commit in force (rollback guard: a force-push or a reset of the
//      branch to an older commit is refused, so an attacker who can rewrite the branch cannot
//      bring back an old, laxer policy);
//   2. with `requireSignedBy`, `git verify-commit` finds a good signature by one of those keys;
//   3. every policy file of the commit validates with the same checker as a policy folder.
// Then the whole set is swapped at once. A refused commit keeps the set in force and says why
// (log + <stateDir>/policy-git/status.json, which `airlock policy status` reads).
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { formatDuration } from '../approvals/policy.js';
import type { AirlockConfig } from '../config/airlock-yaml.js';
import type { Logger } from '../log.js';
import { Redactor } from '../secrets/redact.js';
import type { SecretStore } from '../secrets/store.js';
import type { ServerCatalog, ServerDefinition } from '../tool.js';
import { firstExecutable, gitEnv, runGit, type GitRunResult } from '../../servers/git/runner.js';
import type { PolicyGitConfig, SignerKey } from './git-source-config.js';
import {
  checkPolicyFiles,
  formatIssue,
  isPolicyFileName,
  MAX_POLICY_FILE_BYTES,
  PolicyStore,
  type PolicyIssue,
  type PolicySource,
  type TeamPolicy,
} from './team-policy.js';

const FETCH_TIMEOUT_MS = 120_000;
const LOCAL_TIMEOUT_MS = 30_000;
/** A transfer that moves no byte for this long is abandoned (as for git workspaces). */
const STALL_CONFIG = { 'http.lowSpeedLimit': '1', 'http.lowSpeedTime': '20' };
const FETCHED_REF = 'refs/airlock/fetched';
const IN_FORCE_REF = 'refs/airlock/in-force';
const SIGNER_PREFIX = 'airlock-signer-';

/** <stateDir>/policy-git: the bare repository, the checked-out commits, state and status. */
export function policyGitDir(stateDir: string): string {
  return path.join(stateDir, 'policy-git');
}

export function policyGitStatusFile(stateDir: string): string {
  return path.join(policyGitDir(stateDir), 'status.json');
}

/** What status.json holds (written by the broker after every check; read by `policy status`). */
export interface PolicyGitStatus {
  source: { git: string; ref: string; path: string; every: string; requireSignedBy: string[] };
  /** The commit in force, or null when none is (no teams). */
  commit: string | null;
  /** Who signed it (`ssh ED25519 SHA256:… <key>` / `openpgp <fingerprint> <uid>`), or null. */
  signer: string | null;
  subject: string | null;
  /** When the commit in force was put in force. */
  appliedAt: string | null;
  /** The last successful fetch, and the last attempt. */
  fetchedAt: string | null;
  checkedAt: string | null;
  teams: string[];
  /** Why the last fetched commit (or the fetch) was refused; null once the fetched commit is in force. */
  lastError: { at: string; commit: string | null; message: string } | null;
  pid: number;
}

interface SavedState {
  git: string;
  ref: string;
  path: string;
  commit: string;
}

/** A commit that fails a check: kept out of force, and not re-checked until the branch moves. */
class Refusal extends Error {
  constructor(
    message: string,
    readonly issues: PolicyIssue[] = [],
  ) {
    super(message);
  }
}

/** Fixed paths, as for git itself: the broker's PATH does not pick the programs that verify. */
const sshKeygenBinary = () =>
  firstExecutable(['/usr/bin/ssh-keygen', '/usr/local/bin/ssh-keygen', '/bin/ssh-keygen']);
const gpgBinary = () => firstExecutable(['/usr/bin/gpg', '/usr/local/bin/gpg', '/bin/gpg']);
const gpgconfBinary = () => firstExecutable(['/usr/bin/gpgconf', '/usr/local/bin/gpgconf']);

/** The last lines of a program's stderr, for a message. */
function summary(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.length > 0 && !l.startsWith('hint:'));
  return lines.slice(-4).join('; ') || 'no output';
}

const short = (commit: string) => commit.slice(0, 12);

/** Text from a commit (its subject, a key's user id) as shown on a terminal: no control characters. */
const printable = (text: string) => text.replace(/[\0-\x1f\x7f-\x9f]/g, '?').slice(0, 200);

/** Runs a verification helper (gpg) with an environment of our own; resolves with its exit. */
function runTool(
  file: string,
  args: string[],
  env: Record<string, string>,
  input?: string,
): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ['pipe', 'ignore', 'pipe'], timeout: LOCAL_TIMEOUT_MS });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d.slice(0, 16_384)));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

export interface PolicyGitSourceOptions {
  config: AirlockConfig;
  git: PolicyGitConfig;
  servers: readonly ServerDefinition[] | ServerCatalog;
  store: PolicyStore;
  secrets: SecretStore;
  log: Logger;
}

export class PolicyGitSource implements PolicySource {
  private readonly root: string;
  private readonly repo: string;
  private readonly home: string;
  private readonly trees: string;
  private readonly current: string;
  private readonly stateFile: string;
  private readonly statusFile: string;
  /** The commit in force, if any. */
  private inForce: string | undefined;
  /** The last commit ever in force (from state.json too): what a new commit must descend from. */
  private anchor: string | undefined;
  private refused: { commit: string; issues: PolicyIssue[] } | undefined;
  private running: Promise<{ changed: string[]; errors: PolicyIssue[] }> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly status: PolicyGitStatus;
  private readonly git: PolicyGitConfig;

  constructor(private readonly opts: PolicyGitSourceOptions) {
    this.git = opts.git;
    this.root = policyGitDir(opts.config.stateDir);
    this.repo = path.join(this.root, 'repo.git');
    this.home = path.join(this.root, 'home');
    this.trees = path.join(this.root, 'trees');
    this.current = path.join(this.root, 'current');
    this.stateFile = path.join(this.root, 'state.json');
    this.statusFile = policyGitStatusFile(opts.config.stateDir);
    this.status = {
      source: {
        git: this.git.url,
        ref: this.git.ref,
        path: this.git.path,
        every: formatDuration(this.git.everyMs),
        requireSignedBy: this.git.requireSignedBy.map((k) => `${k.kind} ${k.label}`),
      },
      commit: null,
      signer: null,
      subject: null,
      appliedAt: null,
      fetchedAt: null,
      checkedAt: null,
      teams: [],
      lastError: null,
      pid: process.pid,
    };
  }

  /**
   * Puts the previous good commit (if any) back in force, then fetches once; with neither, the
   * broker starts with no teams and the log and status say why. Then fetches every `every`.
   */
  async start(): Promise<void> {
    await mkdir(this.home, { recursive: true, mode: 0o700 });
    await mkdir(this.trees, { recursive: true, mode: 0o700 });
    if ((await this.run(['rev-parse', '--git-dir'], { allowFailure: true })).code !== 0) {
      await rm(this.repo, { recursive: true, force: true });
      await this.run(['init', '--bare', '--quiet', this.repo], { noGitDir: true });
    }
    const saved = await this.savedState();
    if (saved) {
      this.anchor = saved.commit;
      const result = await this.apply(saved.commit, { guard: false });
      if (result.errors.length === 0)
        this.opts.log.info(
          { commit: saved.commit },
          `policy commit ${short(saved.commit)} from the last run`,
        );
    }
    await this.reload();
    if (!this.inForce) {
      this.opts.log.warn(
        { git: this.git.url, why: this.status.lastError?.message },
        `starting with no teams: no policy commit from ${this.git.url} is in force` +
          (this.status.lastError ? ` (${this.status.lastError.message})` : ''),
      );
    }
    if (!this.closed) {
      this.timer = setInterval(() => void this.reload(), this.git.everyMs);
      this.timer.unref();
    }
  }

  /** Fetches now (the timer and SIGHUP); a check already running is shared, not doubled. */
  reload(): Promise<{ changed: string[]; errors: PolicyIssue[] }> {
    if (this.closed) return Promise.resolve({ changed: [], errors: [] });
    this.running ??= this.check().finally(() => (this.running = undefined));
    return this.running;
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
  }

  private async check(): Promise<{ changed: string[]; errors: PolicyIssue[] }> {
    const at = new Date().toISOString();
    this.status.checkedAt = at;
    let commit: string;
    try {
      await this.fetch();
      commit = (await this.text(['rev-parse', '--verify', '--quiet', `${FETCHED_REF}^{commit}`])).trim();
    } catch (err) {
      return this.fail(
        `fetching ${this.git.ref} from ${this.git.url} failed: ${(err as Error).message}`,
        null,
      );
    }
    this.status.fetchedAt = at;
    if (commit === this.inForce) {
      if (this.status.lastError)
        this.opts.log.info({ commit }, 'the fetched commit is the one in force again');
      this.status.lastError = null;
      this.refused = undefined;
      await this.writeStatus();
      return { changed: [], errors: [] };
    }
    if (commit === this.refused?.commit) {
      await this.writeStatus(); // refused already; said so once
      return { changed: [], errors: this.refused.issues };
    }
    return this.apply(commit, { guard: true });
  }

  /** Checks `commit` and, when it passes, puts its policies in force (all at once). */
  private async apply(
    commit: string,
    opts: { guard: boolean },
  ): Promise<{ changed: string[]; errors: PolicyIssue[] }> {
    try {
      if (
        opts.guard &&
        this.anchor &&
        this.anchor !== commit &&
        !(await this.descends(commit, this.anchor))
      ) {
        throw new Refusal(
          `commit ${short(commit)} does not descend from ${short(this.anchor)}, the last commit in force ` +
            `(a force-push or a rollback); refused. To accept it on purpose, stop airlock serve, delete ${this.stateFile} and start it again`,
        );
      }
      const signer = this.git.requireSignedBy.length ? await this.verify(commit) : null;
      const { tree, issues: treeIssues } = await this.checkout(commit);
      const { policies, issues } = await checkPolicyFiles(
        { ...this.opts.config, policies: tree },
        this.opts.servers,
      );
      const all = [...treeIssues, ...issues].map((i) => this.relabel(i, commit, tree));
      if (all.length) {
        throw new Refusal(
          `commit ${short(commit)} has ${all.length} policy error${all.length === 1 ? '' : 's'}:\n` +
            all.map(formatIssue).join('\n'),
          all,
        );
      }
      const subject = printable((await this.text(['log', '-1', '--format=%s', commit])).trim());
      await this.putInForce(commit, tree);
      const changed = this.opts.store.replaceAll(
        policies.map((p): TeamPolicy => ({
          ...p,
          file: path.join(this.current, path.relative(tree, p.file)),
        })),
      );
      this.inForce = commit;
      this.anchor = commit;
      this.refused = undefined;
      Object.assign(this.status, {
        commit,
        signer,
        subject,
        appliedAt: new Date().toISOString(),
        teams: policies.map((p) => p.team).sort(),
        lastError: null,
      });
      await this.writeStatus();
      await this.prune(commit);
      this.opts.log.info(
        { commit, signer, teams: this.status.teams, changed },
        `policy commit ${short(commit)} in force${signer ? ` (signed by ${signer})` : ''}`,
      );
      return { changed, errors: [] };
    } catch (err) {
      if (commit !== this.inForce)
        await rm(path.join(this.trees, commit), { recursive: true, force: true }).catch(() => undefined);
      if (err instanceof Refusal) {
        this.refused = { commit, issues: err.issues };
        return this.fail(err.message, commit, err.issues);
      }
      return this.fail(`cannot check commit ${short(commit)}: ${(err as Error).message}`, commit);
    }
  }

  private async fail(
    message: string,
    commit: string | null,
    issues: PolicyIssue[] = [],
  ): Promise<{ changed: string[]; errors: PolicyIssue[] }> {
    // The same failure again (an unreachable repository, every `every`) is logged once.
    const again = this.status.lastError?.message === message && this.status.lastError.commit === commit;
    this.status.lastError = { at: new Date().toISOString(), commit, message };
    const keeping = this.inForce ? `keeping commit ${short(this.inForce)}` : 'no policy commit is in force';
    if (!again) this.opts.log.error({ git: this.git.url, commit }, `${message}\n(${keeping})`);
    await this.writeStatus();
    return {
      changed: [],
      errors: issues.length ? issues : [{ file: this.git.url, line: 1, col: 1, message }],
    };
  }

  // -------------------------------------------------------------------------------------------
  // git

  private async run(
    args: string[],
    opts: {
      allowFailure?: boolean;
      noGitDir?: boolean;
      network?: Record<string, string>;
      redactor?: Redactor;
      maxOutputBytes?: number;
      extraEnv?: Record<string, string>;
    } = {},
  ): Promise<GitRunResult> {
    const env = {
      ...gitEnv({
        home: this.home,
        protocol: this.git.protocol,
        envConfig: opts.network,
        noOptionalLocks: true,
      }),
      ...opts.extraEnv,
    };
    const result = await runGit({
      ...(opts.noGitDir ? {} : { gitDir: this.repo }),
      cwd: this.home,
      args,
      env,
      protocol: this.git.protocol,
      timeoutMs: opts.network ? FETCH_TIMEOUT_MS : LOCAL_TIMEOUT_MS,
      ...(opts.redactor ? { redactor: opts.redactor } : {}),
      ...(opts.maxOutputBytes !== undefined ? { maxOutputBytes: opts.maxOutputBytes } : {}),
    });
    if (result.code !== 0 && !result.truncated && !opts.allowFailure)
      throw new Error(`git ${args[0]} failed: ${summary(result.stderr)}`);
    return result;
  }

  private async text(args: string[]): Promise<string> {
    return (await this.run(args)).stdout.toString('utf8');
  }

  private async fetch(): Promise<void> {
    const redactor = new Redactor();
    const network: Record<string, string> = {
      ...STALL_CONFIG,
      // Objects from the remote are checked before anything reads them.
      'fetch.fsckObjects': 'true',
      'transfer.fsckObjects': 'true',
    };
    if (this.git.credential) {
      const token = await this.opts.secrets.brokerValue(this.git.credential);
      redactor.add(token);
      const basic = Buffer.from(`${this.git.credentialUser}:${token}`, 'utf8').toString('base64');
      redactor.add(basic);
      // Through the environment of this one child (GIT_CONFIG_COUNT), never argv, the URL or a file.
      network['http.extraHeader'] = `Authorization: Basic ${basic}`;
    }
    await this.run(
      [
        'fetch',
        '--quiet',
        '--no-tags',
        '--no-write-fetch-head',
        '--',
        this.git.url,
        `+${this.git.ref}:${FETCHED_REF}`,
      ],
      { network, redactor },
    );
  }

  private async descends(commit: string, ancestor: string): Promise<boolean> {
    const known = await this.run(['cat-file', '-e', `${ancestor}^{commit}`], { allowFailure: true });
    if (known.code !== 0) {
      throw new Refusal(
        `the last commit in force, ${short(ancestor)}, is not in the repository any more, so commit ` +
          `${short(commit)} cannot be shown to descend from it; refused. To accept it on purpose, stop ` +
          `airlock serve, delete ${this.stateFile} and start it again`,
      );
    }
    const r = await this.run(['merge-base', '--is-ancestor', ancestor, commit], { allowFailure: true });
    if (r.code === 0) return true;
    if (r.code === 1) return false;
    throw new Error(`git merge-base failed: ${summary(r.stderr)}`);
  }

  /** Writes the commit's policy files (only those) into trees/<commit>; symlinks are reported. */
  private async checkout(commit: string): Promise<{ tree: string; issues: PolicyIssue[] }> {
    const spec = this.git.path ? `${commit}:${this.git.path}` : `${commit}^{tree}`;
    const listed = await this.run(['ls-tree', '-z', spec], { allowFailure: true });
    if (listed.code !== 0) throw new Refusal(`commit ${short(commit)} has no folder "${this.git.path}"`);
    const tree = path.join(this.trees, commit);
    const tmp = path.join(this.trees, `.${commit}.${process.pid}.tmp`);
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { mode: 0o700 });
    const issues: PolicyIssue[] = [];
    for (const entry of listed.stdout.toString('utf8').split('\0')) {
      const m = /^(\d+) (\w+) ([0-9a-f]+)\t(.+)$/s.exec(entry);
      if (!m) continue;
      const [, mode, type, object, name] = m as unknown as [string, string, string, string, string];
      if (type !== 'blob' || !isPolicyFileName(name) || name.includes('/')) continue;
      if (mode === '120000') {
        issues.push({
          file: path.join(tree, name),
          line: 1,
          col: 1,
          message: 'is a symlink in the repository; policy files must be regular files, so it is not read',
        });
        continue;
      }
      // One byte past the cap is enough for the checker to refuse a file that is too large.
      const blob = await this.run(['cat-file', 'blob', object], {
        maxOutputBytes: MAX_POLICY_FILE_BYTES + 1,
      });
      await writeFile(path.join(tmp, name), blob.stdout, { mode: 0o600 });
    }
    await rm(tree, { recursive: true, force: true });
    await rename(tmp, tree);
    return { tree, issues };
  }

  /** `<commit>:<path>/<file>` instead of the checkout's host path: what the author edits. */
  private relabel(issue: PolicyIssue, commit: string, tree: string): PolicyIssue {
    if (!issue.file.startsWith(tree + path.sep)) return issue;
    const name = path.relative(tree, issue.file);
    return { ...issue, file: `${short(commit)}:${this.git.path ? `${this.git.path}/` : ''}${name}` };
  }

  private async putInForce(commit: string, tree: string): Promise<void> {
    // The `current` symlink is replaced with one rename, so readers see one commit or the other.
    const link = path.join(this.root, `.current.${process.pid}.tmp`);
    await rm(link, { force: true });
    await symlink(path.relative(this.root, tree), link);
    await rename(link, this.current);
    await this.run(['update-ref', IN_FORCE_REF, commit]);
    const saved: SavedState = { git: this.git.url, ref: this.git.ref, path: this.git.path, commit };
    await writeAtomic(this.stateFile, JSON.stringify(saved) + '\n');
  }

  /** Drops checkouts of commits no longer in force. */
  private async prune(keep: string): Promise<void> {
    for (const name of await readdir(this.trees).catch(() => [] as string[])) {
      if (name !== keep) await rm(path.join(this.trees, name), { recursive: true, force: true });
    }
  }

  private async savedState(): Promise<SavedState | undefined> {
    let saved: Partial<SavedState>;
    try {
      saved = JSON.parse(await readFile(this.stateFile, 'utf8')) as Partial<SavedState>;
    } catch {
      return undefined;
    }
    if (typeof saved.commit !== 'string' || !/^[0-9a-f]{40,64}$/.test(saved.commit)) return undefined;
    if (saved.git !== this.git.url || saved.ref !== this.git.ref || saved.path !== this.git.path) {
      this.opts.log.info(
        { was: saved.git, ref: saved.ref },
        'the policy repository, ref or path changed since the last run; its commit is not used',
      );
      return undefined;
    }
    return saved as SavedState;
  }

  // -------------------------------------------------------------------------------------------
  // signatures

  /** The signer of `commit` when it carries a good signature by one of requireSignedBy. */
  private async verify(commit: string): Promise<string> {
    const keys = this.git.requireSignedBy;
    const ssh = keys.flatMap((k, i) => (k.kind === 'ssh' ? [{ k, i }] : []));
    const pgp = keys.filter((k): k is Extract<SignerKey, { kind: 'openpgp' }> => k.kind === 'openpgp');
    const sshKeygen = sshKeygenBinary();
    const gpg = gpgBinary();
    if (ssh.length && !sshKeygen) throw new Error('ssh-keygen not found: cannot check ssh signatures');
    if (pgp.length && !gpg) throw new Error('gpg not found: cannot check OpenPGP signatures');
    const allowedSigners = path.join(this.root, 'allowed_signers');
    await writeAtomic(
      allowedSigners,
      ssh
        .map(({ k, i }) => `${SIGNER_PREFIX}${i} namespaces="git" ${k.kind === 'ssh' ? k.key : ''}\n`)
        .join(''),
    );
    // A keyring of our own, holding exactly the OpenPGP keys given, thrown away afterwards.
    const gnupgHome = await mkdtemp(path.join(os.tmpdir(), 'airlock-gpg-'));
    const gpgEnv = { PATH: '/usr/bin:/bin', HOME: gnupgHome, GNUPGHOME: gnupgHome, LC_ALL: 'C' };
    try {
      for (const key of pgp) {
        const r = await runTool(gpg!, ['--batch', '--no-tty', '--quiet', '--import'], gpgEnv, key.armored);
        if (r.code !== 0) throw new Error(`gpg could not import ${key.label}: ${summary(r.stderr)}`);
      }
      const r = await this.run(['verify-commit', '--raw', commit], {
        allowFailure: true,
        network: {
          'gpg.ssh.allowedSignersFile': allowedSigners,
          'gpg.ssh.program': sshKeygen ?? '/bin/false',
          'gpg.program': gpg ?? '/bin/false',
        },
        extraEnv: { GNUPGHOME: gnupgHome },
      });
      const out = `${r.stdout.toString('utf8')}\n${r.stderr}`;
      const sshGood = /Good "git" signature for (\S+) with (\S+) key (\S+)/.exec(out);
      if (r.code === 0 && sshGood && sshGood[1]!.startsWith(SIGNER_PREFIX)) {
        const key = keys[Number(sshGood[1]!.slice(SIGNER_PREFIX.length))];
        if (key) return `ssh ${sshGood[2]} ${sshGood[3]} ${key.label}`;
      }
      const validSig =
        /^\[GNUPG:\] VALIDSIG (?:\S+ ){9}([0-9A-F]{16,})\s*$/m.exec(out) ??
        /^\[GNUPG:\] VALIDSIG ([0-9A-F]{16,})/m.exec(out);
      const goodSig = /^\[GNUPG:\] GOODSIG \S+ (.*)$/m.exec(out);
      if (r.code === 0 && validSig && goodSig)
        return `openpgp ${validSig[1]} ${printable(goodSig[1]!.trim())}`;
      const raw = await this.text(['cat-file', 'commit', commit]);
      const headers = raw.slice(0, raw.indexOf('\n\n'));
      if (!/^gpgsig(-sha256)? /m.test(headers)) {
        throw new Refusal(
          `commit ${short(commit)} is not signed; requireSignedBy needs a signature by one of its ${keys.length} key${keys.length === 1 ? '' : 's'}`,
        );
      }
      throw new Refusal(
        `commit ${short(commit)} is signed, but not by a key in requireSignedBy (${summary(out.replace(/^\[GNUPG:\].*$/gm, ''))})`,
      );
    } finally {
      const gpgconf = gpgconfBinary();
      if (gpgconf) await runTool(gpgconf, ['--kill', 'all'], gpgEnv).catch(() => undefined);
      await rm(gnupgHome, { recursive: true, force: true });
    }
  }

  private async writeStatus(): Promise<void> {
    try {
      await writeAtomic(this.statusFile, JSON.stringify(this.status, null, 2) + '\n');
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, `could not write ${this.statusFile}`);
    }
  }
}

async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, file);
}

/**
 * The policy store of `airlock serve` for a git source: previous good commit, first fetch, then
 * one fetch every `every`. (One-shot commands — call, stdio — read the commit in force from
 * <stateDir>/policy-git/current like a folder instead, and never write here.)
 */
export async function loadGitPolicies(
  config: AirlockConfig,
  servers: readonly ServerDefinition[] | ServerCatalog,
  log: Logger,
  secrets: SecretStore,
): Promise<PolicyStore> {
  const git = config.policyGit;
  if (!git) throw new Error('loadGitPolicies needs `policies: { git: … }`');
  const store = PolicyStore.empty(config, servers, log);
  const source = new PolicyGitSource({ config, git, servers, store, secrets, log });
  store.attachSource(source);
  await source.start();
  return store;
}
