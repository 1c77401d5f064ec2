// Shared setup for the postgres tests: a real throwaway cluster (src/demo/postgres-cluster.ts)
// with a shop database, a deliberately over-privileged agent role (it owns every table, may
// write, create, read server files and signal backends: Airlock alone must hold), a broker in
// this process with the postgres server on a Unix socket, and an MCP client on that socket.
import pg from 'pg';
import { readAuditRecords, type AuditRecord } from '../../src/audit/log.js';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { Broker } from '../../src/broker.js';
import { startPostgresCluster, type PostgresCluster } from '../../src/demo/postgres-cluster.js';
import { connectSocketClient, makeInstallation, type Installation } from '../helpers/fixture.js';

export const AGENT_ROLE = 'agent_rw';
/** Long and distinctive, so any leak of it is found by a plain substring search. */
export const AGENT_PASSWORD = 'pw-Zq8vX3kLm9Tr2Yh7Wn4';

export const SHOP_SQL = `
  CREATE ROLE ${AGENT_ROLE} LOGIN PASSWORD '${AGENT_PASSWORD}';
  GRANT pg_read_server_files, pg_write_server_files, pg_execute_server_program, pg_signal_backend TO ${AGENT_ROLE};
  GRANT CREATE ON DATABASE shop TO ${AGENT_ROLE};
  ALTER SCHEMA public OWNER TO ${AGENT_ROLE};
  SET ROLE ${AGENT_ROLE};
  CREATE SCHEMA sales;
  CREATE SCHEMA secret;
  CREATE TABLE public.customers (id int PRIMARY KEY, name text NOT NULL, email text);
  CREATE TABLE public.orders (id bigint PRIMARY KEY, customer_id int REFERENCES public.customers(id),
    total numeric(12,2) NOT NULL, placed_at timestamptz NOT NULL, note text, blob bytea,
    big bigint, span interval, status text DEFAULT 'open');
  CREATE TABLE public."MixedCase" (id int);
  CREATE TABLE secret.payroll (id int, employee text, salary numeric);
  CREATE TABLE sales.targets (region text, goal numeric);
  CREATE VIEW public.payroll_view AS SELECT * FROM secret.payroll;
  CREATE VIEW public.nested_view AS SELECT * FROM public.payroll_view;
  CREATE VIEW public.order_totals AS SELECT customer_id, sum(total) AS total FROM public.orders GROUP BY customer_id;
  CREATE FUNCTION public.my_report_total() RETURNS numeric LANGUAGE sql STABLE AS 'SELECT sum(total) FROM public.orders';
  CREATE FUNCTION public.leak() RETURNS SETOF secret.payroll LANGUAGE sql SECURITY DEFINER AS 'SELECT * FROM secret.payroll';
  CREATE FUNCTION public.lower(public.orders) RETURNS text LANGUAGE sql AS 'SELECT ''shadow''';
  CREATE VIEW public.leaky_view AS SELECT * FROM public.leak();
  INSERT INTO public.customers SELECT g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 20) g;
  INSERT INTO public.orders (id, customer_id, total, placed_at, note, blob, big, span)
    SELECT g, 1 + g % 20, g * 10.25, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 hour',
           'order ' || g, '\\xdeadbeef'::bytea, 9007199254740993 + g, interval '1 day 02:03:04.5'
      FROM generate_series(1, 50) g;
  INSERT INTO secret.payroll VALUES (1, 'alice', 250000), (2, 'bob', 180000);
  INSERT INTO sales.targets VALUES ('emea', 1000000);
  RESET ROLE;
`;

/** A fingerprint of everything a hostile statement could change: data, schema objects, roles, settings. */
export const SNAPSHOT_SQL = `
  SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
    SELECT 'customers:' || md5(coalesce(string_agg(c::text, ',' ORDER BY id), '')) FROM public.customers c
    UNION ALL SELECT 'orders:' || md5(coalesce(string_agg(o::text, ',' ORDER BY id), '')) FROM public.orders o
    UNION ALL SELECT 'payroll:' || md5(coalesce(string_agg(p::text, ',' ORDER BY id), '')) FROM secret.payroll p
    UNION ALL SELECT 'targets:' || md5(coalesce(string_agg(t::text, ','), '')) FROM sales.targets t
    UNION ALL SELECT 'mixed:' || count(*) FROM public."MixedCase"
    UNION ALL SELECT 'rel:' || n.nspname || '.' || c.relname || ':' || c.relkind::text FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
    UNION ALL SELECT 'fn:' || p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    UNION ALL SELECT 'role:' || rolname || ':' || rolsuper::text || rolcreaterole::text FROM pg_roles
    UNION ALL SELECT 'db:' || datname FROM pg_database
    UNION ALL SELECT 'setting:' || r.setrole || ':' || array_to_string(r.setconfig, ',') FROM pg_db_role_setting r
  ) s(x)`;

export interface PgBroker {
  cluster: PostgresCluster;
  inst: Installation;
  broker: Broker;
  client: Client;
  /** A superuser connection to the shop database, for snapshots and checks. */
  admin: pg.Client;
  agentUrl: string;
  snapshot(): Promise<string>;
  call(tool: string, args: Record<string, unknown>): Promise<CallOutcome>;
  close(): Promise<void>;
}

export interface CallOutcome {
  isError: boolean;
  text: string;
  structured: Record<string, unknown> | undefined;
}

/** The default policy: shop read-only under public.*, shopw read-write with small bounds. */
export function shopPolicy(extra = ''): string {
  return `team: acme
servers:
  postgres:
    databases:
      shop:
        connection: pg-shop
        tables: ["public.*"]
        functions: ["public.my_report_*"]
        maxRows: 100
        statementTimeoutMs: 2000
      shopw:
        connection: pg-shop
        access: read-write
        tables: ["public.*"]
        maxAffectedRows: 5
        statementTimeoutMs: 2000
      wide:
        connection: pg-shop
        maxRows: 100000
        maxResultBytes: 65536
        statementTimeoutMs: 500
      nocat:
        connection: pg-shop
        catalogs: false
      slow:
        connection: pg-shop
        statementTimeoutMs: 60000
      schema:
        connection: pg-shop
        access: read-write
        ddl: true
        tables: ["public.agent_*"]
      capped:
        connection: pg-shop
        maxResultBytes: 65536
        statementTimeoutMs: 20000
${extra}    tools:
      query: {}
      explain: {}
      list_tables: {}
      describe_table: {}
`;
}

export async function startPgBroker(
  opts: { policy?: string; secrets?: Record<string, string>; cluster?: PostgresCluster } = {},
): Promise<PgBroker> {
  const [{ Broker }, { loadConfig }, { silentLogger }] = await Promise.all([
    import('../../src/broker.js'),
    import('../../src/config/airlock-yaml.js'),
    import('../../src/log.js'),
  ]);
  const cluster = opts.cluster ?? (await startPostgresCluster());
  const owned = !opts.cluster;
  let inst: Installation | undefined;
  let broker: Broker | undefined;
  let admin: pg.Client | undefined;
  let client: Client | undefined;
  const close = async () => {
    await client?.close().catch(() => undefined);
    await broker?.stop(2000);
    await admin?.end().catch(() => undefined);
    await inst?.cleanup();
    if (owned) await cluster.close();
  };
  try {
    if (owned) {
      await cluster.admin('CREATE DATABASE shop');
      await cluster.admin(SHOP_SQL, 'shop');
    }
    const agentUrl = cluster.url({ user: AGENT_ROLE, password: AGENT_PASSWORD, database: 'shop' });
    inst = await makeInstallation({
      secrets: { 'pg-shop': agentUrl, ...opts.secrets },
      policies: { 'acme.yaml': opts.policy ?? shopPolicy() },
    });
    broker = await Broker.start(await loadConfig(inst.configFile), { log: silentLogger() });
    // Over the socket folder, so it works whether or not TCP demands TLS.
    admin = new pg.Client({
      host: cluster.socketDir,
      port: cluster.port,
      user: cluster.superuser,
      password: cluster.superPassword,
      database: 'shop',
    });
    await admin.connect();
    ({ client } = await connectSocketClient(inst.socket('acme', 'postgres')));
    const c = client;
    const a = admin;
    return {
      cluster,
      inst,
      broker,
      client: c,
      admin: a,
      agentUrl,
      snapshot: async () => String((await a.query(SNAPSHOT_SQL)).rows[0].md5),
      call: async (tool, args) => {
        const r = (await c.callTool({ name: tool, arguments: args })) as {
          isError?: boolean;
          content: Array<{ type: string; text?: string }>;
          structuredContent?: Record<string, unknown>;
        };
        return {
          isError: r.isError === true,
          text: r.content[0]?.text ?? '',
          structured: r.structuredContent,
        };
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Every record of an audit file, in order. */
export async function auditRecords(file: string): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for await (const r of readAuditRecords(file)) out.push(r);
  return out;
}
