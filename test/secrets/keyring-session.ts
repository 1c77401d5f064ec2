// A real Secret Service for tests: a private D-Bus session (dbus-run-session) with gnome-keyring
// holding a fresh login keyring in a temp folder. The keyring library connects to the bus named by
// DBUS_SESSION_BUS_ADDRESS on first use and keeps that connection (or that failure) for the life of
// the process, so a test file sets the variable in beforeAll before anything touches the keychain,
// and every keychain scenario lives in its own test file (vitest runs each file in its own process).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface KeyringSession {
  busAddress: string;
  stop(): Promise<void>;
}

/**
 * Starts the bus; with `unlock`, also creates and unlocks a login keyring (the default collection
 * that a keychain write goes to). An empty password creates no keyring here, so a random one is used.
 * Rejects with a message that says what failed: the keychain tests fail, never skip.
 */
export async function startKeyringSession(opts: { unlock: boolean }): Promise<KeyringSession> {
  const home = mkdtempSync(join(tmpdir(), 'airlock-keyring-'));
  const runtimeDir = join(home, 'run');
  mkdirSync(runtimeDir, { mode: 0o700 });
  const unlock = opts.unlock
    ? 'printf %s "$KEYRING_PASSWORD" | gnome-keyring-daemon --unlock --components=secrets >/dev/null || { echo "gnome-keyring-daemon --unlock failed" >&2; exit 3; }; '
    : '';
  // The session lives until our stdin closes: when the test process ends for any reason, `cat`
  // sees EOF, dbus-run-session tears the bus down and gnome-keyring-daemon exits with it.
  const script = `${unlock}echo "BUS=$DBUS_SESSION_BUS_ADDRESS"; exec cat >/dev/null`;
  let child: ChildProcess;
  try {
    child = spawn('dbus-run-session', ['--', 'sh', '-c', script], {
      env: {
        PATH: process.env.PATH,
        HOME: home,
        XDG_DATA_HOME: join(home, 'data'),
        XDG_CONFIG_HOME: join(home, 'config'),
        XDG_RUNTIME_DIR: runtimeDir,
        KEYRING_PASSWORD: randomBytes(12).toString('hex'),
      },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
  } catch (err) {
    rmSync(home, { recursive: true, force: true });
    throw new Error(
      `cannot start the test keychain: dbus-run-session did not start (${String(err)}); install dbus and gnome-keyring`,
    );
  }
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));

  const stop = async () => {
    child.stdin!.end();
    const timedOut = await Promise.race([exited.then(() => false), sleep(5000).then(() => true)]);
    if (timedOut && child.pid) process.kill(-child.pid, 'SIGKILL');
    rmSync(home, { recursive: true, force: true });
  };

  const busAddress = await new Promise<string>((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(() => fail('no bus address within 15 s'), 15_000);
    function fail(why: string) {
      clearTimeout(timer);
      reject(
        new Error(
          `cannot start the test keychain (dbus-run-session + gnome-keyring-daemon): ${why}; stderr: ${stderr.trim() || '(empty)'}`,
        ),
      );
    }
    child.once('error', (err) =>
      fail(`spawn failed: ${err.message} (are dbus and gnome-keyring installed?)`),
    );
    child.once('exit', (code) => fail(`exited early with code ${code}`));
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = /^BUS=(.+)$/m.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
  }).catch(async (err: unknown) => {
    await stop();
    throw err;
  });
  return { busAddress, stop };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
