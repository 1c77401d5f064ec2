// `airlock stdio` (Claude Code on the host, no sandbox) holds calls for approval too: its own
// control socket, found by `airlock approvals list` next to the serve process's.
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  acmeHttpPolicy,
  CLI,
  makeInstallation,
  startEchoUpstream,
  type EchoUpstream,
  type Installation,
} from '../helpers/fixture.js';
import {
  auditRecords,
  callWithProgress,
  listPending,
  runCli,
  textOf,
  waitFor,
  waitForPending,
} from './helpers.js';

let inst: Installation;
let upstream: EchoUpstream;

beforeAll(async () => {
  upstream = await startEchoUpstream();
  inst = await makeInstallation({ secrets: { 'api-token': 'sk_live_stdioApprovalSecret0123456789' } });
  await inst.writePolicy(
    'acme.yaml',
    acmeHttpPolicy(upstream.origin).replace(
      '      http_request: {}',
      '      http_request:\n        approve: required',
    ),
  );
});

afterAll(async () => {
  await upstream?.close();
  await inst?.cleanup();
});

/** An MCP client on `airlock stdio http --team TEAM`, as Claude Code on the host starts it. */
async function connectStdio(team: string): Promise<{ client: Client; transport: StdioClientTransport }> {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [CLI, 'stdio', 'http', '--team', team, '--config', inst.configFile],
    env: { ...(process.env as Record<string, string>), AIRLOCK_LOG_LEVEL: 'warn' },
    stderr: 'ignore',
  });
  const client = new Client({ name: 'stdio-test', version: '0' });
  await client.connect(transport);
  return { client, transport };
}

it('a call over airlock stdio waits, is listed and approved from another process, then runs', async () => {
  const { client } = await connectStdio('acme');
  try {
    const { result } = callWithProgress(client, 'http_request', {
      method: 'GET',
      url: `${upstream.origin}/v1/a`,
    });
    const pending = await waitForPending(inst, 'http_request');
    expect(await listPending(inst, 'other-team')).toEqual([]);
    const table = await runCli(['approvals', 'list', '--team', 'acme', '--config', inst.configFile]);
    expect(table.stdout).toContain(
      `${pending.id}  acme  http.http_request  requested ${pending.requestedAt}`,
    );
    expect(table.stdout).toContain(`    digest ${pending.digest}`);
    expect(upstream.requests).toHaveLength(0);
    const misused = await runCli(['approve', pending.id, '--reason', 'x', '--config', inst.configFile]);
    expect(misused.code).toBe(1);
    expect(misused.stderr).toContain('airlock approve: unknown option --reason');
    const once = await runCli(['approve', pending.id, '--for', '5m', '--config', inst.configFile]);
    expect(once.code).toBe(1);
    expect(once.stderr).toContain('allows no grants (grant: once)');
    expect((await runCli(['approve', pending.id, '--config', inst.configFile])).code).toBe(0);
    const r = await result;
    expect(r.isError, textOf(r)).toBeFalsy();
    expect(upstream.requests).toHaveLength(1);
    const decided = (await auditRecords(inst)).find(
      (x) => x.phase === 'approval' && (x.approval as { state: string }).state === 'approved',
    );
    expect(decided?.approval).toMatchObject({
      id: pending.id,
      decidedBy: { uid: 0, user: 'root', via: 'cli' },
    });
  } finally {
    await client.close();
  }
});

it('with no broker running, the commands say so and exit 1', async () => {
  const listed = await runCli(['approvals', 'list', '--config', inst.configFile]);
  expect(listed.code).toBe(1);
  expect(listed.stderr).toMatch(/^airlock: no running broker found in .*approvals\/control\n$/);
  const usage = await runCli(['approvals', '--config', inst.configFile]);
  expect(usage.code).toBe(1);
  expect(usage.stderr).toContain('airlock approvals list [--team TEAM] [--json]');
});

it('a stdio session whose server has no approve rule opens no control socket, until a reload adds one', async () => {
  const betaPolicy = acmeHttpPolicy(upstream.origin).replace('team: acme', 'team: beta');
  await inst.writePolicy('beta.yaml', betaPolicy);
  const { client, transport } = await connectStdio('beta');
  const controlDir = path.join(inst.stateDir, 'approvals', 'control');
  const sockets = async () =>
    (await readdir(controlDir).catch(() => [] as string[])).filter((f) => f.endsWith('.sock'));
  try {
    const r = await client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${upstream.origin}/v1/no-approval` },
    });
    expect(r.isError, textOf(r as never)).toBeFalsy();
    expect(await sockets()).toEqual([]);

    await inst.writePolicy(
      'beta.yaml',
      betaPolicy.replace('      http_request: {}', '      http_request:\n        approve: required'),
    );
    process.kill(transport.pid!, 'SIGHUP');
    await waitFor('the control socket after the reload', async () =>
      (await sockets()).length === 1 ? true : undefined,
    );
    expect(await sockets()).toEqual([`${transport.pid}.sock`]);
    const { result } = callWithProgress(client, 'http_request', {
      method: 'GET',
      url: `${upstream.origin}/v1/after-reload`,
    });
    const pending = await waitForPending(inst, 'http_request');
    expect((await runCli(['approve', pending.id, '--config', inst.configFile])).code).toBe(0);
    const approved = await result;
    expect(approved.isError, textOf(approved)).toBeFalsy();
  } finally {
    await client.close();
  }
});
