// A D-Bus session whose Secret Service (gnome-keyring, activated on demand) has no login keyring:
// a read finds nothing, a write fails with a message that says to create and unlock one.
import { PassThrough, Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeychainUnavailableError, osKeychain } from '../../src/secrets/keychain.js';
import { secretsCommand } from '../../src/commands/secrets.js';
import { startKeyringSession, type KeyringSession } from './keyring-session.js';

let session: KeyringSession | undefined;
const savedBus = process.env.DBUS_SESSION_BUS_ADDRESS;

beforeAll(async () => {
  session = await startKeyringSession({ unlock: false });
  process.env.DBUS_SESSION_BUS_ADDRESS = session.busAddress;
});

afterAll(async () => {
  if (savedBus === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS;
  else process.env.DBUS_SESSION_BUS_ADDRESS = savedBus;
  await session?.stop();
});

describe('OS keychain with no default keyring', () => {
  it('a write says there is no default keyring and how to create one', async () => {
    const err = await osKeychain.set('x', 'value-never-shown').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KeychainUnavailableError);
    expect((err as Error).message).toMatch(
      /^OS keychain unavailable: the Secret Service has no default keyring to store into .*gnome-keyring-daemon --unlock/,
    );
    expect((err as Error).message).not.toContain('value-never-shown');
  });

  it('secrets set exits 2', async () => {
    let errText = '';
    const code = await secretsCommand({
      action: 'set',
      name: 'x',
      stdin: Readable.from([Buffer.from('value-never-shown')]),
      out: new PassThrough(),
      err: new PassThrough().on('data', (d: Buffer) => (errText += d.toString())),
    });
    expect(code).toBe(2);
    expect(errText).toContain('no default keyring');
  });
});
