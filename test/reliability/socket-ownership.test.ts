// Who can reach a team's sockets: the folders on the way must belong to root or the broker, and
// each team's sockets can carry their own group, so agents of one team cannot open another's.
import { spawnSync } from 'node:child_process';
import { chmod, chown, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Broker } from '../../src/broker.js';
import { loadConfig } from '../../src/config/airlock-yaml.js';
import { silentLogger } from '../../src/log.js';
import { checkPolicyFiles } from '../../src/policy/team-policy.js';
import { SERVERS } from '../../src/servers.js';
import { CLI, makeInstallation, type Installation } from '../helpers/fixture.js';
import { socketOnlyPolicy } from './policies.js';

let inst: Installation;
let broker: Broker | undefined;

beforeEach(async () => {
  inst = await makeInstallation({ policies: { 'a.yaml': socketOnlyPolicy('a') } });
});
afterEach(async () => {
  await broker?.stop(1000);
  broker = undefined;
  await inst.cleanup();
});

const start = async () =>
  (broker = await Broker.start(await loadConfig(inst.configFile), { log: silentLogger() }));

async function setConfig(lines: string): Promise<void> {
  const config = await readFile(inst.configFile, 'utf8');
  await writeFile(inst.configFile, `${lines}\n${config}`);
}

/** Tries to connect to `socket` as uid 2001 in the given supplementary groups. */
function connectsAs(groups: number[], socket: string): boolean {
  const r = spawnSync(
    'setpriv',
    [
      '--reuid',
      '2001',
      '--regid',
      '2001',
      groups.length ? `--groups=${groups.join(',')}` : '--clear-groups',
      process.execPath,
      '-e',
      `require('net').connect(${JSON.stringify(socket)}).on('connect', () => process.exit(0)).on('error', (e) => { console.error(e.code); process.exit(3); })`,
    ],
    { encoding: 'utf8', timeout: 10_000 },
  );
  return r.status === 0;
}

describe('socketDir ownership', () => {
  it('refuses a socketDir owned by another uid (the agent), and leaves it alone', async () => {
    await mkdir(inst.socketDir, { mode: 0o755 });
    await chown(inst.socketDir, 1000, 1000);
    await expect(start()).rejects.toThrow(
      new RegExp(`socketDir ${inst.socketDir} is owned by uid 1000, not by root or this broker`),
    );
    expect((await stat(inst.socketDir)).uid).toBe(1000);
    // airlock doctor applies the same rule, so it does not pass what serve refuses.
    const doctor = spawnSync('node', [CLI, 'doctor', '--config', inst.configFile], { encoding: 'utf8' });
    expect(doctor.status).toBe(1);
    expect(doctor.stdout).toMatch(/FAIL\] socket folder .* is owned by uid 1000, not by root or this broker/);
  });

  it('refuses a socketDir that links to a folder the agent owns', async () => {
    const agentDir = path.join(inst.root, 'agent-owned');
    await mkdir(agentDir, { mode: 0o755 });
    await chown(agentDir, 1000, 1000);
    await symlink(agentDir, inst.socketDir);
    await expect(start()).rejects.toThrow(/is owned by uid 1000, not by root or this broker/);
  });

  it('refuses a socketDir below a folder the agent owns', async () => {
    const agentDir = path.join(inst.root, 'agent-home');
    await mkdir(path.join(agentDir, 'run'), { recursive: true, mode: 0o755 });
    await chown(agentDir, 1000, 1000);
    const config = await readFile(inst.configFile, 'utf8');
    await writeFile(
      inst.configFile,
      config.replace(`socketDir: ${inst.socketDir}`, `socketDir: ${agentDir}/run`),
    );
    await expect(start()).rejects.toThrow(
      new RegExp(`${agentDir} \\(on the way to socketDir ${agentDir}/run\\) is owned by uid 1000`),
    );
  });

  it('refuses a group-writable folder on the way (without the sticky bit)', async () => {
    await mkdir(inst.socketDir, { mode: 0o755 });
    await chown(inst.socketDir, 0, 1000);
    await chmod(inst.socketDir, 0o775);
    await expect(start()).rejects.toThrow(/is writable by group 1000; chmod g-w it/);
  });
});

describe('per-team socket groups', () => {
  it("gives each team's sockets its own group: the policy's, else airlock.yaml's socketGroups, else socketGroup", async () => {
    await chmod(inst.root, 0o755);
    await setConfig('socketGroup: 1000\nsocketGroups: { b: 1002 }');
    await inst.writePolicy('a.yaml', socketOnlyPolicy('a', 'socketGroup: 1001\n'));
    await inst.writePolicy('b.yaml', socketOnlyPolicy('b'));
    await inst.writePolicy('c.yaml', socketOnlyPolicy('c'));
    await start();
    const gids = await Promise.all(
      ['a', 'b', 'c'].map(async (t) => [
        (await stat(path.join(inst.socketDir, t))).gid,
        (await stat(inst.socket(t, 'http'))).gid,
      ]),
    );
    expect(gids).toEqual([
      [1001, 1001],
      [1002, 1002],
      [1000, 1000],
    ]);
    // An agent in team a's group reaches a's socket and not b's; one in no group reaches neither.
    expect(connectsAs([1001], inst.socket('a', 'http'))).toBe(true);
    expect(connectsAs([1001], inst.socket('b', 'http'))).toBe(false);
    expect(connectsAs([1002], inst.socket('b', 'http'))).toBe(true);
    expect(connectsAs([], inst.socket('a', 'http'))).toBe(false);
  });

  it("follows a policy change of the team's group without reopening the socket", async () => {
    await start();
    await inst.writePolicy('a.yaml', socketOnlyPolicy('a', 'socketGroup: 1005\n'));
    await broker!.reload();
    expect((await stat(inst.socket('a', 'http'))).gid).toBe(1005);
    expect((await stat(path.join(inst.socketDir, 'a'))).gid).toBe(1005);
  });

  it('reports an unknown group name in a policy or airlock.yaml with its position', async () => {
    await inst.writePolicy('a.yaml', socketOnlyPolicy('a', 'socketGroup: no-such-group-here\n'));
    const { issues } = await checkPolicyFiles(await loadConfig(inst.configFile), SERVERS);
    expect(issues.map((i) => `${path.basename(i.file)}:${i.line}:${i.col}: ${i.message}`)).toEqual([
      'a.yaml:2:14: socketGroup: unknown group "no-such-group-here" (not in /etc/group)',
    ]);
    await setConfig('socketGroups: { a: also-no-such-group }');
    await expect(loadConfig(inst.configFile)).rejects.toThrow(
      /1:20: socketGroups\.a: unknown group "also-no-such-group"/,
    );
  });
});

describe('a socket appears only once it is served', () => {
  /** A socket file left by a process killed while listening (nothing removed it). */
  const connects = (socket: string) =>
    new Promise<boolean>((resolve) => {
      const c = net.connect(socket);
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });

  function leaveStaleSocket(file: string): void {
    const r = spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(file)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    expect(r.signal).toBe('SIGKILL');
  }

  it('is bound under another name and linked once it listens with its mode; leftovers of a killed broker are cleared', async () => {
    const teamDir = path.dirname(inst.socket('a', 'http'));
    await mkdir(teamDir, { recursive: true, mode: 0o750 });
    leaveStaleSocket(path.join(teamDir, '.http.new')); // killed between its listen and its link
    leaveStaleSocket(inst.socket('a', 'http')); // killed while serving
    await start();
    expect((await readdir(teamDir)).sort()).toEqual(['http.sock']);
    expect((await stat(inst.socket('a', 'http'))).mode & 0o777).toBe(0o660);
    expect(await connects(inst.socket('a', 'http'))).toBe(true);
  });

  it('a second broker on the same sockets is refused and leaves the first one serving', async () => {
    await start();
    await expect(
      Broker.start(await loadConfig(inst.configFile), { log: silentLogger(), watch: false }),
    ).rejects.toThrow(/is served by another running broker/);
    expect((await readdir(path.dirname(inst.socket('a', 'http')))).sort()).toEqual(['http.sock']);
    expect(await connects(inst.socket('a', 'http'))).toBe(true);
  });

  it('stop removes the socket file before calls drain', async () => {
    await start();
    const stopping = broker!.stop(1000);
    broker = undefined;
    await stopping;
    expect(await readdir(path.dirname(inst.socket('a', 'http')))).toEqual([]);
  });
});
