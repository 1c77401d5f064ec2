// Policy files that are not the operator's: a symlink to a root-only file, a file owned by
// another user, and a file whose "keys" are lines of some other file. None is read into a
// message, in `airlock policy check` nor in the reload log of `airlock serve`.
import { spawnSync } from 'node:child_process';
import { chown, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLI, makeInstallation, type Installation } from '../helpers/fixture.js';

/** Lines shaped like `key: value`, as in many credential and config files. */
const ROOT_ONLY_LINES = [
  'db_password_for_the_production_cluster_that_must_never_print_anywhere: hunter2hunter2',
  'aws_secret_access_key_of_the_backup_role_wJalrXUtnFEMI_K7MDENG_bPxRfiCY: x',
];

describe('policy files that are not the operator’s', () => {
  let inst: Installation;
  beforeEach(async () => {
    inst = await makeInstallation({ policies: { 'ok.yaml': 'team: ok\nservers: {}\n' } });
  });
  afterEach(() => inst.cleanup());

  const policyCheck = (...paths: string[]) =>
    spawnSync('node', [CLI, 'policy', 'check', '--config', inst.configFile, ...paths], { encoding: 'utf8' });

  it('refuses a symlink to a root-only file without printing any of it', async () => {
    const target = path.join(inst.root, 'root-only.conf');
    await writeFile(target, ROOT_ONLY_LINES.join('\n') + '\n', { mode: 0o600 });
    const link = path.join(inst.policiesDir, 'linked.yaml');
    await symlink(target, link);
    for (const r of [policyCheck(), policyCheck(link)]) {
      expect(r.status).toBe(1);
      expect(r.stdout + r.stderr).toContain(
        "linked.yaml:1:1: is a symlink; policy files must be regular files (owned by root or the broker's user), so it is not read",
      );
      expect(r.stdout + r.stderr).not.toMatch(/hunter2|db_password|aws_secret/);
    }
  });

  it('refuses a policy file owned by another user', async () => {
    const file = path.join(inst.policiesDir, 'agent.yaml');
    await writeFile(file, 'team: agent\nservers: {}\n');
    await chown(file, 1000, 1000);
    const r = policyCheck();
    expect(r.status).toBe(1);
    expect(r.stdout + r.stderr).toContain(
      `agent.yaml:1:1: owned by uid 1000; policy files must be owned by root or the broker's user (uid ${process.getuid!()}), so it is not read`,
    );
  });

  it('never echoes an unknown key longer than a name, in policy check or the reload log', async () => {
    const file = path.join(inst.policiesDir, 'ok.yaml');
    await writeFile(file, `team: ok\nservers: {}\n${ROOT_ONLY_LINES.join('\n')}\nshort_key: 1\n`);
    const r = policyCheck();
    expect(r.status).toBe(1);
    const out = r.stdout + r.stderr;
    expect(out).not.toMatch(/hunter2|db_password|aws_secret/);
    expect(out).toContain(
      `ok.yaml:3:1: unknown key (a key of ${ROOT_ONLY_LINES[0]!.indexOf(':')} characters, not shown)`,
    );
    // A name-length key is still named, so ordinary typos stay easy to fix.
    expect(out).toContain('ok.yaml:5:1: unknown key "short_key"');

    // The same file on a reload of a running broker: the log says why, without the key.
    await writeFile(file, 'team: ok\nservers: {}\n');
    const { Broker } = await import('../../src/broker.js');
    const { loadConfig } = await import('../../src/config/airlock-yaml.js');
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const broker = await Broker.start(await loadConfig(inst.configFile), { log });
    try {
      await writeFile(file, `team: ok\nservers: {}\n${ROOT_ONLY_LINES.join('\n')}\n`);
      await broker.reload();
      const text = lines.join('');
      expect(text).toMatch(/not shown/);
      expect(text).not.toMatch(/hunter2|db_password|aws_secret/);
    } finally {
      await broker.stop(1000);
    }
  });
});
