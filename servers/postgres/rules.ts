// The policy decision on a statement's facts (sql.ts): statement class against the database's
// access, the unfiltered-write rule, table globs, credential catalogs and the function allowlist.
// `checkStatic` runs in authorize (before anything is audited as a request) on what the text
// says; `checkResolved` runs inside the call's transaction once unqualified names have been
// resolved against the connection's search_path and views opened up (resolve.ts).
import { matchGlob } from '../../src/policy/glob.js';
import {
  CATALOG_SCHEMAS,
  CREDENTIAL_RELATION_NAMES,
  CREDENTIAL_RELATIONS,
  SAFE_BUILTIN_FUNCTIONS,
  SAFE_TABLESAMPLE_METHODS,
} from './functions.js';
import type { DatabasePolicy } from './section.js';
import { displayName, type QualifiedName, type SqlFacts } from './sql.js';
import type { Resolution, ResolvedRelation } from './resolve.js';

export interface Refusal {
  rule: string;
  reason: string;
}

const CREDENTIAL_RULE = 'postgres.credentialCatalogs';

/** `globs` as `schema.name` pairs: each side matched on its own. */
function matchQualified(globs: readonly string[] | undefined, schema: string, name: string): boolean {
  return (globs ?? []).some((g) => {
    const dot = g.indexOf('.');
    return matchGlob(g.slice(0, dot), schema) && matchGlob(g.slice(dot + 1), name);
  });
}

export function functionAllowed(db: DatabasePolicy, schema: string, name: string): boolean {
  return (
    (schema === 'pg_catalog' && SAFE_BUILTIN_FUNCTIONS.has(name)) ||
    matchQualified(db.functions, schema, name)
  );
}

const ruleOf = (dbName: string, key: string) => `postgres.databases.${dbName}.${key}`;

/** The rule a relation (schema known) breaks, if any. */
function relationRefusal(
  dbName: string,
  db: DatabasePolicy,
  schema: string,
  name: string,
  via?: string,
): Refusal | undefined {
  const shown = `${schema}.${name}${via ? ` (read by view ${via})` : ''}`;
  if (CREDENTIAL_RELATIONS.has(`${schema}.${name}`) || CREDENTIAL_RELATION_NAMES.has(name))
    return {
      rule: CREDENTIAL_RULE,
      reason: `${shown} holds credentials or other sessions' queries and is never readable through Airlock`,
    };
  if (CATALOG_SCHEMAS.has(schema)) {
    if (!db.catalogs)
      return { rule: ruleOf(dbName, 'catalogs'), reason: `${shown} is a system catalog and catalogs: false` };
    return undefined;
  }
  if (db.tables && !matchQualified(db.tables, schema, name))
    return {
      rule: ruleOf(dbName, 'tables'),
      reason: `${shown} is not in the allowed tables (${db.tables.join(', ')})`,
    };
  return undefined;
}

const ACCESS_CLASSES = {
  'read-only': new Set(['select', 'explain']),
  'read-write': new Set(['select', 'explain', 'insert', 'update', 'delete']),
};

/** Checks what the SQL text alone decides. */
export function checkStatic(dbName: string, db: DatabasePolicy, facts: SqlFacts): Refusal | undefined {
  const access = ruleOf(dbName, 'access');
  const cls = facts.statementClass;
  if (cls === 'ddl' || cls === 'truncate') {
    if (db.access !== 'read-write' || !db.ddl)
      return {
        rule: ruleOf(dbName, db.access === 'read-write' ? 'ddl' : 'access'),
        reason: `${facts.kind} is DDL, which this database refuses (${db.access === 'read-write' ? 'ddl: false' : 'access: read-only'})`,
      };
    if (cls === 'truncate' && !db.allowUnfilteredWrites)
      return {
        rule: ruleOf(dbName, 'allowUnfilteredWrites'),
        reason: 'TRUNCATE removes every row; it needs allowUnfilteredWrites: true',
      };
  } else if (!ACCESS_CLASSES[db.access].has(cls)) {
    return {
      rule: access,
      reason: `${facts.kind} writes, and database "${dbName}" is read-only (SELECT, VALUES, TABLE, WITH and EXPLAIN only)`,
    };
  }
  if (facts.explained) {
    const inner = facts.explained.statementClass;
    if (!ACCESS_CLASSES[db.access].has(inner))
      return { rule: access, reason: `${facts.kind}: database "${dbName}" is read-only` };
    if (facts.explained.analyze && inner !== 'select')
      return {
        rule: access,
        reason: `${facts.kind} would run the write; EXPLAIN ANALYZE is allowed only for plain reads (drop ANALYZE to see the plan)`,
      };
  }
  if ((cls === 'update' || cls === 'delete') && !facts.filtered && !db.allowUnfilteredWrites)
    return {
      rule: ruleOf(dbName, 'allowUnfilteredWrites'),
      reason: `${facts.kind} without a WHERE clause changes every row; add a WHERE (or set allowUnfilteredWrites: true)`,
    };
  if (facts.writeTarget?.schema && CATALOG_SCHEMAS.has(facts.writeTarget.schema))
    return {
      rule: access,
      reason: `${displayName(facts.writeTarget)} is a system catalog and is never written`,
    };
  for (const rel of facts.relations) {
    if (rel.schema) {
      const refusal = relationRefusal(dbName, db, rel.schema, rel.name);
      if (refusal) return refusal;
    } else if (CREDENTIAL_RELATION_NAMES.has(rel.name)) {
      return relationRefusal(dbName, db, 'pg_catalog', rel.name);
    }
  }
  for (const fn of facts.functions) {
    const ok = fn.schema
      ? functionAllowed(db, fn.schema, fn.name)
      : SAFE_BUILTIN_FUNCTIONS.has(fn.name) ||
        (db.functions ?? []).some((g) => matchGlob(g.slice(g.indexOf('.') + 1), fn.name));
    if (!ok) return functionRefusal(dbName, db, fn);
  }
  for (const op of facts.operators) {
    if (op.schema && op.schema !== 'pg_catalog')
      return {
        rule: ruleOf(dbName, 'functions'),
        reason: `OPERATOR(${displayName(op)}) is outside pg_catalog; only built-in operators are allowed`,
      };
  }
  for (const method of facts.tablesampleMethods) {
    if (!SAFE_TABLESAMPLE_METHODS.has(method))
      return {
        rule: ruleOf(dbName, 'functions'),
        reason: `TABLESAMPLE ${method} is not a built-in sampling method (system, bernoulli)`,
      };
  }
  return undefined;
}

function functionRefusal(dbName: string, db: DatabasePolicy, fn: QualifiedName, why?: string): Refusal {
  const extra = db.functions?.length ? ` or match ${db.functions.join(', ')}` : '';
  return {
    rule: ruleOf(dbName, 'functions'),
    reason:
      why ??
      `function ${displayName(fn)}() is not allowed: functions must be on Airlock's list of safe built-ins${extra}`,
  };
}

/** Checks what only the live catalog could say (search_path resolution, views, user-defined functions). */
export function checkResolved(
  dbName: string,
  db: DatabasePolicy,
  facts: SqlFacts,
  res: Resolution,
): Refusal | undefined {
  const relationCheck = (r: ResolvedRelation, via?: string) =>
    relationRefusal(dbName, db, r.schema, r.name, via);
  for (const r of res.relations) {
    const refusal = relationCheck(r);
    if (refusal) return refusal;
  }
  if (facts.writeTarget && !facts.writeTarget.schema) {
    const target = res.relations.find((r) => r.written);
    if (target && CATALOG_SCHEMAS.has(target.schema))
      return {
        rule: ruleOf(dbName, 'access'),
        reason: `${target.schema}.${target.name} is a system catalog and is never written`,
      };
  }
  for (const dep of res.viewRelations) {
    const refusal = relationCheck(dep, dep.view);
    if (refusal) return refusal;
  }
  for (const fn of res.viewFunctions) {
    if (!functionAllowed(db, fn.schema, fn.name))
      return functionRefusal(
        dbName,
        db,
        fn,
        `view ${fn.view} calls ${fn.schema}.${fn.name}(), which is not on the list of safe built-ins or the policy's functions`,
      );
  }
  for (const fn of facts.functions) {
    const candidates = res.functionCandidates.get(displayName(fn)) ?? [];
    for (const schema of candidates) {
      if (!functionAllowed(db, schema, fn.name))
        return functionRefusal(
          dbName,
          db,
          fn,
          fn.schema
            ? undefined
            : `function ${fn.name}() could resolve to ${schema}.${fn.name}() on this connection's search_path, which the policy does not allow; qualify it (pg_catalog.${fn.name}) or allow it in functions`,
        );
    }
    if (!fn.schema && candidates.length === 0 && !SAFE_BUILTIN_FUNCTIONS.has(fn.name))
      return functionRefusal(dbName, db, fn);
  }
  for (const op of res.userOperators) {
    if (!functionAllowed(db, op.schema, op.functionName))
      return functionRefusal(
        dbName,
        db,
        { name: op.name },
        `operator ${op.name} may resolve to ${op.operatorSchema}.${op.name}, which runs ${op.schema}.${op.functionName}(), not allowed by the policy's functions`,
      );
  }
  for (const t of res.userTypes) {
    if (!matchQualified(db.functions, t.schema, t.name))
      return functionRefusal(
        dbName,
        db,
        { schema: t.schema, name: t.name },
        `type ${t.schema}.${t.name} has user-defined input/output functions; allow it in functions to cast to it`,
      );
  }
  for (const a of res.attributeFunctions) {
    if (!functionAllowed(db, a.schema, a.name))
      return functionRefusal(
        dbName,
        db,
        a,
        `a column reference ending in .${a.name} could call ${a.schema}.${a.name}(row) (attribute notation), which is not allowed; alias the column`,
      );
  }
  return undefined;
}
