// The postgres tools: list_tables, describe_table, query, explain. Each names a policy database;
// the SQL rules are in sql.ts (what a statement is), rules.ts (what the policy allows) and
// resolve.ts (what names mean on the live connection); execute.ts runs it.
import { z } from 'zod';
import { matchGlob } from '../../src/policy/glob.js';
import {
  allow,
  defineTool,
  deny,
  globCondition,
  oneOfCondition,
  ToolError,
  type AuditDetail,
  type Decision,
  type ToolContext,
} from '../../src/tool.js';
import { CATALOG_SCHEMAS, CREDENTIAL_RELATION_NAMES } from './functions.js';
import type { ExecuteOptions, Rows } from './execute.js';

// The execution half (and with it `pg`) loads with the first call, not with the tool
// definitions: `policy check` and the other commands that only read those never load it.
type Execute = typeof import('./execute.js');
let executeModule: Promise<Execute> | undefined;
const loadExecute = () => (executeModule ??= import('./execute.js'));
const inTransaction: Execute['inTransaction'] = async (...args) =>
  (await loadExecute()).inTransaction(...args);
const runRead: Execute['runRead'] = async (...args) => (await loadExecute()).runRead(...args);
const runWrite: Execute['runWrite'] = async (...args) => (await loadExecute()).runWrite(...args);
import { checkStatic } from './rules.js';
import type { PostgresRuntime } from './runtime.js';
import type { DatabasePolicy, PostgresSection } from './section.js';
import {
  analyzeSql,
  displayName,
  loadSqlParser,
  SqlRefusal,
  type QualifiedName,
  type SqlFacts,
} from './sql.js';

const MAX_SQL_CHARS = 100_000;
const MAX_PARAMS = 100;

const databaseArg = z.string().min(1).max(128).describe('A database name from the team policy');
const sqlArg = z
  .string()
  .min(1)
  .max(MAX_SQL_CHARS)
  .describe('Exactly one SQL statement; use $1, $2… for values and pass them in params');
const paramsArg = z
  .array(z.union([z.string().max(MAX_SQL_CHARS), z.number(), z.boolean(), z.null()]))
  .max(MAX_PARAMS)
  .optional()
  .describe('Values for $1, $2…, sent separately from the SQL (never spliced into it)');

const columnSchema = z.object({ name: z.string(), type: z.string() });
const rowsShape = {
  database: z.string(),
  command: z.string().describe('The command tag verb (SELECT, INSERT, …)'),
  columns: z.array(columnSchema),
  rows: z
    .array(z.array(z.unknown()))
    .describe('One array per row, in column order; bigint, numeric, bytea, dates and times as exact strings'),
  rowCount: z.number().int().describe('Rows returned (reads) or changed (writes)'),
  truncated: z.boolean().describe('True when maxRows or maxResultBytes stopped the fetch'),
};
const rowsOutput = z.object(rowsShape);

const noOptions = z.object({}).strict();

type Section = PostgresSection;

function database(section: Section, name: string): { db: DatabasePolicy } | { refusal: Decision } {
  const db = section.databases[name];
  if (db) return { db };
  const known = Object.keys(section.databases).join(', ') || '(none)';
  return {
    refusal: deny('postgres.databases', `unknown database "${name}"; this team's databases: ${known}`),
  };
}

/** Facts per call, computed in authorize and reused by run (the same validated args object). */
const factsByArgs = new WeakMap<object, SqlFacts>();

/**
 * Parsing is pure, so facts are cached by exact SQL text (agents repeat statements; a WASM
 * parse costs more than the rest of a small read). Bounded; the oldest entry goes first.
 */
const FACTS_CACHE_SIZE = 512;
const factsCache = new Map<string, SqlFacts>();

const STATEMENT_CLASSES = ['select', 'explain', 'insert', 'update', 'delete', 'ddl', 'truncate'] as const;

/** The statement class of `sql` (approval conditions run after authorize, so it parses). */
function statementClassOf(sql: string): string | undefined {
  try {
    return analyze(sql).statementClass;
  } catch (err) {
    if (err instanceof ToolError) return undefined;
    throw err; // e.g. the parser not loaded: never read as "no statement class"
  }
}

function analyze(sql: string): SqlFacts {
  const cached = factsCache.get(sql);
  if (cached) return cached;
  try {
    const facts = analyzeSql(sql);
    if (factsCache.size >= FACTS_CACHE_SIZE) factsCache.delete(factsCache.keys().next().value!);
    factsCache.set(sql, facts);
    return facts;
  } catch (err) {
    if (err instanceof SqlRefusal)
      throw new ToolError(err.message, err.kind === 'invalid' ? 'invalid' : 'denied', 'postgres.sql');
    throw err;
  }
}

function auditOf(facts: SqlFacts): AuditDetail {
  return {
    statementClass: facts.statementClass,
    statement: facts.kind,
    tables: facts.relations.map(displayName),
    functions: facts.functions.map(displayName),
  };
}

function decide(args: { database: string }, section: Section, facts: SqlFacts): Decision {
  const found = database(section, args.database);
  if ('refusal' in found) return found.refusal;
  const refusal = checkStatic(args.database, found.db, facts);
  if (refusal) return deny(refusal.rule, refusal.reason);
  return allow(`postgres.databases.${args.database}`, auditOf(facts));
}

function factsFor(args: object): SqlFacts {
  const facts = factsByArgs.get(args);
  if (!facts) throw new Error('postgres: statement facts missing (authorize did not run)');
  return facts;
}

function dbOf(section: Section, name: string): DatabasePolicy {
  const db = section.databases[name];
  if (!db) throw new ToolError(`unknown database "${name}"`, 'denied', 'postgres.databases');
  return db;
}

/** What query and explain need to run: the facts authorize found, the database, its execution options. */
function callSetup(
  args: { database: string; params?: unknown[] | undefined },
  ctx: ToolContext<Section, unknown, PostgresRuntime>,
  verdictKey: string,
): { facts: SqlFacts; opts: ExecuteOptions; params: unknown[] } {
  const facts = factsFor(args);
  const db = dbOf(ctx.section, args.database);
  return {
    facts,
    opts: {
      dbName: args.database,
      db,
      facts,
      signal: ctx.signal,
      runtime: ctx.runtime,
      hasParams: (args.params?.length ?? 0) > 0,
      verdictKey,
    },
    params: args.params ?? [],
  };
}

/** One value as text: strings as they are, NULL, numbers and booleans as JSON writes them. */
function cell(v: unknown): string {
  if (v === null) return 'NULL';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

/** Rows as text: a header line, one tab-separated line per row, and a truncation note. */
function renderText(r: Rows, heading: string): string {
  // Appending (no per-row arrays to join): a 1,000-row answer is built once per call.
  let out = heading;
  if (r.columns.length) out += '\n' + r.columns.map((c) => c.name).join('\t');
  for (const row of r.rows) {
    out += '\n';
    for (let i = 0; i < row.length; i++) out += i === 0 ? cell(row[i]) : '\t' + cell(row[i]);
  }
  if (r.truncated) out += '\n(truncated: more rows exist; narrow the query or add LIMIT)';
  return out;
}

const resultAudit = (r: Rows): AuditDetail => ({ rowCount: r.rowCount, truncated: r.truncated });

export const queryTool = defineTool<
  z.ZodObject<{ database: typeof databaseArg; sql: typeof sqlArg; params: typeof paramsArg }>,
  typeof rowsOutput,
  typeof noOptions,
  Section,
  PostgresRuntime
>({
  name: 'query',
  title: 'Run one SQL statement',
  description:
    'Runs exactly one SQL statement on a policy database and returns columns, rows, rowCount, truncated. ' +
    'Read-only databases accept SELECT/VALUES/TABLE/WITH/EXPLAIN in a READ ONLY transaction; read-write ones also one INSERT/UPDATE/DELETE (bounded by maxAffectedRows).',
  input: z.object({ database: databaseArg, sql: sqlArg, params: paramsArg }).strict(),
  output: rowsOutput,
  options: noOptions,
  annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: false },
  // `approve: { when: { statements: [insert, update, delete] } }` holds every write for a human.
  approvalConditions: {
    databases: globCondition(
      'Databases whose queries wait for approval',
      (a: { database: string }) => a.database,
    ),
    statements: oneOfCondition(
      STATEMENT_CLASSES,
      'Statement classes whose queries wait for approval, e.g. [insert, update, delete]',
      (a: { sql: string }) => statementClassOf(a.sql),
    ),
  },
  prepare: loadSqlParser,
  authorize(args, { section }) {
    const facts = analyze(args.sql);
    factsByArgs.set(args, facts);
    return decide(args, section, facts);
  },
  async run(args, ctx) {
    // The facts are a function of the SQL text alone (analyze), so it keys the remembered verdict.
    const { facts, opts, params } = callSetup(args, ctx, `query\u0000${args.sql}`);
    const write = ['insert', 'update', 'delete', 'ddl', 'truncate'].includes(facts.statementClass);
    const rows = await inTransaction(opts, (lease) =>
      write ? runWrite(lease, opts, args.sql, params) : runRead(lease, opts, args.sql, params, true),
    );
    return {
      structured: { database: args.database, ...rows },
      text: renderText(
        rows,
        `${rows.command || facts.kind}: ${rows.rowCount} row${rows.rowCount === 1 ? '' : 's'}`,
      ),
      audit: resultAudit(rows),
    };
  },
});

const explainOutput = z.object({
  ...rowsShape,
  plan: z.unknown().describe('The plan as EXPLAIN (FORMAT JSON) returns it'),
  planText: z.string().describe('The plan as EXPLAIN prints it'),
});

export const explainTool = defineTool<
  z.ZodObject<{
    database: typeof databaseArg;
    sql: typeof sqlArg;
    params: typeof paramsArg;
    analyze: z.ZodOptional<z.ZodBoolean>;
  }>,
  typeof explainOutput,
  typeof noOptions,
  Section,
  PostgresRuntime
>({
  name: 'explain',
  title: 'Show a query plan',
  description:
    'Shows the plan of one statement (text and JSON) without running it; analyze: true runs a plain read to measure it. ' +
    'The statement must be one the database would accept for query.',
  input: z
    .object({
      database: databaseArg,
      sql: sqlArg.describe('One statement, without EXPLAIN'),
      params: paramsArg,
      analyze: z.boolean().optional().describe('Run it and report real timings (plain reads only)'),
    })
    .strict(),
  output: explainOutput,
  options: noOptions,
  annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
  prepare: loadSqlParser,
  authorize(args, { section }) {
    const inner = analyze(args.sql);
    if (inner.statementClass === 'explain')
      throw new ToolError('sql: pass the statement itself; explain adds EXPLAIN', 'invalid');
    const facts: SqlFacts = {
      ...inner,
      statementClass: 'explain',
      kind: `EXPLAIN${args.analyze ? ' ANALYZE' : ''} ${inner.kind}`,
      explained: { statementClass: inner.statementClass, analyze: args.analyze === true },
    };
    factsByArgs.set(args, facts);
    return decide(args, section, facts);
  },
  async run(args, ctx) {
    const { opts, params } = callSetup(args, ctx, `explain ${args.analyze === true}\u0000${args.sql}`);
    const prefix = args.analyze ? 'EXPLAIN (ANALYZE, FORMAT JSON) ' : 'EXPLAIN (FORMAT JSON) ';
    const textPrefix = args.analyze ? 'EXPLAIN (ANALYZE) ' : 'EXPLAIN ';
    const { plan, text } = await inTransaction(
      opts,
      async (lease) => {
        const j = await runRead(lease, opts, prefix + args.sql, params);
        const t = await runRead(lease, opts, textPrefix + args.sql, params, true);
        return { plan: j.rows[0]?.[0] ?? null, text: t };
      },
      prefix.length,
    );
    const planText = text.rows.map((r) => String(r[0])).join('\n');
    return {
      structured: { database: args.database, ...text, plan, planText },
      text: planText,
      audit: resultAudit(text),
    };
  },
});

const NO_NAMES: Omit<SqlFacts, 'relations'> = {
  statementClass: 'select',
  kind: 'SELECT',
  filtered: false,
  functions: [],
  operators: [],
  types: [],
  attributeCalls: [],
  tablesampleMethods: [],
};

const LIST_TABLES_SQL = `
  SELECT n.nspname::text, c.relname::text,
         CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view'
                        WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' END
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
     AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
     AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
   ORDER BY 1, 2`;

function tableAllowed(db: DatabasePolicy, schema: string, name: string): boolean {
  if (CREDENTIAL_RELATION_NAMES.has(name) || CATALOG_SCHEMAS.has(schema)) return false;
  return (
    !db.tables ||
    db.tables.some((g) => {
      const dot = g.indexOf('.');
      return matchGlob(g.slice(0, dot), schema) && matchGlob(g.slice(dot + 1), name);
    })
  );
}

const databaseOnly = z.object({ database: databaseArg }).strict();

export const listTablesTool = defineTool<
  typeof databaseOnly,
  typeof rowsOutput,
  typeof noOptions,
  Section,
  PostgresRuntime
>({
  name: 'list_tables',
  title: 'List tables',
  description:
    'Lists the tables, views and materialized views of a policy database that its table rules allow, as rows of [schema, name, kind].',
  input: databaseOnly,
  output: rowsOutput,
  options: noOptions,
  annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
  authorize(args, { section }) {
    const found = database(section, args.database);
    if ('refusal' in found) return found.refusal;
    return allow(`postgres.databases.${args.database}`, { statementClass: 'catalog' });
  },
  async run(args, ctx) {
    const db = dbOf(ctx.section, args.database);
    const facts: SqlFacts = { ...NO_NAMES, relations: [] };
    // Our own catalog query: no byte cap beyond maxRows applies to the listing itself.
    const opts = {
      dbName: args.database,
      db: { ...db, maxRows: 100_000 },
      facts,
      signal: ctx.signal,
      runtime: ctx.runtime,
    };
    const all = await inTransaction(opts, (lease) => runRead(lease, opts, LIST_TABLES_SQL, [], true));
    const allowed = all.rows.filter((r) => tableAllowed(db, String(r[0]), String(r[1])));
    const rows: Rows = {
      command: 'SELECT',
      columns: [
        { name: 'schema', type: 'name' },
        { name: 'name', type: 'name' },
        { name: 'kind', type: 'text' },
      ],
      rows: allowed.slice(0, db.maxRows),
      rowCount: Math.min(allowed.length, db.maxRows),
      truncated: all.truncated || allowed.length > db.maxRows,
    };
    return {
      structured: { database: args.database, ...rows },
      text: renderText(
        rows,
        `${rows.rowCount} relation${rows.rowCount === 1 ? '' : 's'} in ${args.database}`,
      ),
      audit: resultAudit(rows),
    };
  },
});

const IDENT = String.raw`(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`;
const TABLE_NAME = new RegExp(`^(${IDENT})(?:\\.(${IDENT}))?$`);

/** `name`, `schema.name`, with SQL identifier rules (unquoted folds to lower case). */
export function parseTableName(text: string): QualifiedName | undefined {
  const m = TABLE_NAME.exec(text.trim());
  if (!m) return undefined;
  const ident = (s: string) => (s.startsWith('"') ? s.slice(1, -1).replace(/""/g, '"') : s.toLowerCase());
  return m[2] ? { schema: ident(m[1]!), name: ident(m[2]) } : { name: ident(m[1]!) };
}

const DESCRIBE_SQL = `
  SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
         pg_get_expr(d.adbin, d.adrelid),
         EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary AND a.attnum = ANY(i.indkey))
    FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE a.attrelid = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname = $1 AND c.relname = $2)
     AND a.attnum > 0 AND NOT a.attisdropped
   ORDER BY a.attnum`;

const describeInput = z
  .object({
    database: databaseArg,
    table: z.string().min(1).max(300).describe('Table or view: name or schema.name (SQL identifier rules)'),
  })
  .strict();
const describeOutput = z.object({
  ...rowsShape,
  table: z.string().describe('schema.name the name resolved to'),
  kind: z.string(),
});

const RELKINDS: Record<string, string> = {
  r: 'table',
  p: 'partitioned table',
  v: 'view',
  m: 'materialized view',
  f: 'foreign table',
  S: 'sequence',
};

export const describeTableTool = defineTool<
  typeof describeInput,
  typeof describeOutput,
  typeof noOptions,
  Section,
  PostgresRuntime
>({
  name: 'describe_table',
  title: 'Describe a table',
  description:
    'Columns of one table or view the table rules allow, as rows of [column, type, nullable, default, primary_key].',
  input: describeInput,
  output: describeOutput,
  options: noOptions,
  annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
  authorize(args, { section }) {
    const name = parseTableName(args.table);
    if (!name) throw new ToolError('table: write name or schema.name (quote identifiers with ")', 'invalid');
    const facts: SqlFacts = { ...NO_NAMES, relations: [name] };
    factsByArgs.set(args, facts);
    const decision = decide(args, section, facts);
    return decision.allow
      ? allow(decision.rule, { statementClass: 'catalog', tables: [displayName(name)] })
      : decision;
  },
  async run(args, ctx) {
    const facts = factsFor(args);
    const db = dbOf(ctx.section, args.database);
    const opts = {
      dbName: args.database,
      db: { ...db, maxRows: 10_000 },
      facts,
      signal: ctx.signal,
      runtime: ctx.runtime,
    };
    const { rows, resolved } = await inTransaction(opts, async (lease, resolution) => {
      const rel = resolution?.relations[0];
      if (!rel)
        throw new ToolError(
          `42P01: relation "${displayName(facts.relations[0]!)}" does not exist`,
          'upstream',
        );
      return { rows: await runRead(lease, opts, DESCRIBE_SQL, [rel.schema, rel.name], true), resolved: rel };
    });
    rows.columns = [
      { name: 'column', type: 'name' },
      { name: 'type', type: 'text' },
      { name: 'nullable', type: 'boolean' },
      { name: 'default', type: 'text' },
      { name: 'primary_key', type: 'boolean' },
    ];
    const table = `${resolved.schema}.${resolved.name}`;
    const kind = RELKINDS[resolved.kind] ?? resolved.kind;
    return {
      structured: { database: args.database, ...rows, table, kind },
      text: renderText(rows, `${kind} ${table}`),
      audit: resultAudit(rows),
    };
  },
});

export const postgresTools = [listTablesTool, describeTableTool, queryTool, explainTool];
