// `approvers: GROUP` in airlock.yaml: members of that group decide approvals as themselves
// (the control socket is 0660 to the group; each decision names the member's uid), and a user
// outside it cannot even list them.
import { appendFile, chmod, chown, mkdir, mkdtemp, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { makeTraversable, runAsAgent } from '../../src/demo/sandbox.js';
import {
  acmeHttpPolicy,
  cliReadableByAnyUid,
  connectSocketClient,
  makeInstallation,
  startEchoUpstream,
  type EchoUpstream,
  type Installation,
} from '../helpers/fixture.js';
import {
  auditRecords,
  callWithProgress,
  runCli,
  startServe,
  textOf,
  waitForPending,
  type ServeProcess,
} from './helpers.js';

const APPROVERS_GID = 4242;
const MEMBER_UID = 4243;
const OUTSIDER_UID = 4244;

let inst: Installation;
let upstream: EchoUpstream;
let serve: ServeProcess;
let client: Client;

beforeAll(async () => {
  upstream = await startEchoUpstream();
  inst = await makeInstallation({ secrets: { 'api-token': 'sk_live_approversGroupSecret012345678' } });
  await appendFile(inst.configFile, `approvers: ${APPROVERS_GID}\n`);
  await inst.writePolicy(
    'acme.yaml',
    acmeHttpPolicy(upstream.origin).replace(
      '      http_request: {}',
      '      http_request:\n        approve: required',
    ),
  );
  // The operator lets the group through stateDir (the broker refuses to start otherwise).
  await mkdir(inst.stateDir, { mode: 0o700 });
  await chown(inst.stateDir, 0, APPROVERS_GID);
  await chmod(inst.stateDir, 0o710);
  await makeTraversable(inst.root);
  serve = await startServe(inst, [inst.socket('acme', 'http')]);
  ({ client } = await connectSocketClient(inst.socket('acme', 'http')));
}, 30_000);

afterAll(async () => {
  await client?.close().catch(() => undefined);
  await serve?.stop();
  await upstream?.close();
  await inst?.cleanup();
});

async function cliAs(uid: number, groups: number[], args: string[]) {
  const home = await mkdtemp(path.join(inst.root, `home-${uid}-`));
  await chown(home, uid, uid);
  return runAsAgent({
    command: process.execPath,
    args: [await cliReadableByAnyUid(), ...args, '--config', inst.configFile],
    home,
    sandbox: true,
    identity: { uid, gid: uid, groups },
    timeoutMs: 20_000,
  });
}

it(
  'a member of the approvers group approves as itself; an outsider gets nothing',
  { timeout: 60_000 },
  async () => {
    const controlDir = path.join(inst.stateDir, 'approvals', 'control');
    const { result } = callWithProgress(client, 'http_request', {
      method: 'GET',
      url: `${upstream.origin}/v1/a`,
    });
    const pending = await waitForPending(inst, 'http_request');

    const socket = (await import('node:fs/promises'))
      .readdir(controlDir)
      .then((n) => path.join(controlDir, n[0]!));
    const st = await stat(await socket);
    expect([st.mode & 0o777, st.gid]).toEqual([0o660, APPROVERS_GID]);
    expect((await stat(path.join(inst.stateDir, 'approvals', 'proofs'))).mode & 0o7777).toBe(0o1730);

    const outsider = await cliAs(OUTSIDER_UID, [], ['approvals', 'list']);
    expect(outsider.code).toBe(1);
    expect(outsider.stderr).toContain('permission denied');
    const outsiderApprove = await cliAs(OUTSIDER_UID, [], ['approve', pending.id]);
    expect(outsiderApprove.code).toBe(1);

    const listed = await cliAs(MEMBER_UID, [APPROVERS_GID], ['approvals', 'list', '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    expect((JSON.parse(listed.stdout) as { id: string }[]).map((a) => a.id)).toEqual([pending.id]);
    const approved = await cliAs(MEMBER_UID, [APPROVERS_GID], ['approve', pending.id]);
    expect(approved.stderr).toBe('');
    expect(approved.stdout).toMatch(new RegExp(`^approved ${pending.id} as \\S+ \\(uid ${MEMBER_UID}\\)`));

    const r = await result;
    expect(r.isError, textOf(r)).toBeFalsy();
    const decided = (await auditRecords(inst)).find(
      (x) => x.phase === 'approval' && (x.approval as { state: string }).state === 'approved',
    );
    expect(decided?.approval).toMatchObject({ id: pending.id, decidedBy: { uid: MEMBER_UID, via: 'cli' } });
  },
);

it('a broker with approvers refuses to start when the group cannot pass through stateDir', async () => {
  const other = await makeInstallation({ secrets: { 'api-token': 'x' } });
  try {
    await appendFile(other.configFile, `approvers: ${APPROVERS_GID}\n`);
    await other.writePolicy('acme.yaml', acmeHttpPolicy('https://api.example'));
    const r = await runCli(['serve', '--config', other.configFile]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`approvers is set, but group ${APPROVERS_GID} cannot pass through stateDir`);
  } finally {
    await other.cleanup();
  }
});
