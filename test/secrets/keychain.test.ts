// The OS keychain for real: gnome-keyring's Secret Service on a private D-Bus session.
import { PassThrough, Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { osKeychain } from '../../src/secrets/keychain.js';
import { secretsCommand } from '../../src/commands/secrets.js';
import { SecretError, SecretStore } from '../../src/secrets/store.js';
import { Redactor, REDACTED } from '../../src/secrets/redact.js';
import { startKeyringSession, type KeyringSession } from './keyring-session.js';

function sink(): PassThrough & { text(): string } {
  const s = new PassThrough() as PassThrough & { text(): string };
  let buf = '';
  s.on('data', (d: Buffer) => (buf += d.toString()));
  s.text = () => buf;
  return s;
}

async function run(action: 'set' | 'list' | 'delete', name?: string, input?: string) {
  const out = sink();
  const err = sink();
  const code = await secretsCommand({
    action,
    name,
    stdin: Readable.from(input === undefined ? [] : [Buffer.from(input)]),
    out,
    err,
    keychain: osKeychain,
  });
  return { code, out: out.text(), err: err.text() };
}

let session: KeyringSession | undefined;
const savedBus = process.env.DBUS_SESSION_BUS_ADDRESS;

beforeAll(async () => {
  // Must happen before anything touches the keychain in this process (see keyring-session.ts).
  session = await startKeyringSession({ unlock: true });
  process.env.DBUS_SESSION_BUS_ADDRESS = session.busAddress;
});

afterAll(async () => {
  if (savedBus === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS;
  else process.env.DBUS_SESSION_BUS_ADDRESS = savedBus;
  await session?.stop();
});

describe('OS keychain (gnome-keyring over D-Bus)', () => {
  const name = 'stripe-key';
  const value = 'sk_live_Kc9xT3stValue-0123456789';

  it('set (stdin) → list (names only) → resolve → delete → not found', async () => {
    const set = await run('set', name, value + '\n');
    expect(set).toMatchObject({ code: 0 });
    expect(set.out + set.err).not.toContain(value);
    // Exactly one trailing newline was stripped before storing.
    expect(await osKeychain.get(name)).toBe(value);

    const listed = await run('list');
    expect(listed.code).toBe(0);
    expect(listed.out.split('\n')).toContain(name);
    expect(listed.out + listed.err).not.toContain(value);

    const redactor = new Redactor();
    const store = new SecretStore({ [name]: { keychain: name } }, redactor, { cacheTtlMs: 0 });
    expect(await store.resolve(name, 'payments')).toBe(value);
    expect(redactor.scrub(`Bearer ${value}`)).toBe(`Bearer ${REDACTED}`);

    const deleted = await run('delete', name);
    expect(deleted.code).toBe(0);
    expect((await run('list')).out.split('\n')).not.toContain(name);

    const err = await store.resolve(name, 'payments').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SecretError);
    expect((err as SecretError).secret).toBe(name);
    expect((err as Error).message).toBe(
      `secret "${name}": not found in the OS keychain (service "airlock", account "${name}")`,
    );
  });

  it('delete of a missing entry is a user error (exit 1)', async () => {
    const r = await run('delete', 'never-stored');
    expect(r.code).toBe(1);
    expect(r.err).toContain('secret "never-stored" is not in the OS keychain');
  });

  it('set overwrites, keeps the value byte-exact but for one trailing newline', async () => {
    expect((await run('set', 'pem', 'line one\nline two\n\n')).code).toBe(0);
    expect(await osKeychain.get('pem')).toBe('line one\nline two\n');
    expect((await run('set', 'pem', 'rotated-value')).code).toBe(0);
    expect(await osKeychain.get('pem')).toBe('rotated-value');
    expect(await osKeychain.delete('pem')).toBe(true);
    expect(await osKeychain.delete('pem')).toBe(false);
  });

  it('list returns account names sorted and never values', async () => {
    await osKeychain.set('b-secret', 'value-bbbb');
    await osKeychain.set('a-secret', 'value-aaaa');
    const names = await osKeychain.list();
    expect(names.filter((n) => n.endsWith('-secret'))).toEqual(['a-secret', 'b-secret']);
    expect(JSON.stringify(names)).not.toContain('value-');
    await osKeychain.delete('a-secret');
    await osKeychain.delete('b-secret');
  });

  it('resolveAll registers a keychain value for redaction and reports a missing one without values', async () => {
    await osKeychain.set('present', 'present-value-123');
    const redactor = new Redactor();
    const store = new SecretStore(
      { present: { keychain: 'present' }, absent: { keychain: 'absent' } },
      redactor,
    );
    const checks = await store.resolveAll();
    expect(checks).toEqual([
      { name: 'present', ok: true },
      {
        name: 'absent',
        ok: false,
        error: 'secret "absent": not found in the OS keychain (service "airlock", account "absent")',
      },
    ]);
    expect(redactor.scrub('x present-value-123 y')).toBe(`x ${REDACTED} y`);
    await osKeychain.delete('present');
  });
});

describe('airlock secrets set: input handling', () => {
  it('refuses a value passed as an argument, never echoes it, and stores nothing', async () => {
    const leaked = 'sk_live_PassedOnTheCommandLine999';
    const out = sink();
    const err = sink();
    const code = await secretsCommand({
      action: 'set',
      name: 'argv-secret',
      extraArgs: [leaked],
      stdin: Readable.from([Buffer.from('from-stdin-value')]),
      out,
      err,
      keychain: osKeychain,
    });
    expect(code).toBe(1);
    expect(err.text()).toContain('takes the value on stdin, never as an argument');
    expect(out.text() + err.text()).not.toContain(leaked);
    expect(await osKeychain.get('argv-secret')).toBeUndefined();
  });

  it('refuses an empty value (empty stdin, or only a newline)', async () => {
    for (const input of ['', '\n']) {
      const r = await run('set', 'empty-secret', input);
      expect(r.code).toBe(1);
      expect(r.err).toContain('refusing to store an empty value');
    }
    expect(await osKeychain.get('empty-secret')).toBeUndefined();
  });

  it('refuses a bad or missing name (exit 1)', async () => {
    const bad = await run('set', '../etc/passwd', 'value-1234');
    expect(bad.code).toBe(1);
    expect(bad.err).toContain('invalid secret name "../etc/passwd"');
    expect((await run('set', undefined, 'value-1234')).code).toBe(1);
    expect((await run('delete', undefined)).code).toBe(1);
    expect((await osKeychain.list()).some((n) => n.includes('passwd'))).toBe(false);
  });

  it('refuses a value larger than 1 MiB', async () => {
    const r = await run('set', 'huge', 'x'.repeat(1024 * 1024 + 1));
    expect(r.code).toBe(1);
    expect(r.err).toContain('larger than 1048576 bytes');
    expect(await osKeychain.get('huge')).toBeUndefined();
  });

  it('on a terminal, reads in raw mode without echo (Backspace edits, Enter ends)', async () => {
    // A stand-in for a TTY stream: a real pseudo-terminal needs the compiled CLI in a child process.
    const tty = new PassThrough() as PassThrough & { isTTY: boolean; setRawMode(on: boolean): void };
    const rawModes: boolean[] = [];
    tty.isTTY = true;
    tty.setRawMode = (on: boolean) => void rawModes.push(on);
    const out = sink();
    const err = sink();
    const done = secretsCommand({ action: 'set', name: 'typed', stdin: tty, out, err, keychain: osKeychain });
    await new Promise((r) => setTimeout(r, 20));
    tty.write('typed-valuX');
    tty.write('\u007fe-5678\r');
    expect(await done).toBe(0);
    expect(rawModes).toEqual([true, false]);
    expect(err.text()).toMatch(/^value for secret "typed" \(input hidden; or pipe it/);
    expect(out.text() + err.text()).not.toContain('typed-valu');
    expect(await osKeychain.get('typed')).toBe('typed-value-5678');
    await osKeychain.delete('typed');
  });

  it('on a terminal, Ctrl-C cancels without storing', async () => {
    const tty = new PassThrough() as PassThrough & { isTTY: boolean; setRawMode(on: boolean): void };
    tty.isTTY = true;
    tty.setRawMode = () => undefined;
    const err = sink();
    const done = secretsCommand({
      action: 'set',
      name: 'cancelled',
      stdin: tty,
      out: sink(),
      err,
      keychain: osKeychain,
    });
    await new Promise((r) => setTimeout(r, 20));
    tty.write('partial\u0003');
    expect(await done).toBe(1);
    expect(err.text()).toContain('cancelled');
    expect(await osKeychain.get('cancelled')).toBeUndefined();
  });
});
