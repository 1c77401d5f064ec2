// src/compile-cache.cts: the bundled command's files compile with the V8 code cache the build
// wrote beside them, and a cache that does not belong to the file's exact source is never used.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/fixture.js';
import { emptyDir } from './helpers.js';

const LOADER = path.join(REPO_ROOT, 'dist/src/compile-cache.cjs');
const DIST_SRC = path.join(REPO_ROOT, 'dist/src');
let dir: string;

beforeAll(async () => {
  dir = await emptyDir();
  await mkdir(path.join(dir, 'lib'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * Runs `main` (a .cjs file) in a fresh node with the loader installed for its folder (`record`:
 * caches written at exit); prints what main printed, then the loader's used/rejected lists.
 */
function runWithLoader(main: string, record = false, args: string[] = [], nodeFlags: string[] = []) {
  const script = `
    const cache = require(${JSON.stringify(LOADER)}).install([${JSON.stringify(path.dirname(main))}], ${record});
    process.on('exit', () => {
      if (${record}) cache.writeCaches();
      process.stdout.write('\\n' + JSON.stringify({ used: cache.used, rejected: cache.rejected }));
    });
    require(${JSON.stringify(main)});`;
  const r = spawnSync(process.execPath, [...nodeFlags, '-e', script, ...args], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  expect(r.status, r.stderr).toBe(0);
  const lines = r.stdout.split('\n');
  return { out: lines.slice(0, -1).join('\n').trimEnd(), ...JSON.parse(lines.at(-1)!) } as {
    out: string;
    used: string[];
    rejected: string[];
  };
}

describe('the code cache', () => {
  it('is used for the file it was made from; an edited file compiles afresh and runs as edited', async () => {
    const file = path.join(dir, 'lib/a.cjs');
    await writeFile(
      file,
      `#!/usr/bin/env node\nconst f = (x) => x * 2;\nconsole.log('a', f(21), __filename === ${JSON.stringify(file)}, typeof require.resolve);\n`,
    );
    const first = runWithLoader(file, true);
    expect(first).toEqual({ out: 'a 42 true function', used: [], rejected: [] });
    expect((await readFile(file + '.v8cache')).length).toBeGreaterThan(32);

    expect(runWithLoader(file)).toEqual({ out: 'a 42 true function', used: ['a.cjs'], rejected: [] });

    // Same length, other code: V8's own check (the source's length) would take the old bytecode.
    await writeFile(file, (await readFile(file, 'utf8')).replace('x * 2', 'x + 2'));
    expect(runWithLoader(file)).toEqual({ out: 'a 23 true function', used: [], rejected: [] });
  });

  it('a cache V8 cannot use is rejected and the file still runs', async () => {
    const file = path.join(dir, 'lib/b.cjs');
    await writeFile(file, `console.log('b', require('./c.cjs'));\n`);
    await writeFile(path.join(dir, 'lib/c.cjs'), `module.exports = 7;\n`);
    runWithLoader(file, true);
    // The right digest in front of data from another file: V8 refuses it (length/flags mismatch).
    const own = await readFile(file + '.v8cache');
    const other = await readFile(path.join(dir, 'lib/c.cjs.v8cache'));
    await writeFile(file + '.v8cache', Buffer.concat([own.subarray(0, 32), other.subarray(32)]));
    // After one refusal the others are not tried (V8 refuses for its version or flags, all alike).
    expect(runWithLoader(file)).toEqual({ out: 'b 7', used: [], rejected: ['b.cjs'] });
  });

  it('under other V8 flags (NODE_OPTIONS=--max-old-space-size=…) the files compile as usual', async () => {
    const file = path.join(dir, 'lib/g.cjs');
    await writeFile(file, `console.log('g', require('./h.cjs'));\n`);
    await writeFile(path.join(dir, 'lib/h.cjs'), `module.exports = 8;\n`);
    runWithLoader(file, true);
    expect(runWithLoader(file)).toEqual({ out: 'g 8', used: ['g.cjs', 'h.cjs'], rejected: [] });
    expect(runWithLoader(file, false, [], ['--max-old-space-size=200'])).toEqual({
      out: 'g 8',
      used: [],
      rejected: ['g.cjs'],
    });
  });

  it('files outside the given folders, and not .cjs, are left to Node', async () => {
    await mkdir(path.join(dir, 'lib/sub'));
    await writeFile(path.join(dir, 'lib/sub/d.cjs'), `module.exports = 'd';\n`);
    await writeFile(path.join(dir, 'lib/e.js'), `module.exports = 'e';\n`);
    const file = path.join(dir, 'lib/f.cjs');
    await writeFile(file, `console.log(require('./sub/d.cjs'), require('./e.js'));\n`);
    runWithLoader(file, true);
    const { out, used } = runWithLoader(file);
    expect(out).toBe('d e');
    expect(used).toEqual(['f.cjs']);
  });

  it('airlock doctor says whether the command started from its cache, and why not', async () => {
    const home = path.join(dir, 'doctor');
    await mkdir(path.join(home, 'policies'), { recursive: true });
    await writeFile(
      path.join(home, 'airlock.yaml'),
      'socketDir: ./run\nstateDir: ./state\npolicies: ./policies\naudit:\n  file: ./audit/audit.jsonl\n',
    );
    const doctor = (env: Record<string, string> = {}) =>
      spawnSync(
        process.execPath,
        [path.join(DIST_SRC, 'cli.cjs'), 'doctor', '--config', path.join(home, 'airlock.yaml')],
        {
          encoding: 'utf8',
          timeout: 30_000,
          env: { PATH: process.env.PATH, ...env },
        },
      ).stdout;
    expect(doctor()).toMatch(/^\[ ok \] start-up code cache — \d+ files compiled from it$/m);
    expect(doctor({ NODE_OPTIONS: '--max-old-space-size=300' })).toMatch(
      /^\[warn\] start-up code cache — refused by this Node .*NODE_OPTIONS/m,
    );
  });

  it("the build's cache is accepted by this Node for the chunks a command loads", () => {
    // What the bundle's entry does first (its intro), observed from a loader installed before it.
    const chunks = path.join(DIST_SRC, 'chunks');
    const cli = path.join(DIST_SRC, 'cli.cjs');
    expect(readFileSync(cli, 'utf8')).toContain('require("./compile-cache.cjs").install(');
    const script = `
      const cache = require(${JSON.stringify(LOADER)}).install([${JSON.stringify(chunks)}]);
      process.on('exit', () => process.stderr.write(JSON.stringify({ used: cache.used, rejected: cache.rejected })));
      process.argv = [process.argv[0], ${JSON.stringify(cli)}, 'policy', 'schema'];
      require(${JSON.stringify(cli)});`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toHaveProperty('$schema'); // the command ran
    const { used, rejected } = JSON.parse(r.stderr) as { used: string[]; rejected: string[] };
    expect(rejected).toEqual([]);
    expect(used.length).toBeGreaterThan(3);
    expect(used.every((f) => f.endsWith('.cjs'))).toBe(true);
  });
});
