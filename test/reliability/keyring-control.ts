// A Secret Service the keychain fault tests can break and mend: our own dbus-daemon listening on
// a fixed socket path (so a restarted bus has the same address the broker was given) and a
// gnome-keyring-daemon holding an unlocked login keyring in a temp folder. Unlike
// test/secrets/keyring-session.ts (one dbus-run-session for a test file's life), each part here
// can be locked, stopped, frozen (SIGSTOP: the bus accepts and never answers) and started again.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface KeyringControl {
  busAddress: string;
  /** Locks the login keyring through the Secret Service (reads then need an unlock prompt). */
  lock(): Promise<void>;
  /** Unlocks it as an operator on a headless host does: gnome-keyring-daemon --replace --unlock. */
  unlock(): Promise<void>;
  /** Kills the bus (and the keyring daemon goes with it). */
  stopBus(): Promise<void>;
  /** Starts the bus again at the same address, with an unlocked keyring. */
  startBus(): Promise<void>;
  /** SIGSTOP / SIGCONT of the bus: connections are accepted and never answered. */
  freezeBus(): void;
  thawBus(): void;
  close(): Promise<void>;
}

export async function startKeyringControl(): Promise<KeyringControl> {
  const home = mkdtempSync(join(tmpdir(), 'airlock-kc-'));
  const runtimeDir = join(home, 'run');
  mkdirSync(runtimeDir, { mode: 0o700 });
  const busPath = join(home, 'bus');
  const busAddress = `unix:path=${busPath}`;
  const env = {
    PATH: process.env.PATH,
    HOME: home,
    XDG_DATA_HOME: join(home, 'data'),
    XDG_CONFIG_HOME: join(home, 'config'),
    XDG_RUNTIME_DIR: runtimeDir,
    DBUS_SESSION_BUS_ADDRESS: busAddress,
    KEYRING_PASSWORD: randomBytes(12).toString('hex'),
  };
  // No service activation: a call to the Secret Service while its daemon is down must fail, not
  // start a fresh locked daemon that would then own the name instead of ours.
  const busConfig = join(home, 'bus.conf');
  writeFileSync(
    busConfig,
    `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>${busAddress}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`,
  );
  let bus: ChildProcess | undefined;
  let keyring: ChildProcess | undefined;

  const exited = (child: ChildProcess) =>
    child.exitCode !== null || child.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((resolve) => child.once('exit', () => resolve()));

  async function startBusOnly() {
    rmSync(busPath, { force: true });
    bus = spawn('dbus-daemon', [`--config-file=${busConfig}`, '--nofork'], {
      env,
      stdio: 'ignore',
    });
    await waitFor(() => existsSync(busPath), 'dbus-daemon did not create its socket');
  }

  async function startKeyring(replace: boolean) {
    const child = spawn(
      'sh',
      [
        '-c',
        `printf %s "$KEYRING_PASSWORD" | exec gnome-keyring-daemon --foreground ${replace ? '--replace ' : ''}--unlock --components=secrets`,
      ],
      { env, stdio: 'ignore' },
    );
    keyring = child;
    // Ready once the Secret Service name is owned on the bus and the login keyring is unlocked.
    await waitFor(async () => {
      const { stdout } = await execFileAsync(
        'gdbus',
        [
          'call',
          '--session',
          '--dest',
          'org.freedesktop.secrets',
          '--object-path',
          '/org/freedesktop/secrets/collection/login',
          '--method',
          'org.freedesktop.DBus.Properties.Get',
          'org.freedesktop.Secret.Collection',
          'Locked',
        ],
        { env, timeout: 2000 },
      ).catch(() => ({ stdout: '' }));
      return stdout.includes('<false>');
    }, 'gnome-keyring-daemon did not serve an unlocked login keyring');
  }

  async function stopKeyring() {
    if (!keyring) return;
    const k = keyring;
    keyring = undefined;
    k.kill('SIGTERM');
    await exited(k);
  }

  await startBusOnly();
  await startKeyring(false);

  return {
    busAddress,
    async lock() {
      await execFileAsync(
        'gdbus',
        [
          'call',
          '--session',
          '--dest',
          'org.freedesktop.secrets',
          '--object-path',
          '/org/freedesktop/secrets',
          '--method',
          'org.freedesktop.Secret.Service.Lock',
          "['/org/freedesktop/secrets/collection/login']",
        ],
        { env, timeout: 5000 },
      );
    },
    async unlock() {
      await stopKeyring();
      await startKeyring(true);
    },
    async stopBus() {
      const b = bus!;
      bus = undefined;
      b.kill('SIGKILL');
      await exited(b);
      await stopKeyring();
    },
    async startBus() {
      await startBusOnly();
      await startKeyring(false);
    },
    freezeBus: () => void bus!.kill('SIGSTOP'),
    thawBus: () => void bus!.kill('SIGCONT'),
    async close() {
      bus?.kill('SIGCONT');
      await stopKeyring();
      if (bus) {
        bus.kill('SIGKILL');
        await exited(bus);
      }
      rmSync(home, { recursive: true, force: true });
    },
  };
}

async function waitFor(ok: () => boolean | Promise<boolean>, why: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`test keychain: ${why} within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
