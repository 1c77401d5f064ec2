// Shared setup for the fleet-limit tests: one real PostgreSQL cluster holding the counter table
// (made by `airlock limits migrate`), and installations whose airlock.yaml points `limits:` at it.
import { appendFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { startPostgresCluster, type PostgresCluster } from '../../src/demo/postgres-cluster.js';
import type { Installation } from '../helpers/fixture.js';

export const LIMITS_ROLE = 'airlock_limits';
/** Long and distinctive, so a leak of it would be found by a plain substring search. */
export const LIMITS_PASSWORD = 'lim-Pw7Kq2Zx9Vb4Nm8Rt3';

export const BROKER_ROLE = 'airlock_broker';
const BROKER_PASSWORD = 'brk-Pw3Hn8Lq5Xc2Vz7Ty9';

export interface LimitsDb {
  cluster: PostgresCluster;
  /** The postgres:// URL of the database owner (it may run `airlock limits migrate`). */
  url: string;
  /** A role with only SELECT, INSERT, UPDATE on airlock_limits (granted by `grantBroker`), as README says. */
  brokerUrl: string;
  /** Grants the broker role its rights on the table (after the migration made it). */
  grantBroker(): Promise<void>;
  /** Runs SQL in the limits database as its owner; returns the rows. */
  query<T extends pg.QueryResultRow = Record<string, unknown>>(sql: string, values?: unknown[]): Promise<T[]>;
  close(): Promise<void>;
}

export async function startLimitsDb(): Promise<LimitsDb> {
  const cluster = await startPostgresCluster();
  try {
    await cluster.admin(`CREATE ROLE ${LIMITS_ROLE} LOGIN PASSWORD '${LIMITS_PASSWORD}'`);
    await cluster.admin(`CREATE DATABASE fleet OWNER ${LIMITS_ROLE}`);
    await cluster.admin(`CREATE ROLE ${BROKER_ROLE} LOGIN PASSWORD '${BROKER_PASSWORD}'`);
  } catch (err) {
    await cluster.close();
    throw err;
  }
  const url = cluster.url({ user: LIMITS_ROLE, password: LIMITS_PASSWORD, database: 'fleet' });
  const brokerUrl = cluster.url({ user: BROKER_ROLE, password: BROKER_PASSWORD, database: 'fleet' });
  return {
    cluster,
    url,
    brokerUrl,
    grantBroker: () =>
      cluster.admin(`GRANT SELECT, INSERT, UPDATE ON airlock_limits TO ${BROKER_ROLE}`, 'fleet'),
    async query<T extends pg.QueryResultRow>(sql: string, values: unknown[] = []) {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        return (await client.query<T>(sql, values)).rows;
      } finally {
        await client.end();
      }
    },
    close: () => cluster.close(),
  };
}

/** makeInstallation's `extraSecretsYaml` for the `limits-db` secret that useFleetLimits fills. */
export const LIMITS_SECRET_YAML = '  limits-db: { file: ./secrets/limits-db }';

/** Writes the URL into the `limits-db` secret file. */
export function setLimitsUrl(inst: Installation, url: string): Promise<void> {
  return writeFile(path.join(inst.root, 'secrets', 'limits-db'), url + '\n', { mode: 0o600 });
}

/** Writes the URL into the `limits-db` secret file and points airlock.yaml's `limits:` at it. */
export async function useFleetLimits(inst: Installation, url: string, timeoutMs = 2000): Promise<void> {
  await setLimitsUrl(inst, url);
  await appendFile(
    inst.configFile,
    `limits: { store: postgres, connection: limits-db, timeoutMs: ${timeoutMs} }\n`,
  );
}
