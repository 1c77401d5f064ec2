// The bundled `airlock` command's V8 code cache (build/bundle-cli.mjs writes it; this file reads it).
//
// Why: most of a command's start-up is V8 parsing and lazily compiling ~1.5 MB of bundled
// JavaScript; Node 20 has no compile cache for ES modules (module.enableCompileCache is Node 22).
// So the bundle is CommonJS, and each of its files is compiled here with the bytecode V8 made
// for it at build time, after running the commands it serves (bench/startup.ts shows the gain).
//
// Trust: a cache file sits beside the file it was made from, written by the build, so it is
// exactly as trusted as the code (nothing is cached at run time, in /tmp or anywhere a user other
// than the installer could write). V8 checks only its own version, its flags and the source's
// length, so each cache also holds the SHA-256 of the source it was made from and is used only
// for that exact source. Any mismatch — another Node version, other V8 flags, an edited file —
// compiles the file as Node would, so the cache can make start-up faster and never different.
// Dependency-free CommonJS, like the bridge: it runs before anything else is loaded.
/* eslint-disable @typescript-eslint/no-require-imports */
import crypto = require('node:crypto');
import fs = require('node:fs');
import Module = require('node:module');
import path = require('node:path');
import vm = require('node:vm');

/** `<file>.v8cache`: this many bytes of the source's SHA-256, then V8's cached data. */
const DIGEST_BYTES = 32;
export const CACHE_SUFFIX = '.v8cache';

/** Where the installed cache's state is kept (on `Module`; `airlock doctor` reads it there). */
const INSTALLED = Symbol.for('airlock.compileCache');

export interface CompileCache {
  /** Files compiled with their cache, and files whose cache V8 refused (compiled afresh). */
  used: string[];
  rejected: string[];
  /** With `record`: writes `<file>.v8cache` for every file compiled so far; returns how many. */
  writeCaches: () => number;
}

interface Compiled {
  script: vm.Script;
  file: string;
  digest: Buffer;
}

interface InternalModule {
  exports: unknown;
  require(id: string): unknown;
}

type CompileFn = (this: InternalModule, content: string, filename: string) => unknown;

/**
 * Compiles the CommonJS files directly in `dirs` through their caches. With `record`, remembers
 * every file it compiled so `writeCaches()` can store V8's data for them (the build's training
 * run). A second call returns the first one's (the folders and `record` of the first hold).
 */
export function install(dirs: string[], record = false): CompileCache {
  // Once per process: the bundle's entry installs it, and the build's training run before it.
  const holder = Module as unknown as { [INSTALLED]?: CompileCache };
  if (holder[INSTALLED]) return holder[INSTALLED];
  const used: string[] = [];
  const rejected: string[] = [];
  const compiled: Compiled[] = [];
  const roots = new Set(dirs.map((d) => path.resolve(d)));
  const proto = (Module as unknown as { prototype: { _compile: CompileFn } }).prototype;
  const wrap = (Module as unknown as { wrap(source: string): string }).wrap;
  const resolveFilename = (
    Module as unknown as {
      _resolveFilename(request: string, parent: InternalModule, isMain: boolean, options?: unknown): string;
    }
  )._resolveFilename;
  const original = proto._compile;
  proto._compile = function compile(this: InternalModule, content: string, filename: string): unknown {
    if (!filename.endsWith('.cjs') || !roots.has(path.dirname(filename)))
      return original.call(this, content, filename);
    // V8 refuses a cache made under another V8 version or other V8 flags (a --max-old-space-size in
    // NODE_OPTIONS is enough), so once it refuses one the others are not read and hashed for nothing.
    if (rejected.length > 0 && !record) return original.call(this, content, filename);
    // A shebang line is not JavaScript inside the function wrapper (Node strips it the same way).
    const source = wrap(content.startsWith('#!') ? '//' + content : content);
    const digest = crypto.createHash('sha256').update(content).digest();
    let cachedData: Buffer | undefined;
    try {
      const file = fs.readFileSync(filename + CACHE_SUFFIX);
      if (file.length > DIGEST_BYTES && file.subarray(0, DIGEST_BYTES).equals(digest))
        cachedData = file.subarray(DIGEST_BYTES);
    } catch {
      // No cache for this file: compiled as usual.
    }
    const script = new vm.Script(source, { filename, cachedData });
    if (cachedData) (script.cachedDataRejected ? rejected : used).push(path.basename(filename));
    if (record) compiled.push({ script, file: filename + CACHE_SUFFIX, digest });
    const fn = script.runInThisContext({ displayErrors: true }) as (...args: unknown[]) => unknown;
    // What Node's own loader passes as `require` (the bundle uses require(), .resolve and .cache).
    const moduleRequire = Object.assign((id: string) => this.require(id), {
      resolve: (request: string, options?: unknown) => resolveFilename(request, this, false, options),
      main: require.main,
      cache: (Module as unknown as { _cache: unknown })._cache,
    });
    return fn.call(this.exports, this.exports, moduleRequire, this, filename, path.dirname(filename));
  };
  return (holder[INSTALLED] = {
    used,
    rejected,
    writeCaches: () => {
      for (const c of compiled)
        fs.writeFileSync(c.file, Buffer.concat([c.digest, c.script.createCachedData()]));
      return compiled.length;
    },
  });
}
