// `airlock serve` creates and chmods/chowns `<socketDir>/<team>/` and its sockets. It runs as
// root on many hosts, so it must never follow a symlink planted there, nor adopt a folder that
// someone else owns: a link to /etc/shadow chmod'ed 0660 to the agent's group would hand it over.
import { lstat, mkdir, stat, symlink, writeFile, chmod, chown } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Broker } from '../../src/broker.js';
import { loadConfig } from '../../src/config/airlock-yaml.js';
import { silentLogger } from '../../src/log.js';
import { makeInstallation, type Installation } from '../helpers/fixture.js';

const POLICY = `team: acme
servers:
  http:
    hosts:
      - origin: http://127.0.0.1:9
        allowPrivateAddress: true
    tools:
      http_request: {}
`;

let inst: Installation;
let broker: Broker | undefined;

beforeEach(async () => {
  inst = await makeInstallation({ policies: { 'acme.yaml': POLICY } });
});
afterEach(async () => {
  await broker?.stop(1000);
  broker = undefined;
  await inst.cleanup();
});

const start = async () => {
  broker = await Broker.start(await loadConfig(inst.configFile), { log: silentLogger() });
  return broker;
};

describe('socket folder hardening', () => {
  it('refuses a team folder that is a symlink, and leaves its target alone', async () => {
    const victim = path.join(inst.root, 'victim');
    await mkdir(victim, { mode: 0o700 });
    await chmod(victim, 0o700);
    await mkdir(inst.socketDir, { recursive: true });
    await symlink(victim, path.join(inst.socketDir, 'acme'));
    await expect(start()).rejects.toThrow(/acme is a symlink; refusing to use it/);
    const after = await stat(victim);
    expect(after.mode & 0o777).toBe(0o700);
    expect((await lstat(path.join(victim, 'http.sock')).catch(() => undefined)) === undefined).toBe(true);
  });

  it('refuses a socket path that is a symlink to a file, and leaves the file alone', async () => {
    const victim = path.join(inst.root, 'shadow');
    await writeFile(victim, 'root:$6$hash:19000:0:99999:7:::\n', { mode: 0o600 });
    await mkdir(path.join(inst.socketDir, 'acme'), { recursive: true, mode: 0o750 });
    await symlink(victim, inst.socket('acme', 'http'));
    await expect(start()).rejects.toThrow(/exists and is not a socket/);
    expect((await stat(victim)).mode & 0o777).toBe(0o600);
  });

  it.runIf(process.getuid?.() === 0)('refuses a team folder owned by another user', async () => {
    const teamDir = path.join(inst.socketDir, 'acme');
    await mkdir(teamDir, { recursive: true, mode: 0o777 });
    await chown(teamDir, 65534, 65534);
    await expect(start()).rejects.toThrow(/acme is owned by uid 65534, not by this broker \(uid 0\)/);
    expect((await stat(teamDir)).mode & 0o777).not.toBe(0o750);
  });

  it('refuses a socket folder anyone may write to (without the sticky bit)', async () => {
    await mkdir(inst.socketDir, { recursive: true });
    await chmod(inst.socketDir, 0o777);
    await expect(start()).rejects.toThrow(/run is writable by every user/);
    await chmod(inst.socketDir, 0o1777);
    const b = await start();
    expect(b.sockets()).toEqual([inst.socket('acme', 'http')]);
    const conn = net.connect(inst.socket('acme', 'http'));
    await new Promise<void>((resolve, reject) => conn.once('connect', resolve).once('error', reject));
    conn.destroy();
  });
});

describe('socketGroup', () => {
  it('a broker that may not give the sockets to socketGroup exits 1 and says how to fix it', async () => {
    const { spawnSync } = await import('node:child_process');
    const { cliReadableByAnyUid } = await import('../helpers/fixture.js');
    // The CLI as uid 1000 can read it, wherever the repository lives (a 0700 clone, too).
    const CLI = await cliReadableByAnyUid();
    // As uid 1000 (not in group 0), with everything it needs owned by it.
    const config = (await import('node:fs')).readFileSync(inst.configFile, 'utf8');
    await writeFile(inst.configFile, `socketGroup: 0\n${config}`);
    await chmod(inst.root, 0o755);
    spawnSync('chown', ['-R', '1000:1000', inst.root]);
    const r = spawnSync(
      'setpriv',
      [
        '--reuid',
        '1000',
        '--regid',
        '1000',
        '--clear-groups',
        process.execPath,
        CLI,
        'serve',
        '--config',
        inst.configFile,
      ],
      { encoding: 'utf8', timeout: 15_000 },
    );
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(
      /cannot give .* to group 0 \(socketGroup\): the broker's user must be root or a member/,
    );
  });
});
