// Resolves what a statement's names mean on this connection, inside the call's own transaction:
// unqualified relations, functions and types as the connection's search_path resolves them at
// that moment (current_schemas(true) inside the lookup, never guessed by the parser: a schema of
// the search_path created after the connection opened counts, as it does for Postgres), the relations and
// functions every user view reads (transitively), user-defined operators, and functions that
// attribute notation (`t.f` = `f(t)`) could call. One prepared statement per connection, run
// right after the BEGIN that opens the call's transaction.
import { CATALOG_SCHEMAS } from './functions.js';
import { displayName, type SqlFacts } from './sql.js';

export interface ResolvedRelation {
  schema: string;
  name: string;
  kind: string;
  /** The statement's INSERT/UPDATE/DELETE target. */
  written?: boolean;
}

export interface Resolution {
  relations: ResolvedRelation[];
  /** Relations read by the views above (and by views they read), with the view that reads them. */
  viewRelations: Array<ResolvedRelation & { view: string }>;
  viewFunctions: Array<{ schema: string; name: string; view: string }>;
  /** Per function as written (`name` or `schema.name`): the schemas that have a function of that name. */
  functionCandidates: Map<string, string[]>;
  userOperators: Array<{ name: string; operatorSchema: string; schema: string; functionName: string }>;
  /** Casts to types outside pg_catalog whose I/O is user code (base, range, multirange types). */
  userTypes: Array<{ schema: string; name: string }>;
  attributeFunctions: Array<{ schema: string; name: string }>;
  /** OIDs of the user views named (their dependencies come from viewDependencyQuery). */
  viewOids: number[];
}

const SYSTEM = `('pg_catalog', 'information_schema')`;

/** True when the statement names anything the catalog must resolve. */
export function needsResolution(facts: SqlFacts): boolean {
  return (
    facts.relations.length > 0 ||
    facts.functions.length > 0 ||
    facts.operators.length > 0 ||
    facts.attributeCalls.length > 0 ||
    facts.types.some((t) => t.schema !== 'pg_catalog')
  );
}

const pick = (catalog: string, alias: string, nameCol: string, nsCol: string, extra: string) => `
    SELECT ${extra} FROM ${catalog} ${alias} JOIN pg_namespace n ON n.oid = ${alias}.${nsCol}
      LEFT JOIN path pa ON pa.nsp = n.nspname
     WHERE ${alias}.${nameCol} = w.r AND CASE WHEN w.s = '' THEN pa.ord IS NOT NULL ELSE n.nspname = w.s END`;

/**
 * The lookup, built from the parts a statement needs (relations, functions, unqualified
 * operators, types, attribute names) and prepared once per connection per shape (planning it was
 * most of its cost; a part that is not needed is not executed at all), with the names as array
 * parameters: $1/$2 relation schemas/names, $3/$4 function schemas/names, $5 unqualified operator
 * names, $6/$7 type schemas/names, $8 attribute names. Every parameter is
 * declared text[] at Parse, so a shape that leaves some unused still parses.
 */
const PARTS = {
  rel: 1,
  func: 2,
  op: 4,
  type: 8,
  attr: 16,
} as const;

function resolutionSql(mask: number): string {
  const has = (bit: number) => (mask & bit) !== 0;
  // The search path as Postgres searches it now: implicit pg_catalog and pg_temp included, and
  // only schemas that exist ("$user" once that schema is created).
  const ctes = [
    `path AS (SELECT nsp::text, ord FROM unnest(pg_catalog.current_schemas(true)) WITH ORDINALITY AS p(nsp, ord))`,
  ];
  const selects: string[] = [];
  if (has(PARTS.rel)) {
    ctes.push(
      `wanted AS (SELECT s, r, i FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(s, r, i))`,
      `rel AS (SELECT w.i, x.* FROM wanted w CROSS JOIN LATERAL (${pick(
        'pg_class',
        'c',
        'relname',
        'relnamespace',
        `c.oid, n.nspname::text AS nsp, c.relname::text AS relname, c.relkind::text AS relkind`,
      )} ORDER BY pa.ord NULLS LAST LIMIT 1) x)`,
    );
    selects.push(
      `SELECT 'rel'::text, i::text, nsp, relname, relkind FROM rel`,
      `SELECT 'view', oid::text, nsp, relname, relkind FROM rel WHERE relkind IN ('v', 'm') AND nsp NOT IN ${SYSTEM}`,
    );
  }
  if (has(PARTS.func)) {
    ctes.push(
      `wantedf AS (SELECT s, r, i FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS w(s, r, i))`,
    );
    selects.push(
      `SELECT DISTINCT 'func'::text, w.i::text, x.nsp, '', '' FROM wantedf w CROSS JOIN LATERAL (${pick(
        'pg_proc',
        'p',
        'proname',
        'pronamespace',
        'n.nspname::text AS nsp',
      )} OFFSET 0) x`,
    );
  }
  if (has(PARTS.op))
    selects.push(`SELECT DISTINCT 'op'::text, x.* FROM unnest($5::text[]) AS w(op) CROSS JOIN LATERAL (
    SELECT o.oprname::text, n.nspname::text, pn.nspname::text, p.proname::text
      FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace JOIN path pa ON pa.nsp = n.nspname
      JOIN pg_proc p ON p.oid = o.oprcode JOIN pg_namespace pn ON pn.oid = p.pronamespace
     WHERE o.oprname = w.op::name AND n.nspname <> 'pg_catalog' OFFSET 0) x`);
  if (has(PARTS.type)) {
    ctes.push(
      `wantedt AS (SELECT s, r, i FROM unnest($6::text[], $7::text[]) WITH ORDINALITY AS w(s, r, i))`,
    );
    selects.push(
      `SELECT 'type'::text, w.i::text, x.nsp, x.typname, x.typtype FROM wantedt w CROSS JOIN LATERAL (${pick(
        'pg_type',
        't',
        'typname',
        'typnamespace',
        `n.nspname::text AS nsp, t.typname::text AS typname, t.typtype::text AS typtype`,
      )} ORDER BY pa.ord NULLS LAST LIMIT 1) x`,
    );
  }
  if (has(PARTS.attr))
    selects.push(`SELECT DISTINCT 'attr'::text, x.*, '', '' FROM unnest($8::text[]) AS w(r) CROSS JOIN LATERAL (
    SELECT p.proname::text, n.nspname::text FROM pg_proc p
      JOIN pg_namespace n ON n.oid = p.pronamespace JOIN path pa ON pa.nsp = n.nspname
     WHERE p.proname = w.r::name AND p.pronargs = 1 OFFSET 0) x`);
  return `WITH ${ctes.join(',\n  ')}\n${selects.join('\nUNION ALL\n')}`;
}

/** Which lookup parts a statement needs (resolutionQuery's values for the others are empty). */
function shapeOf(facts: SqlFacts): number {
  let mask = 0;
  if (facts.relations.length) mask |= PARTS.rel;
  if (facts.functions.length) mask |= PARTS.func;
  if (facts.operators.some((o) => !o.schema)) mask |= PARTS.op;
  if (facts.types.some((t) => t.schema !== 'pg_catalog')) mask |= PARTS.type;
  if (facts.attributeCalls.length) mask |= PARTS.attr;
  return mask;
}

/** OID of text[]: the declared type of every lookup and guard parameter. */
const TEXT_ARRAY = 1009;

export interface PreparedLookup {
  name: string;
  text: string;
  types: number[];
  values: Array<Array<string | null>>;
}

/** The lookup as a named (per-connection prepared) statement; values are bound, never spliced. */
export function resolutionQuery(facts: SqlFacts): PreparedLookup {
  const types = facts.types.filter((t) => t.schema !== 'pg_catalog');
  const mask = shapeOf(facts);
  return {
    name: `airlock_resolve_v3_${mask}`,
    text: resolutionSql(mask),
    types: Array<number>(8).fill(TEXT_ARRAY),
    values: [
      facts.relations.map((r) => r.schema ?? ''),
      facts.relations.map((r) => r.name),
      facts.functions.map((f) => f.schema ?? ''),
      facts.functions.map((f) => f.name),
      facts.operators.filter((o) => !o.schema).map((o) => o.name),
      types.map((t) => t.schema ?? ''),
      types.map((t) => t.name),
      facts.attributeCalls,
    ],
  };
}

/** In the error a guard raises when the names no longer resolve as they did. */
export const GUARD_MISMATCH = 'airlock: names resolve differently now';

/**
 * resolutionQuery's lookup compared, in the call's own transaction, with the rows it gave when
 * the broker last checked this statement ($9–$13: the five columns of those rows). Equal as
 * multisets: it returns nothing. Otherwise it fails (22P02, GUARD_MISMATCH), so that the server
 * skips everything after it up to the Sync and the agent's statement behind it never runs.
 */
const guardSql = (mask: number) => `WITH got(k, a, b, c, d) AS (${resolutionSql(mask)}),
  want AS (SELECT * FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[]) AS w(k, a, b, c, d)),
  diff AS ((SELECT * FROM got EXCEPT ALL SELECT * FROM want) UNION ALL (SELECT * FROM want EXCEPT ALL SELECT * FROM got))
SELECT (count(*)::text || ' ${GUARD_MISMATCH}')::int FROM diff HAVING count(*) > 0`;

/** The guard as a named statement: the lookup's parameters, then the expected rows by column. */
export function guardQuery(
  facts: SqlFacts,
  expected: ReadonlyArray<ReadonlyArray<string | null>>,
): PreparedLookup {
  const lookup = resolutionQuery(facts);
  const mask = shapeOf(facts);
  const column = (i: number) => expected.map((row) => row[i] ?? null);
  return {
    name: `airlock_guard_v3_${mask}`,
    text: guardSql(mask),
    types: Array<number>(13).fill(TEXT_ARRAY),
    values: [...lookup.values, column(0), column(1), column(2), column(3), column(4)],
  };
}

/**
 * What the user views found by resolutionQuery read, transitively (views of views): relations,
 * functions and the functions behind operators, from the views' rewrite rules' dependencies.
 * A second query, run only when a statement names a view, so plain table reads stay cheap.
 */
export function viewDependencyQuery(viewOids: readonly number[]): string {
  const oids = `ARRAY[${viewOids.map((o) => String(Math.trunc(o))).join(', ')}]::oid[]`;
  return `WITH RECURSIVE views(root, oid) AS (
      SELECT o, o FROM unnest(${oids}) AS o
      UNION
      SELECT v.root, c.oid FROM views v JOIN pg_rewrite r ON r.ev_class = v.oid
        JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
         AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
        JOIN pg_class c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ${SYSTEM}),
    deps AS (SELECT DISTINCT v.root::regclass::text AS view, d.refclassid, d.refobjid, r.ev_class
      FROM views v JOIN pg_rewrite r ON r.ev_class = v.oid
      JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid)
    SELECT 'vrel', d.view, n.nspname::text, c.relname::text, c.relkind::text FROM deps d
      JOIN pg_class c ON d.refclassid = 'pg_class'::regclass AND c.oid = d.refobjid AND c.oid <> d.ev_class
      JOIN pg_namespace n ON n.oid = c.relnamespace
    UNION ALL
    SELECT 'vfunc', d.view, n.nspname::text, p.proname::text, '' FROM deps d
      JOIN pg_proc p ON d.refclassid = 'pg_proc'::regclass AND p.oid = d.refobjid
      JOIN pg_namespace n ON n.oid = p.pronamespace
    UNION ALL
    SELECT 'vfunc', d.view, n.nspname::text, p.proname::text, '' FROM deps d
      JOIN pg_operator o ON d.refclassid = 'pg_operator'::regclass AND o.oid = d.refobjid
      JOIN pg_proc p ON p.oid = o.oprcode JOIN pg_namespace n ON n.oid = p.pronamespace`;
}

type Row = [string, string, string, string, string];

export function readResolution(facts: SqlFacts, rows: unknown[][], into?: Resolution): Resolution {
  const res: Resolution = into ?? {
    relations: [],
    viewRelations: [],
    viewFunctions: [],
    functionCandidates: new Map(),
    userOperators: [],
    userTypes: [],
    attributeFunctions: [],
    viewOids: [],
  };
  const types = facts.types.filter((t) => t.schema !== 'pg_catalog');
  for (const raw of rows) {
    const [k, a, b, c, d] = raw.map((v) => (v === null ? '' : String(v))) as Row;
    switch (k) {
      case 'rel': {
        const asked = facts.relations[Number(a) - 1];
        const written =
          facts.writeTarget !== undefined &&
          asked !== undefined &&
          asked.name === facts.writeTarget.name &&
          asked.schema === facts.writeTarget.schema;
        res.relations.push({ schema: b, name: c, kind: d, ...(written ? { written } : {}) });
        break;
      }
      case 'view':
        res.viewOids.push(Number(a));
        break;
      case 'vrel':
        res.viewRelations.push({ schema: b, name: c, kind: d, view: a });
        break;
      case 'vfunc':
        res.viewFunctions.push({ schema: b, name: c, view: a });
        break;
      case 'func': {
        const fn = facts.functions[Number(a) - 1];
        if (!fn) break;
        const key = displayName(fn);
        const list = res.functionCandidates.get(key) ?? [];
        list.push(b);
        res.functionCandidates.set(key, list);
        break;
      }
      case 'op':
        res.userOperators.push({ name: a, operatorSchema: b, schema: c, functionName: d });
        break;
      case 'type': {
        const asked = types[Number(a) - 1];
        if (asked && !CATALOG_SCHEMAS.has(b) && ['b', 'r', 'm'].includes(d))
          res.userTypes.push({ schema: b, name: c });
        break;
      }
      case 'attr':
        res.attributeFunctions.push({ schema: b, name: a });
        break;
    }
  }
  return res;
}
