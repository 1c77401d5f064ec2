// Start-up cost is what a command loads: each command imports only what it runs (the bench,
// `npm run bench:startup`, measures the time; this checks the cause without asserting timings).
// dist/src/cli.js is a bundle (build/bundle-cli.mjs): a loaded chunk counts as every module and
// package its build manifest says it holds.
import { spawnSync } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
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
    `socketDir: ./run\nstateDir: ./state\npolicies: .\naudit:\n  file: ./audit.jsonl\nsecrets:\n  pg-url: { env: AIRLOCK_LAZY_PG_URL }\n`,
  );
  await writeFile(path.join(dir, 'audit.jsonl'), '');
  await writeFile(
    path.join(dir, 'acme.yaml'),
    `team: acme\nservers:\n  http:\n    hosts:\n      - origin: https://api.example.com\n    tools:\n      http_request: {}\n`,
  );
  // A postgres policy with an approval condition on statement classes (read from the SQL parse
  // at call time): checking it must not load the parser.
  await writeFile(
    path.join(dir, 'data.yaml'),
    `team: data\nservers:\n  postgres:\n    databases:\n      app:\n        connection: pg-url\n        tables: ['public.*']\n    tools:\n      query:\n        approve: { when: { statements: [insert, update] } }\n      explain: {}\n`,
  );
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Exit status of the last `loaded` run. */
let lastStatus: number | null = null;

/** The packages, dist modules and Node built-ins (`https`) `airlock ARGS…` loads. */
async function loaded(
  args: string[],
): Promise<{ packages: string[]; modules: string[]; builtins: string[] }> {
  const trace = path.join(dir, `trace-${args.join('-').replace(/\W/g, '')}.txt`);
  const run = spawnSync(process.execPath, ['--import', TRACER, CLI, ...args], {
    cwd: dir,
    input: '',
    timeout: 20_000,
    env: { PATH: process.env.PATH, AIRLOCK_TRACE_IMPORTS: trace },
  });
  const urls = (await readFile(trace, 'utf8')).trim().split('\n');
  lastStatus = run.status;
  const packages = new Set<string>();
  const modules = new Set<string>();
  const builtins = new Set<string>();
  for (const url of urls) {
    if (url.startsWith('builtin:')) {
      builtins.add(url.slice('builtin:'.length));
      continue;
    }
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
  return { packages: [...packages].sort(), modules: [...modules].sort(), builtins: [...builtins].sort() };
}

describe('each command loads only what it runs', () => {
  it('the airlock command is the bundle, and its manifest names what each file holds', async () => {
    expect((await readFile(CLI, 'utf8')).split('\n')[1]).toMatch(/^\/\/ Bundled by build\/bundle-cli\.mjs/);
    // cli.js only installs the code cache and requires the bundle's entry, cli.cjs.
    expect(bundled['cli.js']).toEqual([]);
    expect(bundled['cli.cjs']).toEqual(['src/cli.js']);
    // CommonJS output runs in strict mode only by its directive; the ES modules it is made from always did.
    for (const file of Object.keys(bundled).filter((f) => f.endsWith('.cjs'))) {
      const text = await readFile(path.join(REPO_ROOT, 'dist/src', file), 'utf8');
      expect(text.split('\n', 4), file).toContain('"use strict";');
      // ASCII only: V8 holds a loaded chunk's source as UTF-16 once one character is not Latin-1,
      // twice the heap for every chunk the broker keeps (build/bundle-cli.mjs, `charset`).
      expect(/[^\x00-\x7f]/.exec(text)?.[0], file).toBeUndefined();
    }
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
      expect(modules).toEqual(['src/cli.js', 'src/compile-cache.cjs', 'src/version.js']);
    }
  });

  it('airlock bridge loads the dependency-free bridge only', async () => {
    const { packages, modules } = await loaded(['bridge', path.join(dir, 'none.sock')]);
    expect(packages).toEqual([]);
    expect(modules).toEqual(['src/bridge.cjs', 'src/cli.js', 'src/compile-cache.cjs', 'src/version.js']);
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
      expect(packages, 'the SQL parser loads on the first postgres call').not.toContain('libpg-query');
    }
    expect((await loaded(['audit', 'verify', '--file', path.join(dir, 'audit.jsonl')])).packages).toEqual([]);
  });

  it("airlock stdio http loads the broker and the SDK but no other server's client library", async () => {
    const { packages, modules, builtins } = await loaded(['stdio', 'http', '--team', 'acme']);
    expect(modules).toContain('src/broker.js');
    expect(packages).toContain('@modelcontextprotocol/sdk');
    // The http client (and the model proxy) load on their first request, not to answer tools/list.
    expect(builtins).toContain('crypto'); // the audit chain's hashes: the trace sees built-ins
    for (const unneeded of ['http', 'https', 'tls', 'zlib', 'dns'])
      expect(builtins, unneeded).not.toContain(unneeded);
    expect(modules).not.toContain('servers/http/client.js');
    // Ajv checks elicitation answers only (src/transport/session.ts): loaded if one ever comes.
    for (const unneeded of [
      'pg',
      'libpg-query',
      '@octokit/rest',
      '@octokit/auth-app',
      '@napi-rs/keyring',
      'ajv',
    ])
      expect(packages, unneeded).not.toContain(unneeded);
  });

  it("loads a server's module only when a policy names it", async () => {
    const serverModules = (modules: string[]) =>
      modules.filter((m) => /^servers\/[^/]+\/index\.js$/.test(m)).map((m) => m.split('/')[1]);
    expect(serverModules((await loaded(['policy', 'check', path.join(dir, 'acme.yaml')])).modules)).toEqual([
      'http',
    ]);
    expect(lastStatus).toBe(0);
    expect(serverModules((await loaded(['policy', 'check', path.join(dir, 'data.yaml')])).modules)).toEqual([
      'postgres',
    ]);
    // stdio checks every team's policy (acme names http, data names postgres); none names git or github.
    expect(serverModules((await loaded(['stdio', 'http', '--team', 'acme'])).modules)).toEqual([
      'http',
      'postgres',
    ]);
    // The policy schema describes every server.
    expect(serverModules((await loaded(['policy', 'schema'])).modules)).toEqual([
      'git',
      'github',
      'http',
      'postgres',
    ]);
  });

  it('policy check validates a postgres policy without loading the SQL parser', async () => {
    const good = await loaded(['policy', 'check', path.join(dir, 'data.yaml')]);
    expect(lastStatus).toBe(0);
    expect(good.packages).not.toContain('libpg-query');
    // A mistake inside the tool entry (its schema is built when a policy lists the tool) is found at its place.
    const bad = path.join(dir, 'bad', 'data.yaml');
    await mkdir(path.dirname(bad), { recursive: true });
    await writeFile(
      bad,
      (await readFile(path.join(dir, 'data.yaml'), 'utf8'))
        .replace('[insert, update]', '[insert, upsert]')
        .replace('explain: {}', 'explain: { bogus: 1 }'),
    );
    const r = spawnSync(process.execPath, [CLI, 'policy', 'check', bad], {
      cwd: dir,
      encoding: 'utf8',
      env: { PATH: process.env.PATH },
    });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(
      /data\.yaml:10:\d+: [^\n]*statements\[1\]: must be one of: select, explain, insert/,
    );
    expect(r.stdout).toContain(
      'servers.postgres.tools.explain: unknown key "bogus" (allowed: rateLimit, approve)',
    );
  });
});
