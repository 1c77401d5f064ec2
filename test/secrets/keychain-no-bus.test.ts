// No D-Bus session at all (a headless host, a CI runner): every keychain operation fails with a
// message that says so and how to fix it; the commands exit 2; a secret names itself and the cause.
import { PassThrough, Readable } from 'node:stream';
import { beforeAll, describe, expect, it } from 'vitest';
import { KeychainUnavailableError, osKeychain } from '../../src/secrets/keychain.js';
import { secretsCommand } from '../../src/commands/secrets.js';
import { SecretError, SecretStore } from '../../src/secrets/store.js';
import { Redactor } from '../../src/secrets/redact.js';

beforeAll(() => {
  // The keyring library would otherwise use a desktop session bus the developer happens to have.
  delete process.env.DBUS_SESSION_BUS_ADDRESS;
});

const noBus =
  /^OS keychain unavailable: no D-Bus session bus to reach the Secret Service .*gnome-keyring-daemon --unlock/;

describe('OS keychain without a D-Bus session', () => {
  it('get, set, delete and list say the bus is missing and how to fix it', async () => {
    for (const op of [
      () => osKeychain.get('x'),
      () => osKeychain.set('x', 'value-never-shown'),
      () => osKeychain.delete('x'),
      () => osKeychain.list(),
    ]) {
      const err = await op().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(KeychainUnavailableError);
      expect((err as Error).message).toMatch(noBus);
      expect((err as Error).message).not.toContain('value-never-shown');
    }
  });

  it('secrets set exits 2 with that message and never echoes the value', async () => {
    let errText = '';
    const err = new PassThrough().on('data', (d: Buffer) => (errText += d.toString()));
    const code = await secretsCommand({
      action: 'set',
      name: 'stripe-key',
      stdin: Readable.from([Buffer.from('sk_test_value_from_stdin\n')]),
      out: new PassThrough(),
      err,
    });
    expect(code).toBe(2);
    expect(errText).toMatch(/airlock secrets: OS keychain unavailable: no D-Bus session bus/);
    expect(errText).not.toContain('sk_test_value_from_stdin');
  });

  it('secrets list exits 2', async () => {
    const code = await secretsCommand({ action: 'list', out: new PassThrough(), err: new PassThrough() });
    expect(code).toBe(2);
  });

  it('a keychain secret fails with a SecretError naming the secret and the cause', async () => {
    const store = new SecretStore({ 'stripe-key': { keychain: 'stripe-key' } }, new Redactor());
    const err = await store.resolve('stripe-key', 'payments').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SecretError);
    expect((err as Error).message).toMatch(
      /^secret "stripe-key": OS keychain unavailable: no D-Bus session bus/,
    );
  });
});
