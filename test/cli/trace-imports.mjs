// Preloaded with `node --import`: records every module the process loads, one URL per line, in the
// file named by AIRLOCK_TRACE_IMPORTS: what the ESM loader resolves (its hooks run on the loader's
// own thread) and what require() resolves (the bundled command is CommonJS: build/bundle-cli.mjs).
import { appendFileSync } from 'node:fs';
import Module, { register } from 'node:module';
import process from 'node:process';
import { pathToFileURL } from 'node:url';

register(
  'data:text/javascript,' +
    encodeURIComponent(`
import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(process.env.AIRLOCK_TRACE_IMPORTS, r.url + '\\n');
  return r;
}`),
);

const resolveFilename = Module._resolveFilename;
Module._resolveFilename = function (...args) {
  const file = resolveFilename.apply(this, args);
  appendFileSync(
    process.env.AIRLOCK_TRACE_IMPORTS,
    (file.startsWith('/') ? pathToFileURL(file).href : file) + '\n',
  );
  return file;
};

// Node's built-in modules do not pass through either hook when the bundle requires them: at exit,
// the ones Node loaded (`builtin:https`), less those a bare `node` has already loaded at start.
const atStart = new Set(process.moduleLoadList);
process.on('exit', () => {
  const names = process.moduleLoadList
    .filter((entry) => !atStart.has(entry) && entry.startsWith('NativeModule '))
    .map((entry) => `builtin:${entry.slice('NativeModule '.length)}\n`);
  appendFileSync(process.env.AIRLOCK_TRACE_IMPORTS, names.join(''));
});
