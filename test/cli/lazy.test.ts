// Start-up cost is what a command loads: each command imports only what it runs (the bench,
// `npm run bench:startup`, measures the time; this checks the cause without asserting timings).
import { spawnSync } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../helpers/fixture.js';
import { emptyDir } from './helpers.js';

const TRACER = path.join(import.meta.dirname, 'trace-imports.mjs');
let dir: string;

beforeAll(async () => {
  dir = await emptyDir();
  await writeFile(
    path.join(dir, 'airlock.yaml'),
    `socketDir: ./run\nstateDir: ./state\npolicies: .\naudit:\n  file: ./audit.jsonl\n`,
  );
  await writeFile(path.join(dir, 'audit.jsonl'), '');
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
    const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1];
    if (pkg) packages.add(pkg);
    const mod = /\/dist\/(.+)$/.exec(url)?.[1];
    if (mod && !pkg) modules.add(mod);
  }
  return { packages: [...packages].sort(), modules: [...modules].sort() };
}

describe('each command loads only what it runs', () => {
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
});
