// `airlock secrets set/list/delete` as the operator runs them (separate processes, value on
// stdin), and a keychain secret used by `airlock serve` for a real call: the real keychain
// (gnome-keyring on a private D-Bus session), no fake.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import {
  CLI,
  connectSocketClient,
  makeInstallation,
  startEchoUpstream,
  type Installation,
} from '../helpers/fixture.js';
import { startKeyringSession, type KeyringSession } from './keyring-session.js';

const VALUE = 'kc_cliSecretValue_' + 'Z'.repeat(12);

describe('airlock secrets on the command line, and a keychain secret in use', () => {
  let session: KeyringSession;
  let inst: Installation;
  let upstream: Awaited<ReturnType<typeof startEchoUpstream>>;
  let serve: ChildProcess | undefined;
  const env = () => ({ PATH: process.env.PATH, DBUS_SESSION_BUS_ADDRESS: session.busAddress });
  const airlock = (args: string[], input?: string) =>
    spawnSync(process.execPath, [CLI, ...args], { env: env(), input, encoding: 'utf8', timeout: 20_000 });

  beforeAll(async () => {
    session = await startKeyringSession({ unlock: true });
    upstream = await startEchoUpstream();
    inst = await makeInstallation({
      extraSecretsYaml: '  vault-key: { keychain: airlock-cli-test }',
      policies: {
        'acme.yaml': `team: acme
servers:
  http:
    hosts:
      - origin: ${upstream.origin}
        inject: { header: X-Key, value: "\${secret:vault-key}" }
        allowPrivateAddress: true
    tools:
      http_request: {}
`,
      },
    });
  });

  afterAll(async () => {
    if (serve && serve.exitCode === null) serve.kill('SIGKILL');
    airlock(['secrets', 'delete', 'airlock-cli-test']);
    await upstream?.close();
    await inst?.cleanup();
    await session?.stop();
  });

  it('set reads stdin, list shows names only, the broker injects the value, delete removes it', async () => {
    const set = airlock(['secrets', 'set', 'airlock-cli-test'], `${VALUE}\n`);
    expect(set.status, set.stderr).toBe(0);
    expect(set.stdout + set.stderr).not.toContain(VALUE);
    const list = airlock(['secrets', 'list']);
    expect(list.status, list.stderr).toBe(0);
    expect(list.stdout).toContain('airlock-cli-test');
    expect(list.stdout).not.toContain(VALUE);

    serve = spawn(process.execPath, [CLI, 'serve', '--config', inst.configFile], {
      env: env(),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    serve.stderr!.on('data', (d) => (log += d));
    const socketPath = inst.socket('acme', 'http');
    for (let i = 0; i < 200 && !existsSync(socketPath); i++) await new Promise((r) => setTimeout(r, 25));
    const { client, socket } = await connectSocketClient(socketPath);
    const r = (await client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${upstream.origin}/x` },
    })) as CallToolResult;
    expect(r.isError, JSON.stringify(r.content)).toBeFalsy();
    expect(upstream.requests.at(-1)!.headers['x-key']).toBe(VALUE);
    expect(JSON.stringify(r)).not.toContain(VALUE);
    socket.destroy();
    serve.kill('SIGTERM');
    await new Promise((resolve) => serve!.once('exit', resolve));
    expect(log).not.toContain(VALUE);

    const del = airlock(['secrets', 'delete', 'airlock-cli-test']);
    expect(del.status, del.stderr).toBe(0);
    expect(airlock(['secrets', 'list']).stdout).not.toContain('airlock-cli-test');
    const doctor = airlock(['doctor', '--config', inst.configFile]);
    expect(doctor.stdout).toMatch(/FAIL\] secret "vault-key" — .*not found in the OS keychain/);
    expect(doctor.stdout).not.toContain(VALUE);
  });
});
