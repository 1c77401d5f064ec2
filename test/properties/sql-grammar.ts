// A small SQL grammar for fast-check, over a database of two tables (public.a, public.b) and a
// sequence (public.s): reads built from allowlisted and harmful functions, joins, subqueries,
// CTEs (plain and data-modifying), row locks, SELECT INTO; data-modifying, DDL and utility
// statements; stacked statements; comments and dollar quoting between and inside the tokens.
// Used by the classifier property (postgres-classifier.property.test.ts) and bench/fuzz.ts.
import fc from 'fast-check';

export const GRAMMAR_SETUP_SQL = `
  CREATE TABLE public.a (id int PRIMARY KEY, v text);
  CREATE TABLE public.b (id int PRIMARY KEY, a_id int REFERENCES public.a(id), w numeric);
  CREATE SEQUENCE public.s;
  CREATE MATERIALIZED VIEW public.mv AS SELECT id FROM public.a;
  INSERT INTO public.a SELECT g, 'v' || g FROM generate_series(1, 10) g;
  INSERT INTO public.b SELECT g, 1 + g % 10, g * 1.5 FROM generate_series(1, 10) g;
`;

/**
 * Everything a statement could change, inside its transaction: rows, schema objects and columns,
 * sequences, large objects, comments, roles, databases and saved settings.
 */
export const GRAMMAR_FINGERPRINT_SQL = `
  SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
    SELECT 'a:' || md5(coalesce(string_agg(t::text, ',' ORDER BY id), '')) FROM public.a t
    UNION ALL SELECT 'b:' || md5(coalesce(string_agg(t::text, ',' ORDER BY id), '')) FROM public.b t
    UNION ALL SELECT 's:' || last_value || is_called::text FROM public.s
    UNION ALL SELECT 'rel:' || n.nspname || '.' || c.relname || ':' || c.relkind::text || ':' || c.relispopulated::text
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
    UNION ALL SELECT 'col:' || attrelid::regclass::text || '.' || attname FROM pg_attribute
      WHERE attrelid IN ('public.a'::regclass, 'public.b'::regclass) AND attnum > 0 AND NOT attisdropped
    UNION ALL SELECT 'fn:' || p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    UNION ALL SELECT 'lo:' || count(*) FROM pg_largeobject_metadata
    UNION ALL SELECT 'comment:' || count(*) FROM pg_description WHERE objoid >= 16384
    UNION ALL SELECT 'role:' || rolname || ':' || rolsuper::text FROM pg_roles
    UNION ALL SELECT 'db:' || datname FROM pg_database
    UNION ALL SELECT 'setting:' || array_to_string(setconfig, ',') FROM pg_db_role_setting
  ) f(x)`;

const table = fc.constantFrom('a', 'public.a', 'b', 'public.b', '"a"', 'mv');
const column = fc.constantFrom('id', 'v', 'a.id', 'a.v', 'b.w', 'b.a_id', 't.id');
const literal = fc.oneof(
  fc.integer({ min: -5, max: 100 }).map(String),
  fc.constantFrom("'x'", "'it''s'", '$$dollar; DELETE FROM a$$', '$q$ ; DROP TABLE a; $q$', 'NULL', 'true'),
);
/** Functions on the allowlist, and functions with side effects a read must never reach. */
const safeFunction = fc.constantFrom('lower', 'upper', 'length', 'md5', 'abs', 'coalesce', 'concat', 'now');
const harmfulCall = fc.constantFrom(
  "nextval('public.s')",
  "setval('public.s', 42)",
  'pg_advisory_lock(1)',
  "set_config('app.x', '1', false)",
  "pg_notify('c', 'p')",
  'lo_create(0)',
  'txid_current()',
  'pg_terminate_backend(0)',
  "query_to_xml('DELETE FROM a', true, true, '')",
  "pg_catalog.setval('s', 7)",
  "pg_read_file('/etc/hostname')",
  "pg_catalog.lo_import('/etc/hostname')",
  '"nextval"(\'s\')',
);

/** An expression nesting at most `depth` more subqueries or calls. */
function expr(depth: number): fc.Arbitrary<string> {
  const leaves = [
    { weight: 4, arbitrary: literal },
    { weight: 4, arbitrary: column },
    { weight: 1, arbitrary: harmfulCall },
    { weight: 1, arbitrary: fc.constant('count(*)') },
  ];
  if (depth <= 0) return fc.oneof(...leaves);
  const inner = expr(depth - 1);
  return fc.oneof(
    { depthSize: 'small' },
    ...leaves,
    fc.tuple(safeFunction, inner).map(([f, e]) => `${f}(${e})`),
    fc
      .tuple(inner, fc.constantFrom('+', '||', '=', '<', 'AND'), inner)
      .map(([l, o, r]) => `(${l} ${o} ${r})`),
    select(depth - 1).map((q) => `(${q})`),
    select(depth - 1).map((q) => `EXISTS (${q})`),
    fc.tuple(inner, inner).map(([c, e]) => `CASE WHEN ${c} THEN ${e} ELSE NULL END`),
  );
}

function fromItem(depth: number): fc.Arbitrary<string> {
  const plain = [
    table.map((t) => `${t} t`),
    fc.constantFrom('generate_series(1, 3) t(id)', "nextval('s') t(id)", 'pg_advisory_lock(2) t(id)'),
    fc.tuple(table, table).map(([l, r]) => `${l} JOIN ${r} ON true`),
  ];
  if (depth <= 0) return fc.oneof(...plain);
  return fc.oneof(
    ...plain,
    select(depth - 1).map((q) => `(${q}) t`),
    fc.tuple(table, select(depth - 1)).map(([l, q]) => `${l} t, LATERAL (${q}) l`),
  );
}

/** A SELECT, optionally under a plain or data-modifying WITH, with row locks or INTO sometimes. */
function select(depth: number): fc.Arbitrary<string> {
  const body = fc
    .tuple(
      fc.array(expr(depth), { minLength: 1, maxLength: 3 }),
      fc.option(fromItem(depth), { nil: undefined }),
      fc.option(expr(depth), { nil: undefined }),
      fc.constantFrom(
        '',
        '',
        ' ORDER BY 1',
        ' LIMIT 2',
        ' GROUP BY 1',
        ' FOR UPDATE',
        ' FOR SHARE',
        ' INTO tmp_x',
      ),
    )
    .map(
      ([items, from, where, tail]) =>
        `SELECT ${items.join(', ')}${from ? ` FROM ${from}` : ''}${where ? ` WHERE ${where}` : ''}${tail}`,
    );
  const cte = fc.constantFrom(
    'SELECT id FROM a',
    'SELECT 1 AS id',
    'DELETE FROM b WHERE id = 3 RETURNING id',
    "INSERT INTO a VALUES (102, 'c') RETURNING id",
    "UPDATE a SET v = 'cte' WHERE id = 4 RETURNING id",
  );
  return fc.oneof(
    { weight: 3, arbitrary: body },
    { weight: 1, arbitrary: fc.tuple(cte, body).map(([c, q]) => `WITH m AS (${c}) ${q}`) },
  );
}

const write = fc.oneof(
  fc.constantFrom(
    "INSERT INTO a VALUES (100, 'w')",
    "UPDATE a SET v = 'u' WHERE id = 1",
    'DELETE FROM b WHERE id = 2',
    'DELETE FROM b',
    'TRUNCATE b',
    'CREATE TABLE c (x int)',
    'CREATE TEMP TABLE c (x int)',
    'DROP TABLE b',
    'ALTER TABLE a ADD COLUMN z int',
    'CREATE INDEX ON a (v)',
    "COMMENT ON TABLE a IS 'c'",
    'REFRESH MATERIALIZED VIEW mv',
    'DO $$BEGIN DELETE FROM b; END$$',
    'CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$SELECT 1$$',
    "SELECT setval('s', 9)",
    'CREATE TABLE c AS SELECT 1',
    'SELECT 1 INTO c',
    'VACUUM a',
    'ANALYZE a',
    'LOCK TABLE a',
    'NOTIFY c',
    "SET search_path = 'x'",
    'COPY a TO STDOUT',
    'PREPARE p AS DELETE FROM b',
    'CALL p()',
    'EXPLAIN ANALYZE DELETE FROM b',
    'EXPLAIN (ANALYZE) INSERT INTO a VALUES (101)',
    'EXPLAIN DELETE FROM b',
    'ALTER ROLE postgres SET work_mem = 1',
    'CREATE ROLE r',
    'SELECT lo_create(0)',
  ),
  fc
    .tuple(
      fc.constantFrom(
        'DELETE FROM b WHERE id = 3 RETURNING *',
        "INSERT INTO a VALUES (102, 'c') RETURNING *",
        "UPDATE a SET v = 'cte' WHERE id = 4 RETURNING *",
      ),
      expr(0),
    )
    .map(([w, e]) => `WITH m AS (${w}) SELECT ${e} FROM m`),
);

const read = fc.constantFrom(
  'TABLE a',
  'VALUES (1), (2)',
  'SELECT * FROM a NATURAL JOIN b',
  'EXPLAIN SELECT * FROM a',
  'EXPLAIN ANALYZE SELECT count(*) FROM b',
);

const statement = fc.oneof(
  { weight: 5, arbitrary: select(2) },
  { weight: 1, arbitrary: read },
  { weight: 3, arbitrary: write },
);

/** Whitespace, block and line comments between tokens. */
const separator = fc.constantFrom(
  ' ',
  ' ',
  ' ',
  '\n',
  ' /* c; DROP TABLE a */ ',
  ' -- x; DELETE FROM a\n',
  '\t',
);

/** Re-spaces a statement with random separators between its space-separated tokens. */
function respace(sql: string, seps: string[]): string {
  let i = 0;
  return sql.replace(/ /g, () => seps[i++ % seps.length]!);
}

/** One SQL text: a statement, sometimes several stacked, with comments and dollar quotes. */
export const sqlText: fc.Arbitrary<string> = fc
  .tuple(
    fc.oneof(
      { weight: 4, arbitrary: statement.map((one) => [one]) },
      fc.array(statement, { minLength: 2, maxLength: 3 }),
    ),
    fc.array(separator, { minLength: 1, maxLength: 6 }),
    fc.constantFrom('', ';', ' ;', '; -- trailing', ' /* end */'),
  )
  .map(([stmts, seps, end]) => respace(stmts.join('; '), seps) + end);
