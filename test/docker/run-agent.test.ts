import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stageForAgent } from '../../src/demo/sandbox.js';
import {
  dockerDir,
  optionValues,
  parseShellLine,
  repoRoot,
  runAgent,
  runAgentScript,
  Sandbox,
  splitDockerRun,
  TEAM,
} from './helpers.js';

let sandbox: Sandbox;
beforeEach(() => {
  sandbox = new Sandbox();
});
afterEach(() => {
  sandbox.cleanup();
});

/** Runs with --print and returns the docker argv it printed. */
function printed(extra: string[] = [], command: string[] = []): string[] {
  const result = runAgent([
    ...sandbox.baseArgs(),
    ...extra,
    '--print',
    ...(command.length ? ['--', ...command] : []),
  ]);
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  return parseShellLine(result.stdout.trimEnd());
}

describe('run-agent.sh --print', () => {
  it('prints a docker run with every sandbox flag and its value', () => {
    const { options, command } = splitDockerRun(printed());
    const one = (name: string) => {
      const values = optionValues(options, name);
      expect(values, name).toHaveLength(1);
      return values[0];
    };

    for (const flag of ['--rm', '--read-only', '--init']) expect(options, flag).toContain(flag);
    expect(one('--network')).toBe('none');
    expect(one('--cap-drop')).toBe('ALL');
    const securityOpts = optionValues(options, '--security-opt');
    expect(securityOpts).toContain('no-new-privileges');
    expect(securityOpts).toContain(`seccomp=${path.join(dockerDir, 'seccomp.json')}`);
    expect(path.isAbsolute(path.join(dockerDir, 'seccomp.json'))).toBe(true);

    const tmpfs = optionValues(options, '--tmpfs');
    expect(tmpfs).toHaveLength(2);
    for (const target of ['/tmp', '/home/agent']) {
      const spec = tmpfs.find((t) => t.startsWith(`${target}:`));
      expect(spec, target).toBeDefined();
      const mountOptions = spec!.slice(target.length + 1).split(',');
      for (const o of ['rw', 'noexec', 'nosuid', 'nodev'])
        expect(mountOptions, `${target} ${o}`).toContain(o);
      expect(
        mountOptions.some((o) => /^size=\d+[kmg]$/.test(o)),
        `${target} size`,
      ).toBe(true);
    }
    expect(tmpfs.find((t) => t.startsWith('/home/agent:'))).toContain('uid=1000,gid=1000,mode=0700');

    expect(one('--memory')).toBe('4g');
    expect(one('--memory-swap')).toBe('4g');
    expect(one('--cpus')).toBe('2');
    expect(one('--pids-limit')).toBe('512');
    expect(one('--user')).toBe('1000:1000');
    expect(['none', 'private']).toContain(one('--ipc'));
    expect(optionValues(options, '--env')).toEqual(['ANTHROPIC_BASE_URL=http://127.0.0.1:8080']);
    expect(optionValues(options, '-v').sort()).toEqual(
      [`${sandbox.workspace}:/workspace`, `${path.join(sandbox.socketDir, TEAM)}:/run/airlock:ro`].sort(),
    );
    // The image's CMD (claude) runs when no command is given.
    expect(command).toEqual([]);
    // Nothing that would widen the sandbox.
    for (const forbidden of [
      '--privileged',
      '--cap-add',
      '--device',
      '--pid',
      '--userns',
      '--volumes-from',
    ]) {
      expect(
        options.some((o) => o === forbidden || o.startsWith(`${forbidden}=`)),
        forbidden,
      ).toBe(false);
    }
  });

  it('applies the limit and image options, keeping swap equal to memory', () => {
    const { options, image } = splitDockerRun(
      printed(['--memory', '8g', '--cpus', '1.5', '--pids', '100', '--image', 'registry.example/agent:1.2']),
      'registry.example/agent:1.2',
    );
    expect(image).toBe('registry.example/agent:1.2');
    expect(optionValues(options, '--memory')).toEqual(['8g']);
    expect(optionValues(options, '--memory-swap')).toEqual(['8g']);
    expect(optionValues(options, '--cpus')).toEqual(['1.5']);
    expect(optionValues(options, '--pids-limit')).toEqual(['100']);
  });

  it('passes the container command after the image, verbatim', () => {
    const prompt = "it's a\nmulti-line $(prompt) with `ticks`";
    const { command } = splitDockerRun(printed([], ['claude', '-p', prompt]));
    expect(command).toEqual(['claude', '-p', prompt]);
  });

  it('resolves a symlinked workspace to the folder docker will mount', () => {
    const link = path.join(sandbox.root, 'link');
    symlinkSync(sandbox.workspace, link);
    const result = runAgent([
      '--team',
      TEAM,
      '--workspace',
      link,
      '--socket-dir',
      sandbox.socketDir,
      '--print',
    ]);
    expect(result.status).toBe(0);
    const { options } = splitDockerRun(parseShellLine(result.stdout.trimEnd()));
    expect(optionValues(options, '-v')).toContain(`${sandbox.workspace}:/workspace`);
  });
});

describe('run-agent.sh cannot be talked out of --network none', () => {
  it('puts docker-looking arguments after -- into the container command', () => {
    const { options, command } = splitDockerRun(
      printed([], ['--network', 'host', '--privileged', '-v', '/:/host', '--cap-add', 'ALL']),
    );
    expect(optionValues(options, '--network')).toEqual(['none']);
    expect(options).not.toContain('--privileged');
    expect(optionValues(options, '-v')).toHaveLength(2);
    expect(command).toEqual(['--network', 'host', '--privileged', '-v', '/:/host', '--cap-add', 'ALL']);
  });

  it.each([
    [['--network', 'host']],
    [['--network=host']],
    [['--privileged']],
    [['-v', '/:/host']],
    [['--cap-add', 'SYS_ADMIN']],
    [['--security-opt', 'seccomp=unconfined']],
  ])('refuses docker options before -- (%j)', (extra) => {
    const result = runAgent([...sandbox.baseArgs(), ...extra, '--print']);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('unknown option');
    expect(result.stdout).toBe('');
  });

  it.each(['--network=host', '-it', '--privileged', 'img --privileged', ''])(
    'refuses an image name that is not an image (%j)',
    (image) => {
      const result = runAgent([...sandbox.baseArgs(), '--image', image, '--print']);
      expect(result.status).toBe(1);
      expect(result.stderr).toContain('bad image name');
    },
  );

  it.each([
    ['--memory', '4g --privileged'],
    ['--memory', '0'],
    ['--cpus', 'all'],
    ['--cpus', '0'],
    ['--pids', '-1'],
    ['--tmp-size', '1g,exec'],
    ['--home-size', '1g,suid'],
  ])('refuses a malformed %s value %j', (option, value) => {
    const result = runAgent([...sandbox.baseArgs(), option, value, '--print']);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`bad ${option}`);
  });
});

// One case per credential pattern: the files to create, and the path the refusal must name.
const credentialCases: Array<[string, string[], string]> = [
  ['.env', ['.env'], '.env'],
  ['.env.local', ['.env.local'], '.env.local'],
  ['nested .env.production', ['services/api/.env.production'], 'services/api/.env.production'],
  ['.git-credentials', ['.git-credentials'], '.git-credentials'],
  ['.aws/', ['.aws/credentials'], '.aws'],
  ['.config/gcloud/', ['.config/gcloud/application_default_credentials.json'], '.config/gcloud'],
  ['.azure/', ['.azure/msal_token_cache.json'], '.azure'],
  ['.docker/config.json', ['.docker/config.json'], '.docker/config.json'],
  ['.kube/config', ['ops/.kube/config'], 'ops/.kube/config'],
  ['.npmrc', ['.npmrc'], '.npmrc'],
  ['.pypirc', ['tools/.pypirc'], 'tools/.pypirc'],
  ['*-service-account.json', ['deploy/prod-service-account.json'], 'deploy/prod-service-account.json'],
  ['*.pem', ['certs/server.pem'], 'certs/server.pem'],
  ['*.key', ['certs/server.key'], 'certs/server.key'],
  ['.netrc', ['.netrc'], '.netrc'],
  ['.pgpass', ['.pgpass'], '.pgpass'],
  ['.ssh/', ['.ssh/config'], '.ssh'],
  ['id_ed25519', ['keys/id_ed25519'], 'keys/id_ed25519'],
  ['*.p12', ['signing/release.p12'], 'signing/release.p12'],
  ['deep .env (7 levels)', ['a/b/c/d/e/f/g/.env'], 'a/b/c/d/e/f/g/.env'],
];

describe('run-agent.sh refuses a workspace holding credential files', () => {
  it.each(credentialCases)('%s', (_label, files, offending) => {
    sandbox.file('README.md', '# project');
    for (const file of files) sandbox.file(file, 'secret');
    const result = runAgent([...sandbox.baseArgs(), '--print']);
    expect(result.status).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain('refusing');
    expect(result.stderr).toContain(path.join(sandbox.workspace, offending));
  });

  it('names every offending path, not just the first', () => {
    const paths = [sandbox.file('.env'), sandbox.file('a/key.pem'), sandbox.file('b/.npmrc')];
    const result = runAgent([...sandbox.baseArgs(), '--print']);
    expect(result.status).toBe(1);
    for (const p of paths) expect(result.stderr).toContain(p);
  });

  it('refuses a .git/config whose remote URL carries a password', () => {
    sandbox.file(
      '.git/config',
      '[remote "origin"]\n\turl = https://x-access-token:ghp_abc123@github.com/acme/api.git\n',
    );
    const result = runAgent([...sandbox.baseArgs(), '--print']);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(path.join(sandbox.workspace, '.git/config'));
  });

  it('passes a .git/config without credentials, warning that the agent can write it', () => {
    sandbox.file('.git/config', '[remote "origin"]\n\turl = https://github.com/acme/api.git\n');
    const result = runAgent([...sandbox.baseArgs(), '--print']);
    expect(result.status).toBe(0);
    expect(result.stderr).toContain(
      `warning: ${path.join(sandbox.workspace, '.git')} is writable by the agent`,
    );
  });

  it('passes a clean workspace', () => {
    sandbox.file('README.md', '# project');
    sandbox.file('src/index.ts', 'export {};');
    sandbox.file('.gitignore', '.env\n');
    sandbox.file('config/settings.json', '{}');
    sandbox.file('docs/keys.md', 'how we rotate keys');
    sandbox.file('node_modules/some-pkg/.npmrc', 'not scanned: dependencies are skipped');
    const result = runAgent([...sandbox.baseArgs(), '--print']);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
  });

  it('--allow-file exempts exactly the named path', () => {
    sandbox.file('.env.example', 'API_URL=');
    expect(runAgent([...sandbox.baseArgs(), '--print']).status).toBe(1);
    expect(runAgent([...sandbox.baseArgs(), '--allow-file', '.env.example', '--print']).status).toBe(0);
    expect(
      runAgent([
        ...sandbox.baseArgs(),
        '--allow-file',
        path.join(sandbox.workspace, '.env.example'),
        '--print',
      ]).status,
    ).toBe(0);

    const other = sandbox.file('.env');
    const result = runAgent([...sandbox.baseArgs(), '--allow-file', '.env.example', '--print']);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(other);
    expect(result.stderr).not.toContain('.env.example');
  });

  it('--allow-file must point inside the workspace', () => {
    const result = runAgent([...sandbox.baseArgs(), '--allow-file', '../elsewhere/.env', '--print']);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('not inside the workspace');
  });

  it('refuses when part of the tree cannot be read', async () => {
    sandbox.file('locked/inner/.env');
    const locked = path.join(sandbox.workspace, 'locked');
    chmodSync(locked, 0o000);
    chmodSync(sandbox.root, 0o755); // mkdtemp makes it 0700; the unprivileged user must reach the rest
    try {
      // root reads everything, so run as an unprivileged user when we are root, from a copy of
      // the script it can read (the repository may sit in a 0700 folder).
      const asRoot = process.getuid?.() === 0;
      const staged = await stageForAgent({
        sourceRoot: repoRoot,
        dest: path.join(sandbox.root, 'scripts'),
        files: ['docker/run-agent.sh', 'docker/seccomp.json'],
      });
      const result = asRoot
        ? spawnSync(
            'setpriv',
            [
              '--reuid=65534',
              '--regid=65534',
              '--clear-groups',
              'bash',
              staged.path('docker/run-agent.sh'),
              ...sandbox.baseArgs(),
              '--print',
            ],
            { encoding: 'utf8', timeout: 20_000, env: { ...process.env, HOME: '/nonexistent' } },
          )
        : spawnSync('bash', [runAgentScript, ...sandbox.baseArgs(), '--print'], { encoding: 'utf8' });
      expect(result.status).toBe(1);
      expect(result.stderr).toContain('could not scan the whole workspace');
      expect(result.stdout).toBe('');
    } finally {
      chmodSync(locked, 0o755);
    }
  });
});

describe('run-agent.sh refuses a bad workspace, team or socket folder', () => {
  it.each(['Payments', '-payments', 'pay_ments', '../other', 'a b', 'team/x', ''])(
    'refuses team name %j',
    (team) => {
      const result = runAgent([
        '--team',
        team,
        '--workspace',
        sandbox.workspace,
        '--socket-dir',
        sandbox.socketDir,
        '--print',
      ]);
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(/team/);
    },
  );

  it.each(['a', '0', 'team-1'])('accepts team name %j', (team) => {
    mkdirSync(path.join(sandbox.socketDir, team), { recursive: true });
    const result = runAgent([
      '--team',
      team,
      '--workspace',
      sandbox.workspace,
      '--socket-dir',
      sandbox.socketDir,
      '--print',
    ]);
    expect(result.status).toBe(0);
  });

  it('requires --team and --workspace', () => {
    expect(runAgent(['--workspace', sandbox.workspace, '--print']).stderr).toContain('--team is required');
    expect(runAgent(['--team', TEAM, '--print']).stderr).toContain('--workspace is required');
  });

  it('refuses a workspace that does not exist, or is a file', () => {
    const missing = path.join(sandbox.root, 'missing');
    let result = runAgent([
      '--team',
      TEAM,
      '--workspace',
      missing,
      '--socket-dir',
      sandbox.socketDir,
      '--print',
    ]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('does not exist');
    const file = path.join(sandbox.root, 'file');
    writeFileSync(file, '');
    result = runAgent(['--team', TEAM, '--workspace', file, '--socket-dir', sandbox.socketDir, '--print']);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('not a directory');
  });

  it.each([
    ['/', 'is / (the whole host)'],
    ['/tmp', 'is a top-level folder'],
    ['/etc', 'is a top-level folder'],
  ])('refuses %s as the workspace', (workspace, reason) => {
    const result = runAgent([
      '--team',
      TEAM,
      '--workspace',
      workspace,
      '--socket-dir',
      sandbox.socketDir,
      '--print',
    ]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(reason);
  });

  it('refuses the home folder, a folder containing it, and a folder inside ~/.aws', () => {
    const home = path.join(sandbox.workspace, 'home', 'alice');
    mkdirSync(path.join(home, 'src', 'project'), { recursive: true });
    const homeLink = path.join(sandbox.root, 'home-link');
    symlinkSync(home, homeLink);
    const args = (workspace: string) => [
      '--team',
      TEAM,
      '--workspace',
      workspace,
      '--socket-dir',
      sandbox.socketDir,
      '--print',
    ];
    // No credential file exists yet, so each refusal comes from the home-folder rules alone.
    for (const workspace of [home, homeLink, path.join(sandbox.workspace, 'home')]) {
      const result = runAgent(args(workspace), { HOME: home });
      expect(result.status, workspace).toBe(1);
      expect(result.stderr, workspace).toContain('contains your home folder');
    }
    for (const dir of ['.aws/sso', '.ssh', '.config/gcloud/configurations', '.kube']) {
      mkdirSync(path.join(home, dir), { recursive: true });
      const result = runAgent(args(path.join(home, dir)), { HOME: home });
      expect(result.status, dir).toBe(1);
      expect(result.stderr, dir).toMatch(/is inside ~\/\.(aws|ssh|config\/gcloud|kube)/);
    }
    // A project below home is fine.
    expect(runAgent(args(path.join(home, 'src', 'project')), { HOME: home }).status).toBe(0);
  });

  it('refuses a workspace that contains the socket folder of every team', () => {
    const socketDir = path.join(sandbox.workspace, 'run-airlock');
    mkdirSync(path.join(socketDir, TEAM), { recursive: true });
    const result = runAgent([
      '--team',
      TEAM,
      '--workspace',
      sandbox.workspace,
      '--socket-dir',
      socketDir,
      '--print',
    ]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('socket folder');
  });

  it('refuses a workspace inside the socket folder', () => {
    const other = path.join(sandbox.socketDir, 'other-team');
    mkdirSync(other);
    const result = runAgent([
      '--team',
      TEAM,
      '--workspace',
      other,
      '--socket-dir',
      sandbox.socketDir,
      '--print',
    ]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('inside the socket folder');
  });

  it("needs the team's socket folder to run, and only warns about it with --print", () => {
    const args = ['--team', 'ghost', '--workspace', sandbox.workspace, '--socket-dir', sandbox.socketDir];
    const run = runAgent(args, { PATH: process.env.PATH });
    expect(run.status).toBe(1);
    expect(run.stderr).toContain('no socket folder');
    const print = runAgent([...args, '--print']);
    expect(print.status).toBe(0);
    expect(print.stderr).toContain('warning');
  });

  it('is valid bash and executable', () => {
    expect(spawnSync('bash', ['-n', runAgentScript]).status).toBe(0);
    expect(statSync(runAgentScript).mode & 0o111).toBe(0o111);
  });
});
