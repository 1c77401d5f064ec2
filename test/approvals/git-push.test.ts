// Approvals end to end on the git server: a real `airlock serve`, a real smart-HTTP git remote,
// the agent's MCP session on its socket, and the operator's `airlock approve|deny` processes.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canonicalJson, verifyAuditFile } from '../../src/audit/log.js';
import {
  createBareRepo,
  refOf,
  startSmartHttpServer,
  type SmartHttpServer,
} from '../git/smart-http-server.js';
import { connectSocketClient, makeInstallation, type Installation } from '../helpers/fixture.js';
import {
  auditRecords,
  callWithProgress,
  listPending,
  runCli,
  startServe,
  textOf,
  waitForPending,
  type ServeProcess,
} from './helpers.js';

const PASSWORD = 'ghp_approvalsTestToken0123456789abcdef';

let root: string;
let git: SmartHttpServer;
let inst: Installation;
let serve: ServeProcess;
let client: Client;
let workTree: string;

const receivePackRequests = () => git.requests.filter((r) => r.url.includes('git-receive-pack')).length;

async function call(name: string, args: Record<string, unknown>) {
  const r = await client.callTool({ name, arguments: args });
  return r as { isError?: boolean; content: { text: string }[]; structuredContent?: Record<string, unknown> };
}

async function commitFile(file: string) {
  await fs.writeFile(path.join(workTree, file), `${file} ${Date.now()}\n`);
  expect((await call('git_add', { workspace: 'api', paths: [file] })).isError).toBeFalsy();
  expect((await call('git_commit', { workspace: 'api', message: `add ${file}` })).isError).toBeFalsy();
}

beforeAll(async () => {
  inst = await makeInstallation({ secrets: { 'git-token': PASSWORD } });
  root = inst.root;
  await fs.mkdir(path.join(root, 'repos'));
  await createBareRepo(path.join(root, 'repos'), 'app.git', { files: { 'README.md': '# app\n' } });
  git = await startSmartHttpServer({
    root: path.join(root, 'repos'),
    username: 'x-access-token',
    password: PASSWORD,
  });
  // Made for the agent as an operator would (install -d -o <agent> -m 2775): a broker running
  // as root refuses to create a work tree that would be root's.
  workTree = path.join(root, 'wt');
  await fs.mkdir(workTree, { mode: 0o2775 });
  if (process.getuid?.() === 0) await fs.chown(workTree, 1000, 1000);
  await inst.writePolicy(
    'acme.yaml',
    `team: acme
servers:
  git:
    workspaces:
      api:
        path: ${workTree}
        remote: ${git.repoUrl('app.git')}
        credential: git-token
        branch: main
    tools:
      git_status: {}
      git_create_branch: {}
      git_checkout: {}
      git_add: {}
      git_commit: {}
      git_push:
        branches: ["agent/*", "release/*"]
        approve: { when: { branches: ["release/*"] }, grant: { for: 30m } }
`,
  );
  serve = await startServe(inst, [inst.socket('acme', 'git')]);
  ({ client } = await connectSocketClient(inst.socket('acme', 'git')));
  expect((await call('git_status', { workspace: 'api' })).isError).toBeFalsy();
  expect((await call('git_create_branch', { workspace: 'api', name: 'release/1' })).isError).toBeFalsy();
  expect((await call('git_checkout', { workspace: 'api', branch: 'release/1' })).isError).toBeFalsy();
  await commitFile('one.txt');
}, 60_000);

afterAll(async () => {
  await client?.close().catch(() => undefined);
  await serve?.stop();
  await git?.close();
  await inst?.cleanup();
});

describe('git_push to release/* waits for a human', () => {
  const args = { workspace: 'api', branch: 'release/1' };
  const seen: string[] = [];

  it('waits (with progress) until approved, then pushes exactly once, with the held arguments', async () => {
    const before = receivePackRequests();
    const { result, progress } = callWithProgress(client, 'git_push', args);
    const pending = await waitForPending(inst, 'git_push', seen);
    seen.push(pending.id);
    expect(pending).toMatchObject({ team: 'acme', server: 'git', tool: 'git_push', args });
    const digest = createHash('sha256')
      .update(canonicalJson({ team: 'acme', server: 'git', tool: 'git_push', args }))
      .digest('hex');
    expect(pending.digest).toBe(digest);
    // Nothing reached the remote while the call waited.
    expect(receivePackRequests()).toBe(before);
    expect(refOf(path.join(root, 'repos', 'app.git'), 'refs/heads/release/1')).toBeUndefined();

    const approved = await runCli(['approve', pending.id, '--config', inst.configFile]);
    expect(approved.stderr).toBe('');
    expect(approved.stdout).toMatch(new RegExp(`^approved ${pending.id} as root \\(uid 0\\)`));
    expect(approved.code).toBe(0);

    const r = await result;
    expect(r.isError, textOf(r)).toBeFalsy();
    expect(r.structuredContent).toMatchObject({ pushed: true, ref: 'refs/heads/release/1' });
    expect(progress.count).toBeGreaterThan(0);
    expect(progress.messages[0]).toContain(`airlock approve ${pending.id}`);
    expect(receivePackRequests()).toBeGreaterThan(before);
    const remote = refOf(path.join(root, 'repos', 'app.git'), 'refs/heads/release/1');
    expect(remote).toMatch(/^[0-9a-f]{40}$/);
    expect(remote).toBe(r.structuredContent!.sha);

    // request → approval pending → approval approved (by whom) → result, one call id.
    const records = (await auditRecords(inst)).filter((x) => x.tool === 'git_push');
    expect(
      records.map((x) => [
        x.phase,
        (x.approval as { state?: string } | undefined)?.state ?? x.outcome ?? null,
      ]),
    ).toEqual([
      ['request', null],
      ['approval', 'pending'],
      ['approval', 'approved'],
      ['result', 'ok'],
    ]);
    expect(new Set(records.map((x) => x.call)).size).toBe(1);
    expect(records[1]!.approval).toMatchObject({ id: pending.id, digest, state: 'pending' });
    expect(records[2]!.approval).toMatchObject({
      id: pending.id,
      digest,
      state: 'approved',
      decidedBy: { uid: 0, user: 'root', via: 'cli' },
    });
    expect(records[2]!.args).toEqual(args);
    expect(await verifyAuditFile(inst.auditFile)).toMatchObject({ ok: true });
    const tail = await runCli(['audit', 'tail', '-n', '4', '--config', inst.configFile]);
    expect(tail.stdout).toMatch(new RegExp(`approval +allow .*approval ${pending.id} pending`));
    expect(tail.stdout).toMatch(new RegExp(`approval +allow .*approval ${pending.id} approved by root`));
  });

  it('a second identical push needs a new approval; denied, it never reaches the git server', async () => {
    const before = receivePackRequests();
    const requestsBefore = git.requests.length;
    const { result } = callWithProgress(client, 'git_push', args);
    const pending = await waitForPending(inst, 'git_push', seen);
    seen.push(pending.id);
    const denied = await runCli([
      'deny',
      pending.id,
      '--reason',
      'release freeze',
      '--config',
      inst.configFile,
    ]);
    expect(denied.stdout).toContain(`denied ${pending.id} as root`);
    expect(denied.code).toBe(0);
    const r = await result;
    expect(r.isError).toBe(true);
    expect(textOf(r)).toBe(
      `denied: git.tools.git_push.approve: approval ${pending.id} was denied by root (uid 0, cli): release freeze`,
    );
    expect(receivePackRequests()).toBe(before);
    expect(git.requests.length).toBe(requestsBefore);
    const last = (await auditRecords(inst)).slice(-2);
    expect(last[0]).toMatchObject({ phase: 'approval', decision: 'deny', reason: 'release freeze' });
    expect(last[0]!.approval).toMatchObject({ id: pending.id, state: 'denied', decidedBy: { user: 'root' } });
    expect(last[1]).toMatchObject({
      phase: 'result',
      decision: 'deny',
      outcome: 'denied',
      rule: 'git.tools.git_push.approve',
    });
  });

  it('deciding twice, an unknown id, or a grant longer than the policy allows changes nothing', async () => {
    const again = await runCli(['approve', seen[0]!, '--config', inst.configFile]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`no pending approval "${seen[0]}"`);

    const { result } = callWithProgress(client, 'git_push', args);
    const pending = await waitForPending(inst, 'git_push', seen);
    seen.push(pending.id);
    const tooLong = await runCli(['approve', pending.id, '--for', '2h', '--config', inst.configFile]);
    expect(tooLong.code).toBe(1);
    expect(tooLong.stderr).toContain('the policy allows grants of at most 30m for git_push');
    const badDuration = await runCli(['approve', pending.id, '--for', 'soon', '--config', inst.configFile]);
    expect(badDuration.code).toBe(1);
    expect(badDuration.stderr).toContain('bad duration "soon"');
    expect((await listPending(inst)).map((a) => a.id)).toEqual([pending.id]);

    // Approved with a grant: identical pushes for the next 10 minutes pass without waiting,
    // a push with other arguments (another digest) still waits.
    const granted = await runCli(['approve', pending.id, '--for', '10m', '--config', inst.configFile]);
    expect(granted.stdout).toContain('identical calls are approved for 10m');
    expect((await result).isError).toBeFalsy();

    const covered = await call('git_push', args);
    expect(covered.isError, covered.content[0]!.text).toBeFalsy();
    const grantRecord = (await auditRecords(inst)).filter((x) => x.phase === 'approval').at(-1)!;
    expect(grantRecord.approval).toMatchObject({ state: 'approved', grant: { approval: pending.id } });

    const other = callWithProgress(client, 'git_push', { ...args, force: false });
    const otherPending = await waitForPending(inst, 'git_push', seen);
    seen.push(otherPending.id);
    expect(otherPending.digest).not.toBe(pending.digest);
    expect((await runCli(['deny', otherPending.id, '--config', inst.configFile])).code).toBe(0);
    expect(textOf(await other.result)).toMatch(
      /^denied: git\.tools\.git_push\.approve: approval [0-9a-f]+ was denied by root/,
    );
  });

  it('a push outside `when` runs without approval', async () => {
    expect((await call('git_create_branch', { workspace: 'api', name: 'agent/x' })).isError).toBeFalsy();
    const r = await call('git_push', { workspace: 'api', branch: 'agent/x' });
    expect(r.isError, r.content[0]!.text).toBeFalsy();
    expect(
      (await auditRecords(inst)).filter(
        (x) => x.phase === 'approval' && x.args && (x.args as { branch?: string }).branch === 'agent/x',
      ),
    ).toEqual([]);
  });
});
