// The pieces approvals are built from, on the real tools: the digest binds the call (and only
// its content, not its key order), durations, and `when` over each tool's own arguments.
import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { approvalDigest } from '../../src/approvals/service.js';
import { approveSchema, needsApproval, parseDuration } from '../../src/approvals/policy.js';
import { canonicalJson } from '../../src/audit/log.js';
import { SERVERS } from '../../src/servers.js';
import { loadSqlParser } from '../../servers/postgres/sql.js';

// The pipeline loads the SQL parser (a tool's prepare) before it asks whether a call needs
// approval; these tests call needsApproval directly, so they load it first.
beforeAll(async () => {
  await loadSqlParser();
  await SERVERS.all();
});

const tool = (server: 'git' | 'http' | 'github' | 'postgres', name: string) =>
  SERVERS.loaded.get(server)!.tools.find((t) => t.name === name)!;

describe('approval digest', () => {
  it('is sha256 over the canonical JSON of team, server, tool and arguments', () => {
    const args = { workspace: 'api', branch: 'release/1' };
    const expected = createHash('sha256')
      .update(canonicalJson({ team: 'acme', server: 'git', tool: 'git_push', args }))
      .digest('hex');
    expect(approvalDigest('acme', 'git', 'git_push', args)).toBe(expected);
    expect(approvalDigest('acme', 'git', 'git_push', { branch: 'release/1', workspace: 'api' })).toBe(
      expected,
    );
    expect(approvalDigest('other', 'git', 'git_push', args)).not.toBe(expected);
    expect(approvalDigest('acme', 'git', 'git_push', { ...args, force: false })).not.toBe(expected);
  });
});

describe('durations', () => {
  it('takes s, m, h, d within the maximum and says why otherwise', () => {
    expect(parseDuration('90s', 86_400_000)).toBe(90_000);
    expect(parseDuration('30m', 86_400_000)).toBe(1_800_000);
    expect(parseDuration('2h', 86_400_000)).toBe(7_200_000);
    expect(parseDuration('1d', 86_400_000)).toBe(86_400_000);
    expect(parseDuration('2d', 86_400_000)).toBe('duration "2d" is longer than the maximum (1d)');
    expect(parseDuration('0m', 86_400_000)).toBe('bad duration "0m": must be more than zero');
    expect(parseDuration('10 minutes', 86_400_000)).toMatch(/^bad duration "10 minutes"/);
    expect(parseDuration('-5m', 86_400_000)).toMatch(/^bad duration/);
  });
});

describe('when, over the tools’ own arguments', () => {
  it('git_push: branches and workspaces must all match', () => {
    const push = tool('git', 'git_push');
    const policy = approveSchema(push).parse({ when: { branches: ['release/*'], workspaces: ['api'] } });
    expect(needsApproval(push, policy, { workspace: 'api', branch: 'release/1' })).toBe(true);
    expect(needsApproval(push, policy, { workspace: 'api', branch: 'agent/1' })).toBe(false);
    expect(needsApproval(push, policy, { workspace: 'web', branch: 'release/1' })).toBe(false);
    expect(needsApproval(push, approveSchema(push).parse('required'), { workspace: 'x', branch: 'y' })).toBe(
      true,
    );
  });

  it('http_request: methods, origins and paths as the tool parses the URL', () => {
    const req = tool('http', 'http_request');
    const policy = approveSchema(req).parse({
      when: { methods: ['POST', 'DELETE'], origins: ['https://api.stripe.com'], paths: ['/v1/refunds/**'] },
    });
    const call = (method: string, url: string) => needsApproval(req, policy, { method, url });
    expect(call('POST', 'https://api.stripe.com/v1/refunds/re_1')).toBe(true);
    expect(call('POST', 'https://API.STRIPE.COM:443/v1/refunds/re_1')).toBe(true);
    expect(call('POST', 'https://api.stripe.com/v1/./refunds/re_1')).toBe(true);
    expect(call('GET', 'https://api.stripe.com/v1/refunds/re_1')).toBe(false);
    expect(call('POST', 'https://api.stripe.com/v1/charges')).toBe(false);
    expect(call('POST', 'https://other.example/v1/refunds/re_1')).toBe(false);
  });

  it('a tool without conditions accepts only required or an unconditional mapping', () => {
    const status = tool('git', 'git_status');
    expect(approveSchema(status).safeParse({ when: { branches: ['x'] } }).success).toBe(false);
    expect(approveSchema(status).parse({ timeout: '1m' })).toEqual({ timeoutMs: 60_000, grantMaxMs: 0 });
  });

  it('create_pull_request: base, head and repos', () => {
    const pr = tool('github', 'create_pull_request');
    const policy = approveSchema(pr).parse({ when: { base: ['main'], repos: ['acme/*'] } });
    const call = (repo: string, base: string) =>
      needsApproval(pr, policy, { owner: 'acme', repo, title: 't', head: 'agent/x', base });
    expect(call('api', 'main')).toBe(true);
    expect(call('api', 'develop')).toBe(false);
    expect(() => approveSchema(pr).parse({ when: { branch: ['main'] } })).toThrow();
  });

  it('postgres query: statement classes from the real parse, and databases', () => {
    const query = tool('postgres', 'query');
    const policy = approveSchema(query).parse({
      when: { statements: ['insert', 'update', 'delete'], databases: ['prod-*'] },
    });
    const call = (database: string, sql: string) => needsApproval(query, policy, { database, sql });
    expect(call('prod-orders', "UPDATE orders SET state = 'x' WHERE id = 1")).toBe(true);
    expect(call('prod-orders', 'WITH x AS (SELECT 1) DELETE FROM orders WHERE id IN (SELECT * FROM x)')).toBe(
      true,
    );
    expect(call('prod-orders', 'SELECT * FROM orders')).toBe(false);
    expect(call('staging', 'DELETE FROM orders WHERE id = 1')).toBe(false);
    expect(() => approveSchema(query).parse({ when: { statements: ['drop'] } })).toThrow();
  });
});
