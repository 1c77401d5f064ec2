// `airlock limits migrate`: creates the fleet-wide limit table in the PostgreSQL named by
// `limits.connection` (idempotent; README "Fleet-wide limits" shows the schema). Run it once
// per database before the brokers start with `limits: { store: postgres }`: until the table
// exists, fleet-limited calls are refused.
import type { CommandContext } from '../cli.js';
import { silentLogger } from '../log.js';
import { Redactor } from '../secrets/redact.js';
import { SecretStore } from '../secrets/store.js';
import { FleetLimitError, FleetLimits } from './fleet.js';
import { LIMITS_TABLE } from './names.js';

class UserError extends Error {
  override name = 'UserError';
}

export async function limitsMigrateMain(ctx: CommandContext): Promise<number> {
  const config = await ctx.config();
  const redactor = new Redactor();
  const fleet = FleetLimits.fromConfig(config, new SecretStore(config.secrets, redactor), silentLogger());
  if (!fleet)
    throw new UserError(
      `airlock limits migrate: ${config.file} has no limits: { store: postgres, connection: <secret> }; nothing to migrate`,
    );
  try {
    await fleet.migrate();
  } catch (err) {
    const why =
      err instanceof FleetLimitError ? `fleet limit store unreachable (${err.detail})` : String(err);
    throw new UserError(`airlock limits migrate: ${redactor.scrub(why)}`);
  } finally {
    await fleet.close();
  }
  process.stdout.write(`ok: table ${LIMITS_TABLE} is in place (secret "${config.limits!.connection}")\n`);
  return 0;
}
