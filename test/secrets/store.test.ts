// SecretStore with env and file sources: values, ACL, errors that never carry a value, redaction.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SecretError, SecretStore, trimOneNewline } from '../../src/secrets/store.js';
import { Redactor, REDACTED } from '../../src/secrets/redact.js';
import type { SecretConfig } from '../../src/secrets/config.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'airlock-secrets-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function secretFile(name: string, content: string, mode = 0o600): string {
  const path = join(dir, name);
  writeFileSync(path, content, { mode });
  chmodSync(path, mode);
  return path;
}

async function failure(p: Promise<unknown>): Promise<SecretError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SecretError);
  return err as SecretError;
}

function store(
  secrets: Record<string, SecretConfig>,
  env: NodeJS.ProcessEnv = {},
  extra: { cacheTtlMs?: number } = {},
) {
  const redactor = new Redactor();
  const warnings: string[] = [];
  const s = new SecretStore(secrets, redactor, { env, onWarning: (w) => warnings.push(w), ...extra });
  return { s, redactor, warnings };
}

const TOKEN = 'ghp_EnvTokenValue0123456789abcdef';

describe('env source', () => {
  it('resolves the variable of the given env and registers it for redaction', async () => {
    const { s, redactor } = store({ 'github-token': { env: 'GITHUB_TOKEN' } }, { GITHUB_TOKEN: TOKEN });
    expect(redactor.scrub(TOKEN)).toBe(TOKEN); // nothing registered before the first resolve
    expect(await s.resolve('github-token', 'payments')).toBe(TOKEN);
    expect(redactor.scrub(TOKEN)).toBe(REDACTED);
    expect(redactor.scrub(`token ${Buffer.from(TOKEN).toString('base64')}`)).toBe(`token ${REDACTED}`);
  });

  it('an unset variable names the secret and the variable', async () => {
    const { s } = store({ 'github-token': { env: 'GITHUB_TOKEN' } });
    const err = await failure(s.resolve('github-token', 'payments'));
    expect(err.secret).toBe('github-token');
    expect(err.message).toBe('secret "github-token": environment variable GITHUB_TOKEN is not set');
  });

  it('an empty variable is an error', async () => {
    const { s } = store({ t: { env: 'T' } }, { T: '' });
    expect((await failure(s.resolve('t', 'a'))).message).toBe('secret "t": environment variable T is empty');
  });

  it('keeps a trailing newline in an env value (only files are trimmed)', async () => {
    const { s } = store({ t: { env: 'T' } }, { T: 'value-with-nl\n' });
    expect(await s.resolve('t', 'a')).toBe('value-with-nl\n');
  });
});

describe('file source', () => {
  it('strips exactly one trailing newline', async () => {
    const one = secretFile('one', 'postgres://u:p@db/x\n');
    const two = secretFile('two', 'multi\nline\n\n');
    const crlf = secretFile('crlf', 'windows-value\r\n');
    const none = secretFile('none', 'no-newline');
    const { s } = store({
      one: { file: one },
      two: { file: two },
      crlf: { file: crlf },
      none: { file: none },
    });
    expect(await s.resolve('one', 'a')).toBe('postgres://u:p@db/x');
    expect(await s.resolve('two', 'a')).toBe('multi\nline\n');
    expect(await s.resolve('crlf', 'a')).toBe('windows-value');
    expect(await s.resolve('none', 'a')).toBe('no-newline');
    expect(trimOneNewline('\n\n')).toBe('\n');
  });

  it('an empty file (or one holding only a newline) is an error', async () => {
    const empty = secretFile('empty', '');
    const nl = secretFile('nl', '\n');
    const { s } = store({ empty: { file: empty }, nl: { file: nl } });
    expect((await failure(s.resolve('empty', 'a'))).message).toBe(`secret "empty": file ${empty} is empty`);
    expect((await failure(s.resolve('nl', 'a'))).message).toBe(`secret "nl": file ${nl} is empty`);
  });

  it('a missing file names the path and the cause', async () => {
    const path = join(dir, 'missing');
    const { s } = store({ x: { file: path } });
    expect((await failure(s.resolve('x', 'a'))).message).toBe(
      `secret "x": file ${path} is not readable (ENOENT)`,
    );
  });

  it('a directory, a FIFO or an oversized file fails without the contents in the message', async () => {
    const value = 'SuperSecretFileContent-987654321';
    const folder = join(dir, 'folder');
    mkdirSync(folder);
    writeFileSync(join(folder, 'inner'), value);
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const big = secretFile('big', (value + '\n').repeat(40_000));
    const { s, redactor } = store({ folder: { file: folder }, fifo: { file: fifo }, big: { file: big } });
    const messages: string[] = [];
    for (const name of ['folder', 'fifo', 'big'])
      messages.push((await failure(s.resolve(name, 'a'))).message);
    expect(messages).toEqual([
      `secret "folder": file ${folder} is not readable (not a regular file)`,
      `secret "fifo": file ${fifo} is not readable (not a regular file)`,
      `secret "big": file ${big} is not readable (larger than 1048576 bytes)`,
    ]);
    for (const m of messages) expect(m).not.toContain(value);
    expect(redactor.size).toBe(0);
  });

  it('a group/world-readable file resolves but warns (once), naming path and mode', async () => {
    const loose = secretFile('loose', 'loose-file-value\n', 0o644);
    const { s, warnings } = store({ loose: { file: loose } }, {}, { cacheTtlMs: 0 });
    expect(await s.resolve('loose', 'a')).toBe('loose-file-value');
    expect(await s.resolve('loose', 'a')).toBe('loose-file-value');
    expect(warnings).toEqual([
      `secret "loose": file ${loose} is accessible to group or others (mode 0644); chmod 600 it`,
    ]);
    const strict = secretFile('strict', 'strict-file-value', 0o600);
    const quiet = store({ strict: { file: strict } });
    await quiet.s.resolve('strict', 'a');
    expect(quiet.warnings).toEqual([]);
  });

  it('caches for the TTL, then rereads (rotation without restart); both values stay redacted', async () => {
    const path = secretFile('rotating', 'first-value-1111');
    const { s, redactor } = store({ r: { file: path } }, {}, { cacheTtlMs: 200 });
    expect(await s.resolve('r', 'a')).toBe('first-value-1111');
    writeFileSync(path, 'second-value-2222');
    expect(await s.resolve('r', 'a')).toBe('first-value-1111');
    await new Promise((r) => setTimeout(r, 250));
    expect(await s.resolve('r', 'a')).toBe('second-value-2222');
    expect(redactor.scrub('first-value-1111 second-value-2222')).toBe(`${REDACTED} ${REDACTED}`);
  });

  it('a failed read is not cached: fixing the file fixes the secret', async () => {
    const path = join(dir, 'late');
    const { s } = store({ late: { file: path } });
    await failure(s.resolve('late', 'a'));
    secretFile('late', 'late-value-3333');
    expect(await s.resolve('late', 'a')).toBe('late-value-3333');
  });

  it('warns when a value is too short to redact', async () => {
    const { s, warnings } = store({ pin: { env: 'PIN' } }, { PIN: 'abc' });
    expect(await s.resolve('pin', 'a')).toBe('abc');
    expect(warnings).toEqual([
      'secret "pin": the value is shorter than 4 characters, so it cannot be redacted from output',
    ]);
  });
});

describe('access control', () => {
  const secrets: Record<string, SecretConfig> = {
    'github-token': { env: 'GITHUB_TOKEN', teams: ['payments'] },
    shared: { env: 'SHARED' },
  };
  const env = { GITHUB_TOKEN: TOKEN, SHARED: 'shared-value-4444' };

  it('has / mayUse', () => {
    const { s } = store(secrets, env);
    expect(s.has('github-token')).toBe(true);
    expect(s.has('nope')).toBe(false);
    expect(s.has('toString')).toBe(false);
    expect(s.mayUse('github-token', 'payments')).toBe(true);
    expect(s.mayUse('github-token', 'search')).toBe(false);
    expect(s.mayUse('shared', 'search')).toBe(true);
    expect(s.mayUse('nope', 'payments')).toBe(false);
  });

  it('a team outside `teams` is refused before the value is read or registered', async () => {
    const { s, redactor } = store(secrets, env);
    const err = await failure(s.resolve('github-token', 'search'));
    expect(err.message).toBe('secret "github-token" may not be used by team "search"');
    expect(err.secret).toBe('github-token');
    expect(redactor.size).toBe(0);
    expect(await s.resolve('github-token', 'payments')).toBe(TOKEN);
  });

  it('an unknown secret (including Object.prototype names) is refused', async () => {
    const { s } = store(secrets, env);
    expect((await failure(s.resolve('nope', 'payments'))).message).toBe('unknown secret "nope"');
    expect((await failure(s.resolve('__proto__', 'payments'))).message).toBe('unknown secret "__proto__"');
  });

  it('forTeam binds the team', async () => {
    const { s } = store(secrets, env);
    expect(await s.forTeam('payments').get('github-token')).toBe(TOKEN);
    // A tool hears the name only; why (here: another team's secret) is the operator's detail.
    const refused = await s
      .forTeam('search')
      .get('github-token')
      .then(
        () => expect.fail('resolved'),
        (err: unknown) => err as Error & { operatorDetail?: string },
      );
    expect(refused.message).toBe('credential "github-token" is unavailable (ask the operator)');
    expect(refused.operatorDetail).toContain('may not be used by team "search"');
    expect(await s.forTeam('search').get('shared')).toBe('shared-value-4444');
  });
});

describe('githubApp and resolveAll', () => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();

  it('resolve refuses a GitHub App secret with a clear message, without reading the key (tokens come from githubToken)', async () => {
    const { s, redactor } = store(
      {
        'gh-app': { githubApp: { appId: 1, installationId: 2, privateKey: { env: 'APP_KEY' } } },
      },
      { APP_KEY: pem },
    );
    const err = await failure(s.resolve('gh-app', 'payments'));
    expect(err.message).toMatch(
      /^secret "gh-app" is a GitHub App: it yields installation tokens for the github server and for git workspaces/,
    );
    expect(redactor.size).toBe(0);
  });

  it('resolveAll reads every secret, registers values and the app key, and never returns values', async () => {
    const keyFile = secretFile('app.pem', pem);
    const bad = secretFile('bad.pem', 'not a key at all, but secret-ish text');
    const loose = secretFile('loose2', 'loose-value-5555', 0o640);
    const { s, redactor } = store(
      {
        'github-token': { env: 'GITHUB_TOKEN', teams: ['payments'] },
        missing: { env: 'MISSING' },
        loose: { file: loose },
        'gh-app': { githubApp: { appId: 1, installationId: 2, privateKey: { file: keyFile } } },
        'bad-app': { githubApp: { appId: 1, installationId: 2, privateKey: { file: bad } } },
      },
      { GITHUB_TOKEN: TOKEN },
    );
    const checks = await s.resolveAll();
    expect(checks).toEqual([
      { name: 'github-token', ok: true },
      { name: 'missing', ok: false, error: 'secret "missing": environment variable MISSING is not set' },
      {
        name: 'loose',
        ok: true,
        warning: `secret "loose": file ${loose} is accessible to group or others (mode 0640); chmod 600 it`,
      },
      { name: 'gh-app', ok: true },
      {
        name: 'bad-app',
        ok: false,
        error: 'secret "bad-app": the GitHub App private key is not a valid PEM private key',
      },
    ]);
    const dump = JSON.stringify(checks);
    for (const v of [TOKEN, 'loose-value-5555', 'BEGIN RSA PRIVATE KEY', 'secret-ish'])
      expect(dump).not.toContain(v);
    // Eager redaction: every value read is scrubbed, including the app's private key and its body.
    expect(redactor.scrub(TOKEN)).toBe(REDACTED);
    expect(redactor.scrub(pem.trimEnd())).toBe(REDACTED);
    const bodyLines = pem.split('\n').filter((l) => l && !l.startsWith('-----'));
    expect(redactor.scrub(`part: ${bodyLines[3]}`)).toBe(`part: ${REDACTED}`);
    expect(redactor.scrub(bodyLines.join(''))).toBe(REDACTED);
    expect(redactor.scrub('loose-value-5555')).toBe(REDACTED);
  });
});
