// The database password never leaves the broker: not in a result, an error, a log line or an
// audit record — for a working connection, a wrong password (authentication fails) and a
// malformed URL. `airlock serve` runs as a real process so its log output is what is searched.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startPostgresCluster, type PostgresCluster } from '../../src/demo/postgres-cluster.js';
import { CLI, connectSocketClient, makeInstallation, type Installation } from '../helpers/fixture.js';
import { AGENT_PASSWORD, AGENT_ROLE } from './context.js';

const WRONG_PASSWORD = 'wrong-Pw-Hq5tN8cX2vB6';
const MALFORMED_PASSWORD = 'malformed-Pw-Ke3rT7yU1';
const SECRETS = [AGENT_PASSWORD, WRONG_PASSWORD, MALFORMED_PASSWORD];

let cluster: PostgresCluster;
let inst: Installation;
let serve: ChildProcess;
let stderr = '';

beforeAll(async () => {
  cluster = await startPostgresCluster();
  await cluster.admin(`CREATE ROLE ${AGENT_ROLE} LOGIN PASSWORD '${AGENT_PASSWORD}'`);
  const url = (password: string) => cluster.url({ user: AGENT_ROLE, password, database: 'postgres' });
  inst = await makeInstallation({
    secrets: {
      'pg-good': url(AGENT_PASSWORD),
      'pg-wrong': url(WRONG_PASSWORD),
      // Not a URL a parser accepts (port is not a number).
      'pg-malformed': `postgres://${AGENT_ROLE}:${MALFORMED_PASSWORD}@127.0.0.1:notaport/postgres`,
    },
    policies: {
      'acme.yaml': `team: acme
servers:
  postgres:
    databases:
      good: { connection: pg-good }
      wrong: { connection: pg-wrong }
      malformed: { connection: pg-malformed }
    tools:
      query: {}
      list_tables: {}
`,
    },
  });
  serve = spawn(process.execPath, [CLI, 'serve', '--config', inst.configFile], {
    env: { ...process.env, AIRLOCK_LOG_LEVEL: 'debug' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  serve.stdout!.on('data', (d: Buffer) => (stderr += d.toString()));
  serve.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const deadline = Date.now() + 15_000;
  while (!(await stat(inst.socket('acme', 'postgres')).catch(() => undefined))) {
    if (Date.now() > deadline || serve.exitCode !== null) throw new Error(`serve did not start:\n${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
});

afterAll(async () => {
  if (serve && serve.exitCode === null) {
    const exited = new Promise((r) => serve.once('exit', r));
    serve.kill('SIGTERM');
    await exited;
  }
  await inst?.cleanup();
  await cluster?.close();
});

it('no password in any result, error, log line or audit record', async () => {
  const { client } = await connectSocketClient(inst.socket('acme', 'postgres'));
  const answers: string[] = [];
  const call = async (database: string, sql: string) => {
    const r = await client.callTool({ name: 'query', arguments: { database, sql } });
    const text = JSON.stringify(r);
    answers.push(text);
    return { r, text };
  };
  try {
    const good = await call('good', 'SELECT current_user AS who');
    expect(good.r.isError).toBeFalsy();
    expect(good.text).toContain(AGENT_ROLE);
    // An error from the server on a working connection.
    const failing = await call('good', 'SELECT * FROM no_such_table');
    expect(failing.text).toContain('42P01');
    // Authentication fails: Postgres's SQLSTATE, the role name, never the password tried.
    for (let i = 0; i < 2; i++) {
      const wrong = await call('wrong', 'SELECT 1');
      expect(wrong.r.isError).toBe(true);
      expect(wrong.text).toContain('28P01');
    }
    const malformed = await call('malformed', 'SELECT 1');
    expect(malformed.r.isError).toBe(true);
    expect(malformed.text).toContain('the value of secret \\"pg-malformed\\" is not a valid postgres:// URL');
    const listed = await client.callTool({ name: 'list_tables', arguments: { database: 'wrong' } });
    answers.push(JSON.stringify(listed));
  } finally {
    await client.close();
  }
  const audit = await readFile(inst.auditFile, 'utf8');
  expect(audit).toContain('28P01');
  for (const secret of SECRETS) {
    for (const text of answers) expect(text).not.toContain(secret);
    expect(audit).not.toContain(secret);
    expect(stderr).not.toContain(secret);
    // Nor its URL-encoded form (the URL carries it encoded).
    expect(audit).not.toContain(encodeURIComponent(secret));
  }
});
