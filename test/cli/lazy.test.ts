// Start-up cost is what a command loads: each command imports only what it runs (the bench,
// `npm run bench:startup`, measures the time; this checks the cause without asserting timings).
// dist/src/cli.js is a bundle (build/bundle-cli.mjs): a loaded chunk counts as every module and
// package its build manifest says it holds.
import { spawnSync } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, REPO_ROOT } from '../helpers/fixture.js';
import { emptyDir } from './helpers.js';

const TRACER = path.join(import.meta.dirname, 'trace-imports.mjs');
const CHUNKS = path.join(REPO_ROOT, 'dist/src/chunks/modules.json');
let dir: string;
/** Bundle file (relative to dist/src) → the modules (`src/cli.js`) and packages (`pkg:zod`) in it. */
let bundled: Record<string, string[]>;

beforeAll(async () => {
  bundled = JSON.parse(await readFile(CHUNKS, 'utf8')) as Record<string, string[]>;
  dir = await emptyDir();
  await writeFile(
    path.join(dir, 'airlock.yaml'),
    `socketDir: ./run\nstateDir: ./state\npolicies: .\naudit:\n  file: ./audit.jsonl\n`,
  );
  await writeFile(path.join(dir, 'audit.jsonl'), '');
  await writeFile(
    path.join(dir, 'acme.yaml'),
    `team: acme\nservers:\n  http:\n    hosts:\n      - origin: https://api.example.com\n    tools:\n      http_request: {}\n`,
  );
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The packages and dist modules `airlock ARGS…` loads. */
async function loaded(args: string[]): Promise<{ packages: string[]; modules: string[] }> {
  const trace = path.join(dir, `trace-${args.join('-').replace(/\W/g, '')}.txt`);
  spawnSync(process.execPath, ['--import', TRACER, CLI, ...args], {
    cwd: dir,
    input: '',
    timeout: 20_000,
    env: { PATH: process.env.PATH, AIRLOCK_TRACE_IMPORTS: trace },
  });
  const urls = (await readFile(trace, 'utf8')).trim().split('\n');
  const packages = new Set<string>();
  const modules = new Set<string>();
  for (const url of urls) {
    const inBundle = bundled[/\/dist\/src\/(.+)$/.exec(url)?.[1] ?? ''];
    if (inBundle) {
      for (const m of inBundle) (m.startsWith('pkg:') ? packages : modules).add(m.replace(/^pkg:/, ''));
      continue;
    }
    const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1];
    if (pkg) packages.add(pkg);
    const mod = /\/dist\/(.+)$/.exec(url)?.[1];
    if (mod && !pkg) modules.add(mod);
  }
  return { packages: [...packages].sort(), modules: [...modules].sort() };
}

describe('each command loads only what it runs', () => {
  it('the airlock command is the bundle, and its manifest names what each file holds', async () => {
    expect((await readFile(CLI, 'utf8')).split('\n')[1]).toMatch(/^\/\/ Bundled by build\/bundle-cli\.mjs/);
    expect(bundled['cli.js']).toEqual(['src/cli.js']);
    // The SDK, zod and the servers are in the bundle: the checks below would see them.
    const all = Object.values(bundled).flat();
    for (const m of [
      'pkg:@modelcontextprotocol/sdk',
      'pkg:zod',
      'pkg:yaml',
      'src/broker.js',
      'servers/http/index.js',
    ])
      expect(all).toContain(m);
  });

  it('airlock --help and --version load no package and no other module', async () => {
    for (const args of [['--help'], ['--version'], ['serve', '--help']]) {
      const { packages, modules } = await loaded(args);
      expect(packages, args.join(' ')).toEqual([]);
      expect(modules).toEqual(['src/cli.js', 'src/version.js']);
    }
  });

  it('airlock bridge loads the dependency-free bridge only', async () => {
    const { packages, modules } = await loaded(['bridge', path.join(dir, 'none.sock')]);
    expect(packages).toEqual([]);
    expect(modules).toEqual(['src/bridge.cjs', 'src/cli.js', 'src/version.js']);
  });

  it('policy check and audit verify never load the broker, the MCP SDK or the logger', async () => {
    for (const args of [
      ['policy', 'check'],
      ['audit', 'verify'],
    ]) {
      const { packages, modules } = await loaded(args);
      expect(packages, args.join(' ')).not.toContain('@modelcontextprotocol/sdk');
      expect(packages).not.toContain('pino');
      expect(packages).not.toContain('@octokit/rest');
      expect(packages).not.toContain('pg');
      expect(modules).not.toContain('src/broker.js');
      expect(modules).not.toContain('src/pipeline/pipeline.js');
      expect(packages).toContain('zod'); // the config is validated: the trace sees packages
    }
    expect((await loaded(['audit', 'verify', '--file', path.join(dir, 'audit.jsonl')])).packages).toEqual([]);
  });

  it("airlock stdio http loads the broker and the SDK but no other server's client library", async () => {
    const { packages, modules } = await loaded(['stdio', 'http', '--team', 'acme']);
    expect(modules).toContain('src/broker.js');
    expect(packages).toContain('@modelcontextprotocol/sdk');
    for (const unneeded of ['pg', '@octokit/rest', '@octokit/auth-app', '@napi-rs/keyring'])
      expect(packages, unneeded).not.toContain(unneeded);
  });
});
