// What a SQL text is, read with the real Postgres parser (libpg-query, the WASM build of
// PostgreSQL's own grammar): exactly one statement, its class, and every relation, function,
// operator and type it names in any position. Pure: no policy and no database here; the policy
// check (policy.ts) decides on these facts, and names that depend on the connection's
// search_path are resolved against the live catalog (resolve.ts).

// The parser is WebAssembly (~30–60 ms to compile, ~150 MiB of memory): it loads on the first
// postgres call (loadSqlParser), not when this module is imported, so a broker or command that
// never parses SQL never pays for it.
type ParseSync = typeof import('libpg-query').parseSync;
let parseSync: ParseSync | undefined;
let parserLoading: Promise<void> | undefined;

/** Loads the SQL parser once; concurrent callers share one load, and a failed load is retried. */
export function loadSqlParser(): Promise<void> {
  parserLoading ??= import('libpg-query')
    .then(async (pgQuery) => {
      await pgQuery.loadModule();
      parseSync = pgQuery.parseSync;
    })
    .catch((err: unknown) => {
      parserLoading = undefined;
      throw err;
    });
  return parserLoading;
}

export type StatementClass = 'select' | 'explain' | 'insert' | 'update' | 'delete' | 'ddl' | 'truncate';

export interface QualifiedName {
  /** Absent when the SQL left it unqualified (resolved by search_path). */
  schema?: string;
  name: string;
}

export interface SqlFacts {
  statementClass: StatementClass;
  /** Statement kind as a user would name it: SELECT, VALUES, EXPLAIN, INSERT, CREATE TABLE… */
  kind: string;
  /** For EXPLAIN: the class of the explained statement, and whether ANALYZE (runs it) was asked. */
  explained?: { statementClass: StatementClass; analyze: boolean };
  /** Every relation named anywhere (CTE references excluded by scope), deduplicated, in order. */
  relations: QualifiedName[];
  /** The relation an INSERT/UPDATE/DELETE writes. */
  writeTarget?: QualifiedName;
  /** UPDATE/DELETE with a WHERE clause (TRUNCATE and WHERE-less writes have none). */
  filtered: boolean;
  functions: QualifiedName[];
  operators: QualifiedName[];
  types: QualifiedName[];
  /** Names after a dot in column references (`t.f`, `(t).f`): Postgres may read them as f(t). */
  attributeCalls: string[];
  tablesampleMethods: string[];
}

/** A statement refused for what it is, before any policy (stacking, COPY, SET, …). */
export class SqlRefusal extends Error {
  constructor(
    message: string,
    /** `invalid`: the SQL does not parse; `denied`: it parses but is never allowed. */
    readonly kind: 'invalid' | 'denied',
  ) {
    super(message);
    this.name = 'SqlRefusal';
  }
}

type Node = Record<string, unknown>;

const WRITE_STATEMENTS: Record<string, StatementClass> = {
  InsertStmt: 'insert',
  UpdateStmt: 'update',
  DeleteStmt: 'delete',
};

/** Schema DDL a `ddl: true` database may run, with its kind name. */
const DDL_STATEMENTS: Record<string, string> = {
  CreateStmt: 'CREATE TABLE',
  AlterTableStmt: 'ALTER TABLE',
  IndexStmt: 'CREATE INDEX',
  ViewStmt: 'CREATE VIEW',
  CreateTableAsStmt: 'CREATE TABLE AS',
  DropStmt: 'DROP',
  RenameStmt: 'RENAME',
  CreateSeqStmt: 'CREATE SEQUENCE',
  AlterSeqStmt: 'ALTER SEQUENCE',
  RefreshMatViewStmt: 'REFRESH MATERIALIZED VIEW',
};

/** DROP object types that name relations (anything else, e.g. DROP SCHEMA or ROLE, is refused). */
const DROPPABLE = new Set([
  'OBJECT_TABLE',
  'OBJECT_VIEW',
  'OBJECT_MATVIEW',
  'OBJECT_INDEX',
  'OBJECT_SEQUENCE',
  'OBJECT_FOREIGN_TABLE',
]);

/** Names for refusals of statements that are never run, so the agent knows what it sent. */
const STATEMENT_KINDS: Record<string, string> = {
  TransactionStmt: 'transaction control (BEGIN/COMMIT/ROLLBACK/SAVEPOINT)',
  VariableSetStmt: 'SET',
  VariableShowStmt: 'SHOW',
  CopyStmt: 'COPY',
  DoStmt: 'DO',
  CallStmt: 'CALL',
  PrepareStmt: 'PREPARE',
  ExecuteStmt: 'EXECUTE',
  DeallocateStmt: 'DEALLOCATE',
  LockStmt: 'LOCK',
  ListenStmt: 'LISTEN',
  NotifyStmt: 'NOTIFY',
  UnlistenStmt: 'UNLISTEN',
  DeclareCursorStmt: 'DECLARE CURSOR',
  FetchStmt: 'FETCH',
  ClosePortalStmt: 'CLOSE',
  DiscardStmt: 'DISCARD',
  VacuumStmt: 'VACUUM/ANALYZE',
  LoadStmt: 'LOAD',
  CheckPointStmt: 'CHECKPOINT',
  ReindexStmt: 'REINDEX',
  ClusterStmt: 'CLUSTER',
  MergeStmt: 'MERGE',
  TruncateStmt: 'TRUNCATE',
  CreateFunctionStmt: 'CREATE FUNCTION/PROCEDURE',
  CreateRoleStmt: 'CREATE ROLE',
  AlterRoleStmt: 'ALTER ROLE',
  DropRoleStmt: 'DROP ROLE',
  GrantStmt: 'GRANT/REVOKE',
  GrantRoleStmt: 'GRANT/REVOKE role',
  CreateExtensionStmt: 'CREATE EXTENSION',
  CreateSchemaStmt: 'CREATE SCHEMA',
  CreatedbStmt: 'CREATE DATABASE',
  DropdbStmt: 'DROP DATABASE',
  AlterSystemStmt: 'ALTER SYSTEM',
  CreateTrigStmt: 'CREATE TRIGGER',
  RuleStmt: 'CREATE RULE',
  AlterOwnerStmt: 'ALTER … OWNER',
  CommentStmt: 'COMMENT',
  SecLabelStmt: 'SECURITY LABEL',
  ConstraintsSetStmt: 'SET CONSTRAINTS',
  VariableResetStmt: 'RESET',
  CreateEventTrigStmt: 'CREATE EVENT TRIGGER',
  CreateForeignServerStmt: 'CREATE SERVER',
  CreateUserMappingStmt: 'CREATE USER MAPPING',
  ImportForeignSchemaStmt: 'IMPORT FOREIGN SCHEMA',
  CreatePublicationStmt: 'CREATE PUBLICATION',
  CreateSubscriptionStmt: 'CREATE SUBSCRIPTION',
  AlterDatabaseSetStmt: 'ALTER DATABASE',
  AlterRoleSetStmt: 'ALTER ROLE … SET',
  ReassignOwnedStmt: 'REASSIGN OWNED',
  DropOwnedStmt: 'DROP OWNED',
};

export function statementKindName(key: string): string {
  return (
    STATEMENT_KINDS[key] ??
    DDL_STATEMENTS[key] ??
    key
      .replace(/Stmt$/, '')
      .replace(/([a-z])([A-Z])/g, '$1 $2')
      .toUpperCase()
  );
}

const strings = (list: unknown): string[] =>
  Array.isArray(list)
    ? list.map((item) => ((item as Node)?.String as { sval?: string } | undefined)?.sval ?? '')
    : [];

function qualified(parts: string[]): QualifiedName {
  // A three-part name (db.schema.name) keeps its schema; Postgres refuses other databases itself.
  const name = parts[parts.length - 1] ?? '';
  const schema = parts.length >= 2 ? parts[parts.length - 2] : undefined;
  return schema === undefined ? { name } : { schema, name };
}

const keyOf = (q: QualifiedName) => `${q.schema ?? ''}\u0000${q.name}`;

class Collector {
  relations = new Map<string, QualifiedName>();
  functions = new Map<string, QualifiedName>();
  operators = new Map<string, QualifiedName>();
  types = new Map<string, QualifiedName>();
  attributeCalls = new Set<string>();
  tablesampleMethods = new Set<string>();

  add(map: Map<string, QualifiedName>, q: QualifiedName): void {
    if (q.name) map.set(keyOf(q), q);
  }
}

/** Comparison operators behind syntax that does not name them (BETWEEN, IN, DISTINCT FROM, NULLIF). */
const IMPLIED_OPERATORS: Record<string, string[]> = {
  AEXPR_BETWEEN: ['>=', '<='],
  AEXPR_NOT_BETWEEN: ['<', '>'],
  AEXPR_BETWEEN_SYM: ['>=', '<='],
  AEXPR_NOT_BETWEEN_SYM: ['<', '>'],
};

/**
 * Walks every node of a statement. `scope` holds the CTE names visible at this point, so an
 * unqualified name that is a CTE is not taken for a table (and a CTE that shadows a table only
 * where SQL's scoping says it does: a non-recursive CTE's own body still sees the real table).
 */
function walk(value: unknown, scope: readonly string[], out: Collector): void {
  if (Array.isArray(value)) {
    for (const item of value) walk(item, scope, out);
    return;
  }
  if (value === null || typeof value !== 'object') return;
  const node = value as Node;

  for (const key of Object.keys(node)) {
    if (WRITE_STATEMENTS[key] || key === 'MergeStmt')
      throw new SqlRefusal(
        `${statementKindName(key)} nested inside another statement is never allowed`,
        'denied',
      );
  }
  if (Array.isArray(node.lockingClause) && node.lockingClause.length > 0)
    throw new SqlRefusal('SELECT … FOR UPDATE/SHARE (row locks) is never allowed', 'denied');
  if (node.intoClause)
    throw new SqlRefusal('SELECT … INTO (creates a table) is never allowed; use a plain SELECT', 'denied');

  const withClause = node.withClause as { ctes?: unknown[]; recursive?: boolean } | undefined;
  if (withClause && Array.isArray(withClause.ctes)) {
    const ctes = withClause.ctes.map((c) => (c as Node).CommonTableExpr as Node);
    const names = ctes.map((c) => String(c.ctename));
    ctes.forEach((cte, i) => {
      const query = cte.ctequery as Node;
      const queryKey = Object.keys(query ?? {})[0] ?? '';
      if (WRITE_STATEMENTS[queryKey] || queryKey === 'MergeStmt')
        throw new SqlRefusal(
          `a data-modifying WITH (${statementKindName(queryKey)} inside WITH) is never allowed; send the write on its own`,
          'denied',
        );
      const visible = withClause.recursive ? [...scope, ...names] : [...scope, ...names.slice(0, i)];
      walk(query, visible, out);
    });
    const inner = [...scope, ...names];
    for (const [key, child] of Object.entries(node)) if (key !== 'withClause') walk(child, inner, out);
    return;
  }

  if (typeof node.relname === 'string') {
    // A RangeVar: a table, view, sequence… (or a CTE, when unqualified and in scope).
    const name = node.relname;
    const schema = typeof node.schemaname === 'string' ? node.schemaname : undefined;
    if (schema !== undefined || !scope.includes(name))
      out.add(out.relations, schema ? { schema, name } : { name });
    return;
  }
  if (Array.isArray(node.funcname)) out.add(out.functions, qualified(strings(node.funcname)));
  if (typeof node.kind === 'string' && node.kind.startsWith('AEXPR_') && Array.isArray(node.name)) {
    const implied = IMPLIED_OPERATORS[node.kind];
    if (implied) for (const op of implied) out.add(out.operators, { name: op });
    else out.add(out.operators, qualified(strings(node.name)));
  }
  if (Array.isArray(node.names) && 'typemod' in node) out.add(out.types, qualified(strings(node.names)));
  if (Array.isArray(node.fields) && node.fields.length >= 2) {
    const last = strings(node.fields.slice(-1))[0];
    if (last) out.attributeCalls.add(last);
  }
  if (Array.isArray(node.indirection)) {
    for (const part of strings(node.indirection)) if (part) out.attributeCalls.add(part);
  }
  const sample = node.RangeTableSample as Node | undefined;
  if (sample) for (const m of strings(sample.method)) out.tablesampleMethods.add(m);
  for (const child of Object.values(node)) walk(child, scope, out);
}

/** Parses `sql` and returns its facts, or throws SqlRefusal. */
export function analyzeSql(sql: string): SqlFacts {
  // Not a SqlRefusal: a caller must never read "not loaded" as "this SQL is invalid".
  if (!parseSync) throw new Error('the SQL parser is not loaded: await loadSqlParser() first');
  let stmts: Array<{ stmt?: Node }>;
  try {
    stmts = (parseSync(sql) as { stmts?: Array<{ stmt?: Node }> }).stmts ?? [];
  } catch (err) {
    const details = (err as { sqlDetails?: { cursorPosition?: number } }).sqlDetails;
    const at = details?.cursorPosition !== undefined ? ` (at character ${details.cursorPosition + 1})` : '';
    throw new SqlRefusal(`sql: ${(err as Error).message}${at}`, 'invalid');
  }
  if (stmts.length !== 1) {
    throw new SqlRefusal(
      stmts.length === 0
        ? 'sql: no statement (empty, or only comments)'
        : `one statement per call: this text holds ${stmts.length} statements; send them one call at a time`,
      stmts.length === 0 ? 'invalid' : 'denied',
    );
  }
  const stmt = stmts[0]!.stmt ?? {};
  const key = Object.keys(stmt)[0] ?? '';
  const body = (stmt[key] ?? {}) as Node;
  const out = new Collector();

  let statementClass: StatementClass;
  let kind: string;
  let explained: SqlFacts['explained'];
  let writeTarget: QualifiedName | undefined;
  let filtered = false;
  const top = classify(key, body);
  if (key === 'ExplainStmt') {
    const query = (body.query ?? {}) as Node;
    const innerKey = Object.keys(query)[0] ?? '';
    const inner = classify(innerKey, (query[innerKey] ?? {}) as Node);
    if (inner.statementClass !== 'select' && !WRITE_STATEMENTS[innerKey])
      throw new SqlRefusal(
        `EXPLAIN of ${inner.kind} is never allowed; explain a SELECT, INSERT, UPDATE or DELETE`,
        'denied',
      );
    const analyze = (Array.isArray(body.options) ? body.options : []).some(
      (o) => ((o as Node).DefElem as { defname?: string } | undefined)?.defname === 'analyze',
    );
    explained = { statementClass: inner.statementClass, analyze };
    statementClass = 'explain';
    kind = analyze ? `EXPLAIN ANALYZE ${inner.kind}` : `EXPLAIN ${inner.kind}`;
    ({ writeTarget, filtered } = inner);
    walk(query[innerKey], [], out);
  } else {
    ({ statementClass, kind, writeTarget, filtered } = top);
    if (key === 'DropStmt') {
      for (const obj of (body.objects as unknown[]) ?? []) {
        out.add(out.relations, qualified(strings(((obj as Node).List as Node | undefined)?.items)));
      }
    }
    walk(body, [], out);
  }
  return {
    statementClass,
    kind,
    ...(explained ? { explained } : {}),
    relations: [...out.relations.values()],
    ...(writeTarget ? { writeTarget } : {}),
    filtered,
    functions: [...out.functions.values()],
    operators: [...out.operators.values()],
    types: [...out.types.values()],
    attributeCalls: [...out.attributeCalls],
    tablesampleMethods: [...out.tablesampleMethods],
  };

  function classify(
    k: string,
    b: Node,
  ): { statementClass: StatementClass; kind: string; writeTarget?: QualifiedName; filtered: boolean } {
    if (k === 'SelectStmt')
      return { statementClass: 'select', kind: b.valuesLists ? 'VALUES' : 'SELECT', filtered: false };
    if (k === 'ExplainStmt' && b !== body)
      throw new SqlRefusal('EXPLAIN of EXPLAIN is not a statement', 'invalid');
    if (k === 'ExplainStmt') return { statementClass: 'explain', kind: 'EXPLAIN', filtered: false };
    const write = WRITE_STATEMENTS[k];
    if (write) {
      const rel = b.relation as Node | undefined;
      const target =
        rel && typeof rel.relname === 'string'
          ? typeof rel.schemaname === 'string'
            ? { schema: rel.schemaname, name: rel.relname }
            : { name: rel.relname }
          : undefined;
      return {
        statementClass: write,
        kind: write.toUpperCase(),
        ...(target ? { writeTarget: target } : {}),
        filtered: write === 'insert' || b.whereClause !== undefined,
      };
    }
    if (k === 'TruncateStmt') return { statementClass: 'truncate', kind: 'TRUNCATE', filtered: false };
    if (DDL_STATEMENTS[k]) {
      if (k === 'DropStmt' && !DROPPABLE.has(String(b.removeType)))
        throw new SqlRefusal(
          `DROP ${String(b.removeType).replace(/^OBJECT_/, '')} is never allowed; only tables, views, indexes and sequences`,
          'denied',
        );
      return { statementClass: 'ddl', kind: DDL_STATEMENTS[k]!, filtered: false };
    }
    throw new SqlRefusal(`${statementKindName(k)} statements are never allowed through Airlock`, 'denied');
  }
}

/** `schema.name` for display and audit (unqualified names stay as written). */
export const displayName = (q: QualifiedName): string => (q.schema ? `${q.schema}.${q.name}` : q.name);
