// `airlock doctor` connects as each postgres database's role: a least-privilege role (GRANT
// SELECT only) passes; the over-privileged one fails with exit 1 and the statements to revoke.
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startPostgresCluster, type PostgresCluster } from '../../src/demo/postgres-cluster.js';
import { CLI, makeInstallation, type Installation } from '../helpers/fixture.js';
import { AGENT_PASSWORD, AGENT_ROLE, SHOP_SQL } from './context.js';

const READER_PASSWORD = 'reader-Pw-Lp4sD9fG2hJ';
let cluster: PostgresCluster;
const installs: Installation[] = [];

beforeAll(async () => {
  cluster = await startPostgresCluster();
  await cluster.admin('CREATE DATABASE shop');
  await cluster.admin(SHOP_SQL, 'shop');
  // The README's least-privilege recipe.
  await cluster.admin(
    `CREATE ROLE airlock_reader LOGIN PASSWORD '${READER_PASSWORD}';
     REVOKE CREATE ON SCHEMA public FROM PUBLIC;
     GRANT CONNECT ON DATABASE shop TO airlock_reader;
     GRANT USAGE ON SCHEMA public TO airlock_reader;
     GRANT SELECT ON ALL TABLES IN SCHEMA public TO airlock_reader;`,
    'shop',
  );
});
afterAll(async () => {
  for (const i of installs) await i.cleanup();
  await cluster?.close();
});

async function doctor(user: string, password: string, access = 'read-only') {
  const inst = await makeInstallation({
    secrets: { 'pg-shop': cluster.url({ user, password, database: 'shop' }) },
    policies: {
      'acme.yaml': `team: acme
servers:
  postgres:
    databases:
      shop: { connection: pg-shop, access: ${access} }
    tools:
      query: {}
`,
    },
  });
  installs.push(inst);
  const r = spawnSync(process.execPath, [CLI, 'doctor', '--config', inst.configFile], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

it('a SELECT-only role passes the read-only check', async () => {
  const r = await doctor('airlock_reader', READER_PASSWORD);
  expect(r.out).toMatch(/\[ ok \] postgres acme\/shop \(read-only\) — role airlock_reader cannot write/);
  expect(r.out).not.toContain(READER_PASSWORD);
});

it('an over-privileged role fails the check with exit 1, naming each privilege to revoke', async () => {
  const r = await doctor(AGENT_ROLE, AGENT_PASSWORD);
  expect(r.status).toBe(1);
  const line = r.out.split('\n').find((l) => l.includes('postgres acme/shop'))!;
  expect(line).toMatch(/^\[FAIL\] postgres acme\/shop \(read-only\) — role agent_rw: /);
  for (const fix of [
    'REVOKE pg_read_server_files FROM agent_rw',
    'REVOKE pg_write_server_files FROM agent_rw',
    'REVOKE pg_execute_server_program FROM agent_rw',
    'REVOKE pg_signal_backend FROM agent_rw',
    'owns public.customers',
    'REVOKE CREATE ON SCHEMA public FROM agent_rw',
    'REVOKE CREATE ON DATABASE shop FROM agent_rw',
  ])
    expect(line).toContain(fix);
  expect(r.out).not.toContain(AGENT_PASSWORD);
});

it('a role whose password is wrong is reported without the password', async () => {
  const r = await doctor(AGENT_ROLE, 'wrong-Pw-Doctor-7731');
  expect(r.status).toBe(1);
  expect(r.out).toMatch(/\[FAIL\] postgres acme\/shop \(read-only\) — cannot check the role: 28P01: /);
  expect(r.out).not.toContain('wrong-Pw-Doctor-7731');
});
