// Redaction speed by number of registered secrets: the Redactor (src/secrets/redact.ts) against
// the single RegExp alternation of every form it used before, in the same process, on a short
// string (a log line) and on 75 KB of query output. The old way fell off a cliff past ~20 secrets
// (V8 stops compiling an alternation that large), and a broker minting GitHub App tokens keeps
// adding secrets.
//
//   npm run build && node dist/bench/redact.js [--secrets 1,3,10,30,100]
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { REDACTED, Redactor, secretVariants } from '../src/secrets/redact.js';

const { values } = parseArgs({ options: { secrets: { type: 'string', default: '1,3,10,30,100' } } });

/** The baseline: one alternation of every form, longest first (what Redactor.scrub did). */
function alternation(secrets: string[]): (text: string) => string {
  const forms = [...new Set(secrets.flatMap((v) => secretVariants(v)))].sort((a, b) => b.length - a.length);
  const pattern = new RegExp(forms.map((f) => f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g');
  return (text) => text.replace(pattern, REDACTED);
}

/** Mean ms per call of `f`, after a warm-up, for at least ~200 ms or `minReps` calls. */
function timeMs(f: () => void, minReps = 5): number {
  for (let i = 0; i < 3; i++) f();
  let reps = 0;
  const start = performance.now();
  while (reps < minReps || performance.now() - start < 200) {
    f();
    reps++;
  }
  return (performance.now() - start) / reps;
}

const line = 'GET /api/v1/items/4711?q=hello world HTTP/1.1 200 (3.2 ms)';
const output = Array.from(
  { length: 1000 },
  (_, i) => `${i}\tuser-${i}@example.com\t2024-01-${(i % 28) + 1}\tSome note text about row ${i}\n`,
).join('');

console.log(
  `redaction — node ${process.version}; a ${line.length}-char line, ${(output.length / 1024).toFixed(0)} KiB of rows`,
);
console.log('secrets  forms   line: alternation  redactor   ratio   rows: alternation  redactor   ratio');
for (const n of values.secrets.split(',').map(Number)) {
  const secrets = Array.from({ length: n }, () => randomBytes(18).toString('base64url'));
  const redactor = new Redactor();
  for (const s of secrets) redactor.add(s);
  const old = alternation(secrets);
  // Both must agree before their speed means anything.
  const sample = `${output.slice(0, 500)}${secrets[0]}${output.slice(500, 900)}`;
  if (old(sample) !== redactor.scrub(sample)) throw new Error('the redactor and the alternation disagree');
  const forms = new Set(secrets.flatMap((v) => secretVariants(v))).size;
  const lineOld = timeMs(() => old(line), 2000) * 1e6;
  const lineNew = timeMs(() => redactor.scrub(line), 2000) * 1e6;
  const rowsOld = timeMs(() => old(output));
  const rowsNew = timeMs(() => redactor.scrub(output));
  console.log(
    `${String(n).padStart(7)} ${String(forms).padStart(6)} ${`${lineOld.toFixed(0)} ns`.padStart(18)} ${`${lineNew.toFixed(0)} ns`.padStart(9)} ${`×${(lineNew / lineOld).toFixed(2)}`.padStart(7)} ${`${rowsOld.toFixed(3)} ms`.padStart(18)} ${`${rowsNew.toFixed(3)} ms`.padStart(9)} ${`×${(rowsNew / rowsOld).toFixed(2)}`.padStart(7)}`,
  );
}
