// Runs one `airlock` command (build/bundle-cli.mjs's training runs) with src/compile-cache.cts
// recording, and at exit writes V8's data for every bundle file the command compiled. A cache a
// file already has is used and extended, so the runs add up.
//   node build/compile-cache-training.mjs dist/src/cli.cjs ARGS…
import { createRequire } from 'node:module';
import path from 'node:path';
import process from 'node:process';

const require = createRequire(import.meta.url);
const [cli, ...args] = process.argv.slice(2);
const dir = path.dirname(path.resolve(cli));
// Installed first, so the entry's own install() (its first line) finds this one recording.
const cache = require(path.join(dir, 'compile-cache.cjs')).install([path.join(dir, 'chunks')], true);
process.on('exit', () => cache.writeCaches());
// As if `airlock ARGS…` had been run: cli.cjs runs main() when argv[1] is the command.
const entry = path.join(dir, 'cli.cjs');
process.argv = [process.argv[0], entry, ...args];
require(entry);
