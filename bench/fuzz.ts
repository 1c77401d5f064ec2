// Fuzzing of the parsers that face the agent or an upstream, for a bounded time: JSON-RPC framing
// (NdjsonTransport), every tool's arguments through its zod schema, the model proxy's SSE stream
// scrubber and usage tap, git porcelain status parsing, and SQL classification. Inputs are
// fast-check generated: valid shapes, mutations of them (bytes flipped, cut, spliced, repeated)
// and noise. A target fails on any exception other than the refusal it is meant to give, or on a
// broken promise (a secret that comes back out, an answer that is not JSON); fast-check shrinks
// the input and it is printed, to be turned into a regression test (none found so far; see README
// "Reliability"). Prints the count of inputs per target.
//
//   npm run build && FUZZ_SECONDS=60 node dist/bench/fuzz.js [target…]
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { MAX_FRAME_BYTES, NdjsonTransport } from '../src/transport/ndjson.js';
import { SERVERS } from '../src/servers.js';
import { StreamScrubber, UsageTap } from '../src/model/proxy.js';
import { Redactor } from '../src/secrets/redact.js';
import { parseStatusPorcelainV2 } from '../servers/git/tools.js';
import { analyzeSql, loadSqlParser, SqlRefusal } from '../servers/postgres/sql.js';
import { checkStatic } from '../servers/postgres/rules.js';
import { databaseSchema } from '../servers/postgres/section.js';
import { sqlText } from '../test/properties/sql-grammar.js';

const TOTAL_SECONDS = Number(process.env.FUZZ_SECONDS ?? 60);

/** Mutations of a valid text: flip, drop, duplicate or insert characters; cut; splice another. */
function mutated(base: fc.Arbitrary<string>): fc.Arbitrary<string> {
  const edit = fc.oneof(
    fc.record({
      op: fc.constant('flip' as const),
      at: fc.nat(),
      ch: fc.string({ minLength: 1, maxLength: 1, unit: 'binary' }),
    }),
    fc.record({ op: fc.constant('drop' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 8 }) }),
    fc.record({ op: fc.constant('dup' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 16 }) }),
    fc.record({ op: fc.constant('cut' as const), at: fc.nat() }),
    fc.record({
      op: fc.constant('insert' as const),
      at: fc.nat(),
      text: fc.constantFrom(
        '"',
        '{',
        '}',
        '[',
        ']',
        ',',
        ':',
        '\\',
        '\\u0000',
        '\0',
        '\n',
        '\r',
        '\u2028',
        '\ud800',
        '$$',
        '/*',
        '--',
        ';',
        "'",
        '%',
        '\t',
      ),
    }),
  );
  return fc.tuple(base, fc.array(edit, { maxLength: 4 })).map(([text, edits]) => {
    let s = text;
    for (const e of edits) {
      const at = s.length ? e.at % (s.length + 1) : 0;
      if (e.op === 'flip') s = s.slice(0, at) + e.ch + s.slice(at + 1);
      else if (e.op === 'drop') s = s.slice(0, at) + s.slice(at + e.n);
      else if (e.op === 'dup') s = s.slice(0, at) + s.slice(at, at + e.n).repeat(2) + s.slice(at + e.n);
      else if (e.op === 'cut') s = s.slice(0, at);
      else s = s.slice(0, at) + e.text + s.slice(at);
    }
    return s;
  });
}

// --- JSON-RPC framing -------------------------------------------------------------------------

/** `bytes` cut at the given points (each taken modulo its length + 1), as a stream would deliver it. */
function splitAt(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let last = 0;
  for (const p of points) {
    chunks.push(bytes.subarray(last, p));
    last = p;
  }
  chunks.push(bytes.subarray(last));
  return chunks;
}

const jsonId = fc.oneof(
  fc.integer(),
  fc.string({ maxLength: 8 }),
  fc.constant(null),
  fc.boolean(),
  fc.double(),
  fc.constant({}),
  fc.constant([]),
);
const validFrame = fc
  .record({
    id: jsonId,
    method: fc.constantFrom(
      'initialize',
      'tools/list',
      'tools/call',
      'ping',
      'notifications/initialized',
      'unknown/method',
      '',
    ),
    params: fc.oneof(
      fc.constant(undefined),
      fc.jsonValue({ maxDepth: 3 }),
      fc.record({ name: fc.string(), arguments: fc.jsonValue({ maxDepth: 3 }) }),
    ),
    jsonrpc: fc.constantFrom('2.0', '2.0', '1.0', 2, undefined),
  })
  .map((m) => JSON.stringify(m));
const frameText = fc.oneof(
  validFrame,
  mutated(validFrame),
  fc.array(validFrame, { minLength: 1, maxLength: 4 }).map((b) => `[${b.join(',')}]`), // a batch
  fc.integer({ min: 1, max: 200 }).map((n) => '['.repeat(n) + ']'.repeat(n)),
  fc.integer({ min: 1, max: 200 }).map((n) => '{"a":'.repeat(n) + '1' + '}'.repeat(n)),
  fc.string({ unit: 'binary', maxLength: 200 }),
);
/** A byte stream: frames joined by newlines (sometimes missing), cut into chunks anywhere. */
const frameStream = fc
  .tuple(
    fc.array(fc.tuple(frameText, fc.constantFrom('\n', '\r\n', '', '\n\n')), { minLength: 1, maxLength: 8 }),
    fc.array(fc.nat(), { maxLength: 6 }),
    fc.uint8Array({ maxLength: 64 }),
  )
  .map(([frames, cuts, noise]) => {
    const bytes = Buffer.concat([
      Buffer.from(frames.map(([f, sep]) => f + sep).join('')),
      Buffer.from(noise),
    ]);
    return splitAt(bytes, cuts);
  });

async function framingOnce(chunks: Buffer[]): Promise<void> {
  const input = new PassThrough();
  const output = new PassThrough();
  let out = '';
  output.on('data', (d: Buffer) => (out += d.toString()));
  const transport = new NdjsonTransport(input, output, { maxFrameBytes: MAX_FRAME_BYTES });
  const errors: Error[] = [];
  transport.onerror = (e) => errors.push(e);
  transport.onmessage = () => undefined;
  await transport.start();
  for (const c of chunks) input.write(c);
  input.end();
  await new Promise((r) => setImmediate(r));
  await transport.close();
  for (const line of out.split('\n').filter(Boolean)) JSON.parse(line); // every answer is JSON
  if (errors.length) throw errors[0];
}

// --- tool arguments ---------------------------------------------------------------------------

const tools = (await SERVERS.all()).flatMap((s) => s.tools.map((t) => ({ server: s.name, tool: t })));
const toolArgs = fc.tuple(
  fc.nat({ max: tools.length - 1 }),
  fc.oneof(
    fc.jsonValue({ maxDepth: 4 }),
    fc.anything({
      maxDepth: 3,
      withNullPrototype: true,
      withObjectString: true,
      withBigInt: true,
      withDate: true,
      withMap: true,
      withSet: true,
      withTypedArray: true,
      withSparseArray: true,
      withBoxedValues: true,
    }),
  ),
  fc.array(fc.tuple(fc.nat(), fc.jsonValue({ maxDepth: 2 })), { maxLength: 6 }),
);

function toolArgsOnce([index, value, overrides]: [number, unknown, Array<[number, unknown]>]): void {
  const { tool } = tools[index]!;
  const keys = Object.keys((tool.input as { shape: Record<string, unknown> }).shape);
  // Known keys with random values, on top of the random value (when it is an object).
  const args: Record<string, unknown> =
    value && typeof value === 'object' && !Array.isArray(value) ? { ...(value as object) } : {};
  for (const [k, v] of overrides) if (keys.length) args[keys[k % keys.length]!] = v;
  for (const candidate of [value, args]) {
    const r = tool.input.safeParse(candidate);
    if (r.success) JSON.stringify(r.data);
  }
}

// --- the model proxy's stream scrubber and usage tap -------------------------------------------

const KEY = 'sk-ant-fuzz-0123456789abcdefABCDEF';
const sseStream = fc
  .tuple(
    fc.array(
      fc.oneof(
        fc
          .jsonValue({ maxDepth: 3 })
          .map((v) => `event: content_block_delta\ndata: ${JSON.stringify(v)}\n\n`),
        fc.constant(`data: {"type":"message_delta","usage":{"output_tokens":5}}\n\n`),
        fc.constant(`data: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":3}}}\n\n`),
        fc.constantFrom(
          KEY,
          Buffer.from(KEY).toString('base64'),
          Buffer.from(KEY).toString('hex'),
          encodeURIComponent(KEY),
          JSON.stringify(KEY).slice(1, -1),
        ),
        mutated(fc.constant('data: {"type":"x"}\n\n')),
        fc.string({ unit: 'binary', maxLength: 80 }),
      ),
      { maxLength: 10 },
    ),
    fc.array(fc.nat(), { maxLength: 8 }),
  )
  .map(([parts, cuts]) => {
    const bytes = Buffer.from(parts.join(''), 'latin1');
    return { chunks: splitAt(bytes, cuts), hasKey: parts.some((p) => p === KEY) };
  });

const redactor = new Redactor();
redactor.add(KEY);

function sseOnce({ chunks }: { chunks: Buffer[] }): void {
  const scrubber = new StreamScrubber(redactor, KEY);
  const tap = new UsageTap('sse');
  const out: Buffer[] = [];
  for (const c of chunks) {
    tap.feed(c);
    out.push(scrubber.push(c));
  }
  out.push(scrubber.flush());
  const text = Buffer.concat(out).toString('latin1');
  if (text.includes(KEY)) throw new Error('the key came out of the scrubber');
  new UsageTap('json').feed(Buffer.concat(chunks));
}

// --- git porcelain ----------------------------------------------------------------------------

const porcelainRecord = fc.oneof(
  fc.constantFrom(
    '# branch.oid (initial)',
    '# branch.oid 0123456789abcdef0123456789abcdef01234567',
    '# branch.head main',
    '# branch.ab +1 -2',
    '# branch.ab +x -y',
    '#',
  ),
  fc.string({ maxLength: 20 }).map((p) => `? ${p}`),
  fc.string({ maxLength: 20 }).map((p) => `1 .M N... 100644 100644 100644 abc def ${p}`),
  fc.string({ maxLength: 20 }).map((p) => `2 R. N... 100644 100644 100644 abc def R100 ${p}`),
  fc.string({ maxLength: 20 }).map((p) => `u UU N... 100644 100644 100644 100644 a b c ${p}`),
  fc.constantFrom('1', '2', 'u', '?', '1 ', ''),
);
const porcelain = fc.oneof(
  fc.array(porcelainRecord, { maxLength: 20 }).map((r) => r.join('\0')),
  mutated(fc.array(porcelainRecord, { maxLength: 10 }).map((r) => r.join('\0'))),
  fc.string({ unit: 'binary', maxLength: 300 }),
);

function porcelainOnce([text, ab]: [string, boolean]): void {
  const r = parseStatusPorcelainV2(text, ab);
  for (const f of r.files)
    if (typeof f.path !== 'string' || f.index.length !== 1) throw new Error('bad entry');
}

// --- SQL classification -----------------------------------------------------------------------

const readOnly = databaseSchema.parse({ connection: 'pg', tables: ['public.*'] });
const readWrite = databaseSchema.parse({ connection: 'pg', access: 'read-write', ddl: true });
const sql = fc.oneof(
  sqlText,
  mutated(sqlText),
  fc.string({ maxLength: 120 }),
  fc.string({ unit: 'binary', maxLength: 120 }),
);

function sqlOnce(text: string): void {
  try {
    const facts = analyzeSql(text);
    checkStatic('db', readOnly, facts);
    checkStatic('db', readWrite, facts);
  } catch (err) {
    if (!(err instanceof SqlRefusal)) throw err;
  }
}

// --- the run ----------------------------------------------------------------------------------

interface Target {
  name: string;
  run(ms: number, count: () => void): Promise<void>;
}
const sync =
  <T>(arb: fc.Arbitrary<T>, once: (v: T) => void) =>
  async (ms: number, count: () => void) =>
    fc.assert(
      fc.property(arb, (v) => {
        count();
        once(v);
      }),
      { numRuns: Number.MAX_SAFE_INTEGER, interruptAfterTimeLimit: ms, markInterruptAsFailure: false },
    );

const TARGETS: Target[] = [
  {
    name: 'json-rpc framing',
    run: (ms, count) =>
      fc.assert(
        fc.asyncProperty(frameStream, async (chunks) => {
          count();
          await framingOnce(chunks);
        }),
        { numRuns: Number.MAX_SAFE_INTEGER, interruptAfterTimeLimit: ms, markInterruptAsFailure: false },
      ),
  },
  { name: `tool arguments (${tools.length} tools)`, run: sync(toolArgs, toolArgsOnce) },
  { name: 'model SSE scrubber + usage tap', run: sync(sseStream, sseOnce) },
  { name: 'git porcelain status', run: sync(fc.tuple(porcelain, fc.boolean()), porcelainOnce) },
  { name: 'sql classification', run: sync(sql, sqlOnce) },
];

async function main(): Promise<void> {
  await loadSqlParser();
  const only = process.argv.slice(2);
  const targets = TARGETS.filter((t) => only.length === 0 || only.some((o) => t.name.includes(o)));
  const perTarget = (TOTAL_SECONDS * 1000) / targets.length;
  console.log(
    `fuzzing ${targets.length} targets for ${TOTAL_SECONDS} s (${(perTarget / 1000).toFixed(0)} s each)`,
  );
  let failed = false;
  let total = 0;
  for (const t of targets) {
    let n = 0;
    const started = performance.now();
    try {
      await t.run(perTarget, () => n++);
      console.log(
        `${t.name.padEnd(36)} ${String(n).padStart(9)} inputs, no failure (${((performance.now() - started) / 1000).toFixed(1)} s)`,
      );
    } catch (err) {
      failed = true;
      console.log(`${t.name.padEnd(36)} ${String(n).padStart(9)} inputs, FAILED:\n${(err as Error).message}`);
    }
    total += n;
  }
  console.log(`total ${total} inputs`);
  if (failed) process.exitCode = 1;
}

await main();
