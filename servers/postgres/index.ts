// The postgres server: SQL on a team's databases through a broker that holds the connection
// URL, under rules read from the real Postgres parse tree (one statement, statement classes,
// table globs on every relation, an allowlist of functions, bounded writes and fetches).
import { defineServer } from '../../src/tool.js';
import type { PostgresRuntime } from './runtime.js';
import { postgresSecretRefs, postgresSectionSchema, type PostgresSection } from './section.js';
import { postgresTools } from './tools.js';

export type { PostgresSection, DatabasePolicy } from './section.js';
export { postgresSectionSchema } from './section.js';

export const postgresServer = defineServer<PostgresSection, PostgresRuntime>({
  name: 'postgres',
  description:
    'SQL on policy-listed Postgres databases: read-only transactions, table and function allowlists, bounded writes',
  section: postgresSectionSchema,
  tools: postgresTools,
  secretRefs: postgresSecretRefs,
  // The runtime reads each database's policy per call, so a reload (which rebuilds it) is enough.
  // `pg` loads with the first runtime: commands that only read tool definitions never load it.
  async createRuntime({ secrets, log }) {
    const { PostgresRuntime } = await import('./runtime.js');
    return new PostgresRuntime(secrets, log);
  },
});
