// `airlock doctor`'s Postgres check: connect as each database's role and report whether a
// read-only database is read-only for that role too. Airlock's rules refuse writes, but the role
// is the last line of defence: a role that could write, create objects, read or write server
// files, run programs, signal other backends or bypass row security fails the check, with the
// statement that revokes it.
import pg from 'pg';
import type { DatabasePolicy } from './section.js';

export interface RoleFinding {
  ok: boolean;
  /** What the role could do, each with the statement an operator runs to take it away. */
  problems: string[];
  role?: string;
}

const DANGEROUS_ROLES = [
  'pg_read_server_files',
  'pg_write_server_files',
  'pg_execute_server_program',
  'pg_signal_backend',
  'pg_write_all_data',
];

/** An identifier as quote_ident writes it: bare when it can be, quoted otherwise. */
const ident = (s: string) => (/^[a-z_][a-z0-9_$]*$/.test(s) ? s : pg.escapeIdentifier(s));

/** Connects with `url` and lists what a read-only database's role must not be able to do. */
export async function checkReadOnlyRole(url: string, db: DatabasePolicy): Promise<RoleFinding> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: 5000,
    statement_timeout: 10_000,
  });
  await client.connect();
  try {
    const me = (
      await client.query<{
        role: string;
        db: string;
        rolsuper: boolean;
        rolbypassrls: boolean;
        createdb: boolean;
        createrole: boolean;
      }>(
        `SELECT current_user AS role, current_database() AS db, rolsuper, rolbypassrls,
                rolcreatedb AS createdb, rolcreaterole AS createrole
           FROM pg_roles WHERE rolname = current_user`,
      )
    ).rows[0]!;
    const role = ident(me.role);
    if (db.access !== 'read-only') {
      return {
        ok: !me.rolsuper,
        role: me.role,
        problems: me.rolsuper ? [`holds SUPERUSER (ALTER ROLE ${role} NOSUPERUSER)`] : [],
      };
    }
    const problems: string[] = [];
    if (me.rolsuper) problems.push(`holds SUPERUSER (ALTER ROLE ${role} NOSUPERUSER)`);
    if (me.rolbypassrls) problems.push(`holds BYPASSRLS (ALTER ROLE ${role} NOBYPASSRLS)`);
    if (me.createrole) problems.push(`holds CREATEROLE (ALTER ROLE ${role} NOCREATEROLE)`);
    if (me.createdb) problems.push(`holds CREATEDB (ALTER ROLE ${role} NOCREATEDB)`);
    const memberships = await client.query<{ rolname: string }>(
      `SELECT rolname FROM pg_roles WHERE rolname = ANY($1) AND pg_has_role(current_user, oid, 'MEMBER') ORDER BY 1`,
      [DANGEROUS_ROLES],
    );
    for (const m of memberships.rows)
      problems.push(`is a member of ${m.rolname} (REVOKE ${m.rolname} FROM ${role})`);
    const writable = await client.query<{ name: string; privs: string; owns: boolean }>(
      `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name,
              concat_ws(', ',
                CASE WHEN has_table_privilege(c.oid, 'INSERT') THEN 'INSERT' END,
                CASE WHEN has_table_privilege(c.oid, 'UPDATE') THEN 'UPDATE' END,
                CASE WHEN has_table_privilege(c.oid, 'DELETE') THEN 'DELETE' END,
                CASE WHEN has_table_privilege(c.oid, 'TRUNCATE') THEN 'TRUNCATE' END) AS privs,
              pg_has_role(current_user, c.relowner, 'MEMBER') AS owns
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
          AND (has_table_privilege(c.oid, 'INSERT') OR has_table_privilege(c.oid, 'UPDATE')
               OR has_table_privilege(c.oid, 'DELETE') OR has_table_privilege(c.oid, 'TRUNCATE'))
        ORDER BY 1`,
    );
    const shown = writable.rows.slice(0, 10);
    for (const t of shown) {
      problems.push(
        t.owns
          ? `owns ${t.name}, so may write it (ALTER TABLE ${t.name} OWNER TO another role; grant ${role} SELECT)`
          : `may ${t.privs} ${t.name} (REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ${t.name} FROM ${role})`,
      );
    }
    if (writable.rows.length > shown.length)
      problems.push(`… and ${writable.rows.length - shown.length} more writable tables`);
    const schemas = await client.query<{ name: string }>(
      `SELECT quote_ident(nspname) AS name FROM pg_namespace
        WHERE has_schema_privilege(oid, 'CREATE') AND nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
        ORDER BY 1`,
    );
    for (const s of schemas.rows)
      problems.push(
        `may create objects in schema ${s.name} (REVOKE CREATE ON SCHEMA ${s.name} FROM ${role}, and FROM PUBLIC if everyone has it)`,
      );
    const dbCreate = await client.query<{ ok: boolean }>(
      `SELECT has_database_privilege(current_database(), 'CREATE') AS ok`,
    );
    if (dbCreate.rows[0]?.ok)
      problems.push(
        `may create schemas in database ${ident(me.db)} (REVOKE CREATE ON DATABASE ${ident(me.db)} FROM ${role})`,
      );
    return { ok: problems.length === 0, problems, role: me.role };
  } finally {
    await client.end().catch(() => undefined);
  }
}
