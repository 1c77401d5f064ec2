// A broken `limits:` key stops `policy check` and `serve` with the file, line and column, like
// every other airlock.yaml mistake; `limits migrate` says what it needs.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { appendFile, readFile, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { runCli } from '../approvals/helpers.js';
import { makeInstallation, type Installation } from '../helpers/fixture.js';
import { LIMITS_PASSWORD, LIMITS_SECRET_YAML } from './limits-context.js';

let inst: Installation;
beforeEach(async () => {
  inst = await makeInstallation({
    secrets: { 'api-token': 'tok-0123456789abcdef' },
    extraSecretsYaml: LIMITS_SECRET_YAML,
    policies: { 'acme.yaml': 'team: acme\nservers: {}\n' },
  });
});
afterEach(() => inst.cleanup());

/** The line of airlock.yaml that `limits:` is appended on. */
async function appendLimits(yaml: string): Promise<number> {
  const lines = (await readFile(inst.configFile, 'utf8')).split('\n').length;
  await appendFile(inst.configFile, yaml);
  return lines;
}

describe('limits config', () => {
  it('policy check and serve report a postgres store without a connection at its position', async () => {
    const line = await appendLimits('limits: { store: postgres }\n');
    const expected = `airlock.yaml:${line}:9: limits: limits.connection is required when store is postgres: name the secret holding the postgres:// URL\n`;
    for (const args of [['policy', 'check'], ['serve']]) {
      const r = await runCli([...args, '--config', inst.configFile]);
      expect(r.stdout + r.stderr).toContain(expected);
      expect(r.code).toBe(1);
    }
    // serve stopped there: it opened no socket.
    await expect(stat(inst.socketDir)).rejects.toThrow();
  });

  it('policy check reports an unknown connection secret at its value', async () => {
    const line = await appendLimits('limits:\n  store: postgres\n  connection: nope\n');
    const r = await runCli(['policy', 'check', '--config', inst.configFile]);
    expect(r.stdout + r.stderr).toContain(
      `airlock.yaml:${line + 2}:15: limits.connection: unknown secret "nope"; known secrets: api-token, limits-db\n`,
    );
    expect(r.code).toBe(1);
  });

  it('limits migrate needs a postgres store, and says when it cannot reach it', async () => {
    const none = await runCli(['limits', 'migrate', '--config', inst.configFile]);
    expect(none.code).toBe(1);
    expect(none.stderr).toBe(
      `airlock limits migrate: ${inst.configFile} has no limits: { store: postgres, connection: <secret> }; nothing to migrate\n`,
    );
    // A port nobody listens on.
    const port = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    await writeFile(
      path.join(inst.root, 'secrets', 'limits-db'),
      `postgres://airlock_limits:${LIMITS_PASSWORD}@127.0.0.1:${port}/fleet\n`,
      { mode: 0o600 },
    );
    await appendLimits('limits: { store: postgres, connection: limits-db }\n');
    const down = await runCli(['limits', 'migrate', '--config', inst.configFile]);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(
      /^airlock limits migrate: fleet limit store unreachable \(.*ECONNREFUSED.*\)/,
    );
    expect(down.stderr + down.stdout).not.toContain(LIMITS_PASSWORD);
  });
});
