// `approve` in policy files: validated by `airlock policy check` (a process) with positions,
// conditions declared by the real git and http tools, and the parsed form the broker runs on.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/airlock-yaml.js';
import { checkPolicyFiles } from '../../src/policy/team-policy.js';
import { SERVERS } from '../../src/servers.js';
import { makeInstallation, type Installation } from '../helpers/fixture.js';
import { runCli } from './helpers.js';

let inst: Installation;

beforeAll(async () => {
  inst = await makeInstallation({ secrets: { 'git-token': 'x', 'api-token': 'y' } });
});
afterAll(() => inst?.cleanup());

const policy = (gitPush: string, httpRequest: string) => `team: acme
servers:
  git:
    workspaces:
      api: { path: /srv/api, remote: "https://git.example/acme/api.git", credential: git-token }
    tools:
      git_push:
        branches: ["release/*"]
${gitPush}
  http:
    hosts:
      - origin: https://api.example
        methods: [GET, POST]
        paths: ["/v1/**"]
    tools:
      http_request:
${httpRequest}
`;

describe('approve in a policy', () => {
  it('policy check reports every mistake in approve with file:line:col', async () => {
    const file = path.join(inst.policiesDir, 'acme.yaml');
    await fs.writeFile(
      file,
      policy(
        `        approve: { when: { branchez: ["release/*"] }, timeout: 10 minutes, grant: { for: 30d } }`,
        `        approve: { when: { methods: [FETCH], paths: ["/v1/***"] } }`,
      ),
    );
    const r = await runCli(['policy', 'check', '--config', inst.configFile]);
    expect(r.code).toBe(1);
    const lines = r.stdout.trim().split('\n').concat(r.stderr.trim().split('\n')).filter(Boolean);
    const rel = lines.map((l) => l.replace(`${file}:`, ''));
    expect(rel).toEqual(
      expect.arrayContaining([
        '9:28: servers.git.tools.git_push.approve.when: unknown key "branchez" (allowed: branches, workspaces)',
        '9:64: servers.git.tools.git_push.approve.timeout: bad duration "10 minutes": expected a number and s, m, h or d (e.g. "30m")',
        '9:90: servers.git.tools.git_push.approve.grant.for: duration "30d" is longer than the maximum (7d)',
        expect.stringMatching(
          /^17:38: servers\.http\.tools\.http_request\.approve\.when\.methods\[0\]: must be one of: GET, HEAD/,
        ),
        '17:54: servers.http.tools.http_request.approve.when.paths[0]: bad glob "/v1/***": "***" is not a pattern (use "*" or "**")',
        '5 errors in 1 file',
      ]),
    );
    expect(rel).toHaveLength(6);
    await fs.writeFile(file, policy(`        approve: maybe`, `        approve: { when: {} }`));
    const second = await runCli(['policy', 'check', '--config', inst.configFile]);
    expect(second.code).toBe(1);
    const out = (second.stdout + second.stderr).replaceAll(`${file}:`, '');
    expect(out.trim().split('\n')).toEqual([
      '9:18: servers.git.tools.git_push.approve: approve must be "required" or a mapping { when, timeout, grant }',
      '17:26: servers.http.tools.http_request.approve.when: when must name at least one condition (methods, origins, paths)',
      '2 errors in 1 file',
    ]);
  });

  it('parses required and the detailed form (defaults: 10m, once)', async () => {
    const file = path.join(inst.policiesDir, 'acme.yaml');
    await fs.writeFile(
      file,
      policy(
        `        approve: required`,
        `        approve: { when: { methods: [POST], origins: ["https://api.example"] }, timeout: 90s, grant: { for: 2h } }`,
      ),
    );
    const r = await runCli(['policy', 'check', '--config', inst.configFile]);
    expect(r.stderr + r.stdout).not.toMatch(/:\d+:\d+: /);
    expect(r.code).toBe(0);
    const { policies, issues } = await checkPolicyFiles(await loadConfig(inst.configFile), SERVERS);
    expect(issues).toEqual([]);
    expect(policies[0]!.servers.git!.tools.git_push!.approve).toEqual({ timeoutMs: 600_000, grantMaxMs: 0 });
    expect(policies[0]!.servers.http!.tools.http_request!.approve).toEqual({
      when: { methods: ['POST'], origins: ['https://api.example'] },
      timeoutMs: 90_000,
      grantMaxMs: 7_200_000,
    });
  });
});
