// The `servers.postgres` policy section (without `tools`, which the core adds):
//
//   databases:
//     analytics:                          # the name the agent passes as `database`
//       connection: pg-analytics          # secret holding a postgres:// URL (TLS options honoured)
//       access: read-only                 # read-only (default) | read-write (DML; `ddl: true` adds DDL)
//       maxRows: 1000                     # rows returned per call (more: truncated: true)
//       maxResultBytes: 1048576           # bytes of row data returned per call (extension)
//       statementTimeoutMs: 5000          # SET LOCAL statement_timeout; the client cancels past it too
//       tables: ["public.*"]              # optional allowlist of schema.table globs
//       functions: ["public.my_report_*"] # optional: functions allowed beyond the shipped built-ins
//       catalogs: true                    # pg_catalog/information_schema readable (credential catalogs never)
//       maxAffectedRows: 1000             # read-write: a write changing more rows is rolled back
//       allowUnfilteredWrites: false      # read-write: UPDATE/DELETE without WHERE refused unless true
//       ddl: false                        # read-write: DDL refused unless true
//       poolSize: 4                       # connections per team × database (extension)
//       acquireTimeoutMs: 5000            # wait for a free connection, then "busy, retry" (extension)
import { z } from 'zod';
import { globProblem } from '../../src/policy/glob.js';
import { secretNameSchema } from '../../src/secrets/config.js';
import type { SecretRef } from '../../src/tool.js';

export const DEFAULTS = {
  maxRows: 1000,
  maxResultBytes: 1024 * 1024,
  statementTimeoutMs: 5000,
  maxAffectedRows: 1000,
  poolSize: 4,
  acquireTimeoutMs: 5000,
} as const;

/** `schema.name` with a glob on each side (exactly one unquoted dot), e.g. `public.*`, `sales.order_*`. */
const qualifiedGlobSchema = z.string().superRefine((value, ctx) => {
  const parts = value.split('.');
  if (parts.length !== 2 || !parts[0] || !parts[1]) {
    ctx.addIssue({
      code: 'custom',
      message: `write "schema.name" globs such as "public.*" (one "."), not ${JSON.stringify(value)}`,
    });
    return;
  }
  for (const part of parts) {
    const problem = globProblem(part);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  }
});

export const databaseSchema = z
  .object({
    connection: secretNameSchema.describe(
      'Secret holding a postgres:// URL; its password never leaves the host',
    ),
    access: z
      .enum(['read-only', 'read-write'])
      .default('read-only')
      .describe(
        'read-only (default): reads in a READ ONLY transaction; read-write: one INSERT/UPDATE/DELETE',
      ),
    maxRows: z
      .number()
      .int()
      .positive()
      .max(1_000_000)
      .default(DEFAULTS.maxRows)
      .describe('Rows returned per call; more are not fetched and the result says truncated'),
    maxResultBytes: z
      .number()
      .int()
      .positive()
      .max(64 * 1024 * 1024)
      .default(DEFAULTS.maxResultBytes)
      .describe('Bytes of row data returned per call (default 1 MiB); more are not fetched'),
    statementTimeoutMs: z
      .number()
      .int()
      .positive()
      .max(600_000)
      .default(DEFAULTS.statementTimeoutMs)
      .describe('Per-statement timeout (SET LOCAL statement_timeout); the broker cancels the query past it'),
    tables: z
      .array(qualifiedGlobSchema)
      .min(1)
      .optional()
      .describe('Allowlist of schema.table globs for every relation a statement reads or writes'),
    functions: z
      .array(qualifiedGlobSchema)
      .optional()
      .describe('schema.function globs allowed beyond the shipped safe built-ins'),
    catalogs: z
      .boolean()
      .default(true)
      .describe('pg_catalog and information_schema readable (credential catalogs never are)'),
    maxAffectedRows: z
      .number()
      .int()
      .positive()
      .max(1_000_000)
      .default(DEFAULTS.maxAffectedRows)
      .describe('read-write: a write that would change more rows is rolled back'),
    allowUnfilteredWrites: z
      .boolean()
      .default(false)
      .describe('read-write: allow UPDATE/DELETE without WHERE (and TRUNCATE with ddl)'),
    ddl: z
      .boolean()
      .default(false)
      .describe('read-write: allow DDL (CREATE/ALTER/DROP of tables, views, indexes…)'),
    poolSize: z
      .number()
      .int()
      .positive()
      .max(64)
      .default(DEFAULTS.poolSize)
      .describe('Connections per team and database; a call waits a bounded time for one'),
    acquireTimeoutMs: z
      .number()
      .int()
      .positive()
      .max(60_000)
      .default(DEFAULTS.acquireTimeoutMs)
      .describe('How long a call waits for a free connection before "busy, retry" (default 5000)'),
  })
  .strict()
  .superRefine((db, ctx) => {
    if (db.access === 'read-only') {
      for (const key of ['ddl', 'allowUnfilteredWrites'] as const) {
        if (db[key])
          ctx.addIssue({ code: 'custom', path: [key], message: `${key} needs access: read-write` });
      }
    }
  });

export const postgresSectionSchema = z
  .object({
    databases: z
      .record(
        z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]*$/, 'database names: letters, digits, "_" and "-"'),
        databaseSchema,
      )
      .refine((dbs) => Object.keys(dbs).length > 0, 'list at least one database')
      .describe('Databases the agent may name, each with its connection secret and rules'),
  })
  .strict();

export type PostgresSection = z.output<typeof postgresSectionSchema>;
export type DatabasePolicy = z.output<typeof databaseSchema>;

export function postgresSecretRefs(section: PostgresSection): SecretRef[] {
  return Object.entries(section.databases).map(([name, db]) => ({
    name: db.connection,
    path: ['databases', name, 'connection'],
  }));
}
