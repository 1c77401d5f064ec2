// `airlock doctor` checks the fleet limit store the way serve will use it: reachable, the table
// made by `airlock limits migrate`, and the broker's role allowed to count in it. Each problem is
// a failure (fleet-limited calls are refused until it is fixed), and the URL is never printed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LIMITS_SCHEMA_SQL } from '../../src/limits/postgres-store.js';
import { runCli } from '../approvals/helpers.js';
import { makeInstallation, type Installation } from '../helpers/fixture.js';
import { LIMITS_SECRET_YAML, startLimitsDb, useFleetLimits, type LimitsDb } from './limits-context.js';

let db: LimitsDb;
let inst: Installation;

beforeAll(async () => {
  db = await startLimitsDb();
  inst = await makeInstallation({
    extraSecretsYaml: LIMITS_SECRET_YAML,
    policies: { 'acme.yaml': 'team: acme\nservers: {}\n' },
  });
}, 120_000);

afterAll(async () => {
  await inst?.cleanup();
  await db?.close();
});

interface DoctorCheck {
  status: string;
  label: string;
  detail?: string;
}

async function limitsCheck(): Promise<{ code: number; check: DoctorCheck | undefined; output: string }> {
  const r = await runCli(['doctor', '--json', '--config', inst.configFile]);
  const report = JSON.parse(r.stdout) as { checks: DoctorCheck[] };
  return {
    code: r.code,
    check: report.checks.find((c) => c.label.startsWith('fleet limits store')),
    output: r.stdout + r.stderr,
  };
}

describe('doctor and the fleet limit store', () => {
  it('fails before the migration, then with a role that may not count, and passes once granted', async () => {
    // The broker's role, which may not create the table: doctor names the command to run.
    await useFleetLimits(inst, db.brokerUrl);
    let r = await limitsCheck();
    expect(r.check).toMatchObject({ status: 'fail', label: 'fleet limits store (secret "limits-db")' });
    expect(r.check!.detail).toMatch(/^table airlock_limits does not exist: run airlock limits migrate; /);
    expect(r.code).toBe(1);

    await db.query(LIMITS_SCHEMA_SQL); // what `airlock limits migrate` runs, as the table's owner
    r = await limitsCheck();
    expect(r.check!.status).toBe('fail');
    expect(r.check!.detail).toContain('may not SELECT, INSERT and UPDATE airlock_limits');

    await db.grantBroker();
    r = await limitsCheck();
    expect(r.check).toMatchObject({ status: 'ok', detail: 'table airlock_limits in place' });
    expect(r.output).not.toContain(new URL(db.brokerUrl).password);
  });

  it('fails, without the URL, while PostgreSQL is down', async () => {
    await db.cluster.stopServer();
    try {
      const r = await limitsCheck();
      expect(r.check!.status).toBe('fail');
      expect(r.check!.detail).toMatch(
        /^unreachable \(.+\); calls under a rateLimit or dailyTokenBudget are refused/,
      );
      expect(r.output).not.toContain(new URL(db.brokerUrl).password);
      expect(r.code).toBe(1);
    } finally {
      await db.cluster.startServer();
    }
  });
});
