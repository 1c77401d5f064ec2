// The reviewed function allowlist (servers/postgres/functions.ts) against the live catalog of a
// real cluster: no function that reads files or relations by name, runs SQL text, signals or
// inspects other sessions, changes settings, takes locks or touches sequences is on it, and the
// rules refuse each of those by name in a statement.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startPostgresCluster, type PostgresCluster } from '../../src/demo/postgres-cluster.js';
import { SAFE_BUILTIN_FUNCTIONS } from '../../servers/postgres/functions.js';
import { checkStatic } from '../../servers/postgres/rules.js';
import { databaseSchema } from '../../servers/postgres/section.js';
import { analyzeSql, loadSqlParser } from '../../servers/postgres/sql.js';

/** Families of pg_catalog functions with effects or reach beyond their arguments. */
const HARMFUL =
  /^(pg_read_|pg_ls_|pg_stat_file|lo_|pg_terminate_backend|pg_cancel_backend|pg_reload_conf|pg_rotate_logfile|set_config|current_setting|pg_advisory|pg_try_advisory|pg_sleep|dblink|.*_to_xml(schema)?$|.*_to_xml_and_xmlschema$|ts_stat$|ts_rewrite$|pg_notify$|nextval$|setval$|currval$|lastval$|pg_stat_reset|pg_create_|pg_drop_|pg_switch_wal|pg_promote|pg_logical_|pg_replication_|pg_file_|pg_import_system_collations|pg_backup_|pg_log_backend|pg_export_snapshot|pg_current_xact_id|txid_current|pg_relation_size|pg_total_relation_size|pg_table_size|pg_indexes_size|pg_database_size|pg_input_is_valid|pg_get_.*def$|has_.*_privilege$)/;

let cluster: PostgresCluster;
let catalog: Array<{ proname: string }>;

beforeAll(async () => {
  await loadSqlParser();
  cluster = await startPostgresCluster();
  const client = new pg.Client({
    connectionString: cluster.url({
      user: cluster.superuser,
      password: cluster.superPassword,
      database: 'postgres',
    }),
  });
  await client.connect();
  catalog = (
    await client.query<{ proname: string }>(
      "SELECT DISTINCT proname::text AS proname FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace",
    )
  ).rows;
  await client.end();
});
afterAll(async () => {
  await cluster?.close();
});

it('no harmful pg_catalog function is on the allowlist', () => {
  const harmful = catalog.map((r) => r.proname).filter((name) => HARMFUL.test(name));
  // The pattern does match the live catalog (so this test can fail).
  expect(harmful).toEqual(
    expect.arrayContaining(['pg_read_file', 'query_to_xml', 'set_config', 'lo_import']),
  );
  expect(harmful.filter((name) => SAFE_BUILTIN_FUNCTIONS.has(name))).toEqual([]);
});

it('every harmful function is refused in a statement, qualified or not', () => {
  const db = databaseSchema.parse({ connection: 'pg' });
  const harmful = catalog.map((r) => r.proname).filter((name) => HARMFUL.test(name));
  for (const name of harmful) {
    for (const sql of [`SELECT "${name}"()`, `SELECT pg_catalog."${name}"()`, `SELECT * FROM "${name}"()`]) {
      const refusal = checkStatic('db', db, analyzeSql(sql));
      expect(refusal?.rule, sql).toBe('postgres.databases.db.functions');
    }
  }
});

it('most of the allowlist exists in this server (names are not typos); the rest are newer built-ins', () => {
  const present = new Set(catalog.map((r) => r.proname));
  const missing = [...SAFE_BUILTIN_FUNCTIONS].filter((name) => !present.has(name));
  // Syntax that parses to a pg_catalog call of its own name (extract, overlay…) or functions of
  // newer releases (PG 16–18) may be absent (on PG 15 about 55: coalesce, xmlelement, any_value,
  // uuidv7…); a much longer list of absentees would be a broken list.
  expect(missing.length).toBeLessThan(SAFE_BUILTIN_FUNCTIONS.size / 6);
});
