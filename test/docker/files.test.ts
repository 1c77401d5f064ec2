import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import picomatch from 'picomatch';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { dockerDir, repoRoot } from './helpers.js';

const read = (file: string) => readFileSync(path.join(dockerDir, file), 'utf8');

interface SeccompRule {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: Array<{ index: number; value: number; valueTwo?: number; op: string }>;
  includes?: { arches?: string[] };
}
interface SeccompProfile {
  defaultAction: string;
  defaultErrnoRet?: number;
  archMap: Array<{ architecture: string; subArchitectures: string[] }>;
  syscalls: SeccompRule[];
}

describe('seccomp.json', () => {
  const profile = JSON.parse(read('seccomp.json')) as SeccompProfile;
  const rulesFor = (name: string) => profile.syscalls.filter((rule) => rule.names.includes(name));
  const allowsUnconditionally = (name: string) =>
    rulesFor(name).some((rule) => rule.action === 'SCMP_ACT_ALLOW' && !rule.args?.length && !rule.includes);

  it("follows Docker's schema with a default of errno", () => {
    expect(profile.defaultAction).toBe('SCMP_ACT_ERRNO');
    expect(profile.defaultErrnoRet).toBe(1);
    expect(profile.archMap.map((a) => a.architecture)).toEqual(['SCMP_ARCH_X86_64', 'SCMP_ARCH_AARCH64']);
    const actions = new Set(['SCMP_ACT_ALLOW', 'SCMP_ACT_ERRNO']);
    for (const rule of profile.syscalls) {
      expect(rule.names.length).toBeGreaterThan(0);
      expect(actions.has(rule.action), rule.action).toBe(true);
      if (rule.errnoRet !== undefined) expect(rule.action).toBe('SCMP_ACT_ERRNO');
      for (const key of Object.keys(rule)) {
        expect(['names', 'action', 'args', 'errnoRet', 'includes', 'excludes', 'comment']).toContain(key);
      }
    }
  });

  it.each([
    'ptrace',
    'mount',
    'umount2',
    'unshare',
    'setns',
    'keyctl',
    'add_key',
    'request_key',
    'bpf',
    'perf_event_open',
    'userfaultfd',
    'kexec_load',
    'init_module',
    'finit_module',
    'delete_module',
    'reboot',
    'swapon',
    'swapoff',
    'pivot_root',
    'open_by_handle_at',
    'name_to_handle_at',
    'io_uring_setup',
    'process_vm_readv',
  ])('denies %s', (name) => {
    const rules = rulesFor(name);
    expect(rules.some((rule) => rule.action === 'SCMP_ACT_ALLOW')).toBe(false);
    expect(rules.some((rule) => rule.action === 'SCMP_ACT_ERRNO')).toBe(true);
  });

  it('allows what Node and git need', () => {
    for (const name of [
      'read',
      'write',
      'openat',
      'mmap',
      'mprotect',
      'futex',
      'epoll_wait',
      'execve',
      'wait4',
    ]) {
      expect(allowsUnconditionally(name), name).toBe(true);
    }
    for (const name of [
      'connect',
      'bind',
      'listen',
      'accept4',
      'getrandom',
      'pipe2',
      'statx',
      'rt_sigaction',
    ]) {
      expect(allowsUnconditionally(name), name).toBe(true);
    }
  });

  it('allows clone only without namespace flags, and answers clone3 with ENOSYS', () => {
    const clone = rulesFor('clone');
    expect(clone).toHaveLength(1);
    expect(clone[0]!.action).toBe('SCMP_ACT_ALLOW');
    const CLONE_NEW_FLAGS =
      0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00020000;
    expect(clone[0]!.args).toEqual([
      { index: 0, value: CLONE_NEW_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' },
    ]);
    expect(rulesFor('clone3')).toEqual([expect.objectContaining({ action: 'SCMP_ACT_ERRNO', errnoRet: 38 })]);
  });

  it('allows personality only for the usual values', () => {
    const values = rulesFor('personality').map((rule) => {
      expect(rule.action).toBe('SCMP_ACT_ALLOW');
      expect(rule.args).toHaveLength(1);
      expect(rule.args![0]!.op).toBe('SCMP_CMP_EQ');
      return rule.args![0]!.value;
    });
    expect(values.sort((a, b) => a - b)).toEqual([0, 8, 131072, 131080, 4294967295]);
  });

  it('never lists a syscall as both allowed and denied', () => {
    const allowed = new Set(
      profile.syscalls.filter((r) => r.action === 'SCMP_ACT_ALLOW').flatMap((r) => r.names),
    );
    const denied = profile.syscalls.filter((r) => r.action === 'SCMP_ACT_ERRNO').flatMap((r) => r.names);
    expect(denied.filter((name) => allowed.has(name))).toEqual([]);
  });
});

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile');
  // Instructions with their continuation lines joined.
  const instructions = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'));
  const of = (keyword: string) => instructions.filter((line) => line.toUpperCase().startsWith(`${keyword} `));

  it('builds on the pinned slim Node 20 image (or --base) with a pinned Claude Code', () => {
    expect(dockerfile).toMatch(/^ARG BASE_IMAGE=node:20-bookworm-slim$/m);
    expect(of('FROM')).toEqual(['FROM ${BASE_IMAGE} AS agent-root', 'FROM scratch']);
    expect(dockerfile).toMatch(/ARG CLAUDE_CODE_VERSION=\d+\.\d+\.\d+\n/);
    expect(dockerfile).toContain('"@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}"');
    expect(dockerfile).toMatch(/apt-get \$apt_ca install -y --no-install-recommends git ca-certificates/);
    // No `# syntax=` line: it would make BuildKit pull a frontend image from a registry.
    expect(dockerfile).not.toMatch(/^# *syntax/m);
  });

  it('makes the image from one copy of the build stage, so no layer of it held the build CA', () => {
    const copies = of('COPY');
    expect(copies.filter((c) => c.includes('--from'))).toEqual(['COPY --from=agent-root / /']);
    // The final stage (after FROM scratch) copies nothing else.
    const finalStage = instructions.slice(instructions.indexOf('FROM scratch'));
    expect(finalStage.filter((line) => line.startsWith('COPY '))).toEqual(['COPY --from=agent-root / /']);
    expect(dockerfile).toContain('rm -rf /tmp/airlock-build');
  });

  it('runs as the unprivileged agent user in /workspace', () => {
    const users = of('USER');
    expect(users.length).toBeGreaterThan(0);
    expect(users.at(-1)).toMatch(/^USER (1000(:1000)?|agent)$/);
    expect(dockerfile).toMatch(/useradd --uid 1000 --gid 1000 .*--home-dir \/home\/agent/);
    expect(of('WORKDIR').at(-1)).toBe('WORKDIR /workspace');
  });

  it('sets no secret in ENV or ARG', () => {
    const declared = [...of('ENV'), ...of('ARG')].flatMap((line) =>
      [...line.slice(4).matchAll(/([A-Za-z_][A-Za-z0-9_]*)=/g)].map((m) => m[1]!),
    );
    expect(declared).toContain('ANTHROPIC_BASE_URL');
    for (const name of declared) expect(name, name).not.toMatch(/KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL/i);
    expect(dockerfile).not.toMatch(/ANTHROPIC_API_KEY|ANTHROPIC_AUTH_TOKEN/);
    expect(of('ENV').join(' ')).toContain('ANTHROPIC_BASE_URL=http://127.0.0.1:8080');
  });

  it('installs the bridge as an executable airlock-bridge and uses the entrypoint', () => {
    expect(dockerfile).toContain('install -m 0755 bridge.cjs /usr/local/bin/airlock-bridge');
    expect(dockerfile).toContain("head -n 1 bridge.cjs | grep -qx '#!/usr/bin/env node'");
    expect(dockerfile).toContain('install -m 0755 agent-entrypoint.sh /usr/local/bin/agent-entrypoint');
    expect(of('ENTRYPOINT')).toEqual(['ENTRYPOINT ["/usr/local/bin/agent-entrypoint"]']);
    expect(of('CMD')).toEqual(['CMD ["claude"]']);
  });

  it('copies only files the build context lets in; the optional CA never comes from the work tree', () => {
    const sources = of('COPY')
      .filter((line) => !line.includes('--from'))
      .flatMap((line) =>
        line
          .split(/\s+/)
          .filter((w) => !w.startsWith('--'))
          .slice(1, -1),
      );
    expect(sources).toContain('dist/src/bridge.cjs');
    for (const source of sources.filter((s) => s !== 'docker/build-ca.pe[m]'))
      expect(dockerIgnored(source), source).toBe(false);
    // Only build-image.sh's staged context holds it; a .pem in the repository is never sent.
    expect(sources).toContain('docker/build-ca.pe[m]');
    expect(dockerIgnored('docker/build-ca.pem')).toBe(true);
  });
});

describe('managed-settings.json', () => {
  it('gives Claude Code a placeholder key, not a credential', () => {
    const settings = JSON.parse(read('managed-settings.json'));
    expect(settings.apiKeyHelper).toMatch(/^echo [a-z-]+$/);
    expect(settings.apiKeyHelper).toContain('placeholder');
    expect(settings.permissions.deny).toEqual(expect.arrayContaining(['WebSearch', 'WebFetch']));
  });
});

describe('compose.example.yaml', () => {
  const compose = parseYaml(read('compose.example.yaml'));
  const agent = compose.services.agent;

  it('has the sandbox settings of run-agent.sh', () => {
    expect(Object.keys(compose.services)).toEqual(['agent']); // the broker runs on the host
    expect(agent.pull_policy).toBe('never');
    expect(agent.network_mode).toBe('none');
    expect(agent.read_only).toBe(true);
    expect(agent.cap_drop).toEqual(['ALL']);
    expect(agent.security_opt).toEqual(
      expect.arrayContaining(['no-new-privileges:true', 'seccomp=./seccomp.json']),
    );
    expect(agent.user).toBe('1000:1000');
    expect(agent.mem_limit).toBe(agent.memswap_limit);
    expect(agent.pids_limit).toBe(512);
    expect(agent.init).toBe(true);
    expect(agent.privileged).toBeUndefined();
    expect(agent.cap_add).toBeUndefined();
    expect(agent.ports).toBeUndefined();
    for (const target of ['/tmp', '/home/agent']) {
      const spec = (agent.tmpfs as string[]).find((t) => t.startsWith(`${target}:`));
      expect(spec, target).toMatch(/:rw,noexec,nosuid,nodev,size=/);
    }
    expect(agent.environment).toEqual({ ANTHROPIC_BASE_URL: 'http://127.0.0.1:8080' });
  });

  it('mounts the work tree and only the team socket folder, read-only', () => {
    const volumes = agent.volumes as Array<{
      type: string;
      source: string;
      target: string;
      read_only?: boolean;
    }>;
    expect(volumes.map((v) => v.target).sort()).toEqual(['/run/airlock', '/workspace']);
    const sockets = volumes.find((v) => v.target === '/run/airlock')!;
    expect(sockets.source).toMatch(/^\/run\/airlock\/[a-z0-9][a-z0-9-]*$/);
    expect(sockets.read_only).toBe(true);
    expect(volumes.every((v) => v.type === 'bind')).toBe(true);
  });

  it('points at files that exist', () => {
    expect(statSync(path.join(dockerDir, agent.build.context, agent.build.dockerfile)).isFile()).toBe(true);
    expect(statSync(path.join(dockerDir, 'seccomp.json')).isFile()).toBe(true);
  });
});

describe('airlock.service', () => {
  const unit = read('airlock.service');
  const settings = unit
    .split('\n')
    .filter((line) => /^[A-Za-z]+=/.test(line))
    .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)] as const);
  const values = (key: string) => settings.filter(([k]) => k === key).map(([, v]) => v);

  it('runs airlock serve hardened', () => {
    expect(values('ExecStart')[0]).toMatch(/airlock serve --config \S+/);
    expect(values('User')).toEqual(['airlock']);
    for (const [key, value] of [
      ['ProtectSystem', 'strict'],
      ['NoNewPrivileges', 'yes'],
      ['PrivateTmp', 'yes'],
      ['PrivateDevices', 'yes'],
      ['ProtectHome', 'yes'],
      // Only what the git server's work-tree confinement needs.
      ['RestrictNamespaces', 'user mnt'],
      ['CapabilityBoundingSet', ''],
      ['RuntimeDirectoryPreserve', 'yes'],
    ] as const) {
      expect(values(key), key).toContain(value);
    }
    const writable = values('ReadWritePaths').join(' ').split(/\s+/);
    expect(writable).toEqual(
      expect.arrayContaining(['/run/airlock', '/var/lib/airlock', '/var/log/airlock']),
    );
    expect(values('ExecReload')[0]).toContain('-HUP');
  });

  it('passes systemd-analyze verify (apart from the binary not being installed here)', () => {
    const result = spawnSync('systemd-analyze', ['verify', path.join(dockerDir, 'airlock.service')], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(result.error).toBeUndefined();
    const problems = result.stderr
      .split('\n')
      .filter((line) => line.trim() && !/Command (\S*\/)?airlock is not executable/.test(line));
    expect(problems).toEqual([]);
  });
});

// Docker's .dockerignore rules: paths relative to the context root, the last matching line wins,
// `!` re-includes, and a path is excluded when it or a parent folder matches.
const ignoreRules = readFileSync(path.join(repoRoot, '.dockerignore'), 'utf8')
  .split('\n')
  .map((line) => line.trim())
  .filter((line) => line && !line.startsWith('#'))
  .map((line) => {
    const negated = line.startsWith('!');
    const pattern = (negated ? line.slice(1) : line).replace(/^\/+/, '').replace(/\/+$/, '');
    return { negated, match: picomatch(pattern, { dot: true }) };
  });

function dockerIgnored(file: string): boolean {
  const parts = file.split('/');
  let ignored = false;
  for (const rule of ignoreRules) {
    for (let i = 1; i <= parts.length; i++) {
      if (rule.match(parts.slice(0, i).join('/'))) {
        ignored = !rule.negated;
        break;
      }
    }
  }
  return ignored;
}

describe('.dockerignore', () => {
  it.each([
    'dist/src/bridge.cjs',
    'dist/src/cli.js',
    'docker/agent-entrypoint.sh',
    'docker/managed-settings.json',
  ])('sends %s', (file) => {
    expect(dockerIgnored(file)).toBe(false);
  });

  it.each([
    'node_modules/yaml/package.json',
    '.git/config',
    '.env',
    '.env.production',
    'dist/.env',
    'dist/certs/server.pem',
    'dist/server.key',
    'dist/src/bridge.cjs.map',
    'test/docker/files.test.ts',
    'coverage/index.html',
    '.tmp/vitest.json',
    'src/tool.ts',
    'airlock.yaml',
    'policies/payments.yaml',
    '.npmrc',
    'dist/.aws/credentials',
  ])('keeps out %s', (file) => {
    expect(dockerIgnored(file)).toBe(true);
  });
});
