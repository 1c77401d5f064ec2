// Second build step (after tsc): bundles the `airlock` command, dist/src/cli.js, with rolldown.
//
// Why: start-up is mostly module loading. Unbundled, `policy check` resolves, reads and links some
// 200 files (zod alone is 94) and `stdio` about 400; one file per command plus a few shared chunks
// removes that per-file cost (bench/startup.ts shows the figures; README "Speed").
//
// What: dist/src/cli.js is replaced by the bundle's entry; every `import()` of a command stays a
// separate chunk under dist/src/chunks/, so each command still loads only what it runs. All other
// tsc output (dist/src/**, dist/servers/**) stays as it is: tests and library users import it.
// Packages that load files by path at run time stay external (resolved from node_modules as
// before): native addons, WebAssembly, worker threads, optional native bindings.
// dist/src/chunks/modules.json maps each emitted file to the modules it holds, so
// test/cli/lazy.test.ts can still tell which modules and packages a command loads.
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { build } from 'rolldown';

const root = path.resolve(import.meta.dirname, '..');
const srcDir = path.join(root, 'dist/src');
const entry = path.join(srcDir, 'cli.js');
const chunksDir = path.join(srcDir, 'chunks');
const BANNER = '// Bundled by build/bundle-cli.mjs from the tsc output of src/cli.ts; do not edit.';

/** Packages kept out of the bundle: they find files next to their own modules when they run. */
const EXTERNAL_PACKAGES = [
  '@napi-rs/keyring', // native addon
  'libpg-query', // WebAssembly file
  'pino', // transports run in worker threads loaded by path
  'pg', // optional pg-native binding
  'playwright-core', // demo only; drives a browser binary
];

const source = await readFile(entry, 'utf8');
if (source.startsWith('#!/usr/bin/env node\n' + BANNER)) {
  throw new Error(`${entry} is already a bundle: run tsc first (npm run build does both)`);
}
await rm(chunksDir, { recursive: true, force: true });

const isExternalPackage = (id) => EXTERNAL_PACKAGES.some((name) => id === name || id.startsWith(`${name}/`));

const output = await build({
  input: entry,
  platform: 'node',
  // The dependency-free bridge stays the very file `airlock-bridge` runs.
  external: (id) => isExternalPackage(id) || id === './bridge.cjs' || id.endsWith('/bridge.cjs'),
  logLevel: 'warn',
  output: {
    dir: srcDir,
    format: 'esm',
    entryFileNames: 'cli.js',
    chunkFileNames: 'chunks/[name]-[hash].js',
    // rolldown keeps the entry's `#!/usr/bin/env node` line above the banner.
    banner: BANNER,
    sourcemap: true,
  },
});

/** `src/cli.js`, `servers/http/index.js`, or `pkg:zod` for a file of a package. */
function moduleName(id) {
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(id);
  if (pkg) return `pkg:${pkg[1]}`;
  const rel = path.relative(path.join(root, 'dist'), id);
  return rel.startsWith('..') ? id : rel.split(path.sep).join('/');
}

const manifest = {};
for (const file of output.output) {
  if (file.type !== 'chunk') continue;
  manifest[file.fileName] = [...new Set(file.moduleIds.map(moduleName))].sort();
}
await writeFile(path.join(chunksDir, 'modules.json'), JSON.stringify(manifest, null, 2) + '\n');
