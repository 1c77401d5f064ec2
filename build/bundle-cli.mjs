// Second build step (after tsc): bundles the `airlock` command with rolldown, then writes the
// bundle's V8 code cache.
//
// Why: start-up is mostly module loading. Unbundled, `policy check` resolves, reads and links some
// 200 files (zod alone is 94) and `stdio` about 400; one file per command plus a few shared chunks
// removes that per-file cost. What remains is mostly V8 parsing and lazily compiling the bundle,
// which a code cache removes (bench/startup.ts shows the figures; README "Speed").
//
// What: the bundle is CommonJS (Node 20 can use a code cache only for scripts, not ES modules):
// dist/src/cli.cjs is the entry (the `airlock` command; it first installs src/compile-cache.cts)
// and every `import()` of a command stays a separate chunk under dist/src/chunks/, so each command
// still loads only what it runs. tsc's dist/src/cli.js becomes a forwarder to cli.cjs. All other
// tsc output (dist/src/**, dist/servers/**) stays as it is: tests and library users import it.
// Packages that load files by path at run time stay external (resolved from node_modules as
// before): native addons, WebAssembly, worker threads, optional native bindings.
// Then each chunk gets `<file>.v8cache`: the commands below (their stdio sessions with a call or
// two) are run once with the cache recording (build/compile-cache-training.mjs), so it holds the
// functions they compile too.
// dist/src/chunks/modules.json maps each emitted file to the modules it holds, so
// test/cli/lazy.test.ts can still tell which modules and packages a command loads.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
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
  'pg', // optional pg-native binding
  'playwright-core', // demo only; drives a browser binary
];

const source = await readFile(entry, 'utf8');
if (source.startsWith('#!/usr/bin/env node\n' + BANNER)) {
  throw new Error(`${entry} is already a bundle: run tsc first (npm run build does both)`);
}
await rm(chunksDir, { recursive: true, force: true });

const isExternalPackage = (id) => EXTERNAL_PACKAGES.some((name) => id === name || id.startsWith(`${name}/`));

// The SDK's server/index.js imports its Ajv provider (Ajv and ajv-formats, ~1,000 lines evaluated
// at load) for one use: `new AjvJsonSchemaValidator()` when a Server is made without a validator,
// which Airlock never does (src/transport/session.ts passes one that loads Ajv on first use).
// In the bundle that import is this module, which loads the real provider only if constructed.
const LAZY_AJV_PROVIDER = '\0airlock:sdk-ajv-provider';
const lazyAjvProvider = {
  name: 'airlock-lazy-sdk-ajv-provider',
  resolveId(source, importer) {
    if (
      source === '../validation/ajv-provider.js' &&
      /@modelcontextprotocol\/sdk\/dist\/esm\/server\/index\.js$/.test(importer ?? '')
    )
      return LAZY_AJV_PROVIDER;
    return null;
  },
  load(id) {
    if (id !== LAZY_AJV_PROVIDER) return null;
    return `import { createRequire } from 'node:module';
export class AjvJsonSchemaValidator {
  constructor(ajv) {
    const real = createRequire(__filename)('@modelcontextprotocol/sdk/validation/ajv');
    return new real.AjvJsonSchemaValidator(ajv);
  }
}
`;
  },
};

const output = await build({
  input: entry,
  platform: 'node',
  // The dependency-free bridge stays the very file `airlock-bridge` runs.
  external: (id) => isExternalPackage(id) || id === './bridge.cjs' || id.endsWith('/bridge.cjs'),
  logLevel: 'warn',
  plugins: [lazyAjvProvider],
  output: {
    dir: srcDir,
    format: 'cjs',
    entryFileNames: 'cli.cjs',
    chunkFileNames: 'chunks/[name]-[hash].cjs',
    // import() of a package becomes require(): a script compiled with a code cache (vm.Script)
    // cannot import() without an experimental loader flag. Every external is CommonJS.
    dynamicImportInCjs: false,
    // Strict mode, as the ES modules it is made from (and the ESM bundle it replaced) ran in.
    strict: true,
    banner: BANNER,
    // Before the entry requires its first chunk: chunks compile with their code cache.
    intro: (chunk) =>
      chunk.isEntry
        ? 'require("./compile-cache.cjs").install([require("path").join(__dirname, "chunks")]);'
        : '',
    sourcemap: true,
    // V8 keeps every loaded chunk's source in the heap for lazy compilation, as UTF-16 when one
    // character is not Latin-1 (a '—' in a message): ASCII escapes and no JSDoc keep them one
    // byte a character and ~18 % shorter (~1.5 MiB less heap for `serve`; stack traces map back
    // through the source maps).
    charset: 'ascii',
    comments: false,
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
  // Not rolldown's own helpers (`\0rolldown/runtime.js`): no module of ours or of a package.
  const ids = file.moduleIds.filter((id) => !id.startsWith('\0'));
  manifest[file.fileName] = [...new Set(ids.map(moduleName))].sort();
}
manifest['cli.js'] = []; // the command itself (below) holds no module of the bundle
await writeFile(path.join(chunksDir, 'modules.json'), JSON.stringify(manifest, null, 2) + '\n');

for (const file of output.output) {
  if (file.type !== 'chunk') continue;
  // A dynamic import left in the bundle would fail under the code cache (see dynamicImportInCjs).
  const code = await readFile(path.join(srcDir, file.fileName), 'utf8');
  if (/(?<![\w$.'"@{])import\s*\(\s*['"`\w]/.test(code.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '')))
    throw new Error(`${file.fileName} still has an import(): every package it imports must be CommonJS`);
}

await rm(entry + '.map', { force: true }); // tsc's, of the file replaced here
// `node dist/src/cli.js` (the path the docs and older setups use) still runs the command; the
// installed `airlock` is cli.cjs itself (package.json bin), which skips the ES module loader.
await writeFile(
  entry,
  `#!/usr/bin/env node
${BANNER}
// The command is cli.cjs (it runs main() when it is process.argv[1]).
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
process.argv[1] = require.resolve('./cli.cjs');
require('./cli.cjs');
`,
);

// The code cache, trained on the commands users start most (each run adds what it compiled),
// and in the stdio sessions on a first call of each server (against a loopback stand-in that
// answers every request with a small JSON body or a GitHub-style 404), so a session's first call
// does not compile the call path either.
const work = mkdtempSync(path.join(os.tmpdir(), 'airlock-cache-training-'));
const upstream = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const github = req.url.startsWith('/repos/');
    res.writeHead(github ? 404 : 200, { 'content-type': 'application/json' });
    res.end(github ? '{"message":"Not Found"}' : '{"ok":true}');
  });
});
await new Promise((resolve) => upstream.listen(0, '127.0.0.1', resolve));
try {
  for (const { args, calls } of trainingCommands(work, `http://127.0.0.1:${upstream.address().port}`)) {
    const run = await train(args, calls);
    if (run.status !== 0 && !(args[0] === 'doctor' && run.status === 1))
      // doctor: 1 = problems found
      throw new Error(
        `training run \`airlock ${args.join(' ')}\` exited ${run.status ?? run.signal}:\n${run.stderr}`,
      );
  }
} finally {
  upstream.close();
  await rm(work, { recursive: true, force: true });
}

/**
 * One training run of `airlock ARGS…`. With `calls` (an MCP session over stdio): the handshake,
 * then each tools/call once its answer to the one before has come; stdin closes after the last.
 */
function train(args, calls) {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [path.join(import.meta.dirname, 'compile-cache-training.mjs'), entry, ...args],
      {
        cwd: work,
        env: {
          PATH: process.env.PATH,
          HOME: work,
          AIRLOCK_TRAINING_TOKEN: 'training-token-value',
          AIRLOCK_TRAINING_PG: 'postgres://training:training-password@127.0.0.1:1/none',
        },
        timeout: 60_000,
      },
    );
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ status, signal, stderr }));
    if (!calls) return child.stdin.end();
    const send = (m) => child.stdin.write(JSON.stringify({ jsonrpc: '2.0', ...m }) + '\n');
    const queue = [
      {
        id: 1,
        method: 'initialize',
        params: {
          protocolVersion: '2025-06-18',
          capabilities: {},
          clientInfo: { name: 'build', version: '0' },
        },
      },
      { id: 2, method: 'tools/list', params: {} },
      ...calls.map((params, n) => ({ id: 3 + n, method: 'tools/call', params })),
    ];
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      for (let nl = out.indexOf('\n'); nl >= 0; nl = out.indexOf('\n')) {
        const answered = JSON.parse(out.slice(0, nl)).id;
        out = out.slice(nl + 1);
        if (answered === 1) send({ method: 'notifications/initialized' });
        if (answered !== queue[0]?.id) continue;
        queue.shift();
        if (queue.length) send(queue[0]);
        else child.stdin.end();
      }
    });
    send(queue[0]);
  });
}

/** The commands whose compiled functions go into the cache, in a throwaway installation. */
function trainingCommands(dir, origin) {
  mkdirSync(path.join(dir, 'policies'));
  mkdirSync(path.join(dir, 'audit'));
  writeFileSync(path.join(dir, 'audit/audit.jsonl'), '');
  writeFileSync(
    path.join(dir, 'airlock.yaml'),
    'socketDir: ./run\nstateDir: ./state\npolicies: ./policies\naudit:\n  file: ./audit/audit.jsonl\n' +
      'secrets:\n  tok: { env: AIRLOCK_TRAINING_TOKEN }\n  pg: { env: AIRLOCK_TRAINING_PG }\n',
  );
  writeFileSync(
    path.join(dir, 'policies/team.yaml'),
    `team: team
servers:
  http:
    hosts:
      - origin: ${origin}
        methods: [GET]
        allowPrivateAddress: true
        inject: { header: Authorization, value: "Bearer \${secret:tok}" }
    tools:
      http_request: {}
  github:
    credential: tok
    apiUrl: ${origin}
    repos: ['acme/*']
    tools:
      get_issue: {}
      create_pull_request: { base: ['main'], head: ['agent/*'], draft: required }
  postgres:
    databases:
      app: { connection: pg, tables: ['public.*'] }
    tools:
      query: {}
      list_tables: {}
  git:
    workspaces:
      app: { path: ${path.join(dir, 'workspace')}, remote: ${origin}/acme/app.git }
    tools:
      git_status: {}
      git_diff: {}
`,
  );
  const config = ['--config', path.join(dir, 'airlock.yaml')];
  const call = (name, args) => ({ name, arguments: args });
  // Per server: an allowed call, then one the policy denies.
  const calls = {
    http: [
      call('http_request', { method: 'GET', url: `${origin}/training` }),
      call('http_request', { method: 'GET', url: 'https://elsewhere.example/' }),
    ],
    github: [
      call('get_issue', { owner: 'acme', repo: 'app', number: 1 }),
      call('get_issue', { owner: 'other', repo: 'app', number: 1 }),
    ],
    postgres: [
      call('query', { database: 'app', sql: 'SELECT 1' }),
      call('query', { database: 'app', sql: 'DELETE FROM t' }),
    ],
    // Denied (a workspace the policy does not name): no git process, no clone of the stand-in.
    git: [call('git_status', { workspace: 'other' }), call('git_diff', { workspace: 'other' })],
  };
  return [
    { args: ['--help'] },
    { args: ['--version'] },
    { args: ['policy', 'check', ...config] },
    { args: ['audit', 'verify', ...config] },
    { args: ['doctor', ...config] }, // finds problems here (no database, no git remote): it still runs every check
    ...['http', 'github', 'postgres', 'git'].map((server) => ({
      args: ['stdio', server, '--team', 'team', ...config],
      calls: calls[server],
    })),
  ];
}
