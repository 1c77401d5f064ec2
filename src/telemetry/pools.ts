// Gauges read at each metric export: the http server's keep-alive connections and each team's
// postgres pools (names as in the OpenTelemetry HTTP and database conventions), and how far the
// central audit table is behind the local log.
import { openConnections } from '../../servers/http/client.js';
import type { PoolUse } from '../tool.js';
import type { AuditShipper } from '../audit/shipper.js';
import type { Telemetry } from './telemetry.js';

export function observePools(
  telemetry: Telemetry,
  pools: () => Array<PoolUse & { team: string; server: string }>,
): void {
  telemetry.observe(
    'http.client.open_connections',
    () => {
      const { active, idle } = openConnections();
      return [
        { value: active, attributes: { 'http.connection.state': 'active' } },
        { value: idle, attributes: { 'http.connection.state': 'idle' } },
      ];
    },
    { unit: '{connection}', description: "Connections of the http server's keep-alive pools" },
  );
  const poolAttributes = (p: PoolUse & { team: string; server: string }) => ({
    'db.client.connection.pool.name': `${p.team}/${p.name}`,
    'airlock.team': p.team,
    'airlock.server': p.server,
  });
  telemetry.observe(
    'db.client.connection.count',
    () =>
      pools().flatMap((p) => [
        {
          value: p.total - p.idle,
          attributes: { ...poolAttributes(p), 'db.client.connection.state': 'used' },
        },
        { value: p.idle, attributes: { ...poolAttributes(p), 'db.client.connection.state': 'idle' } },
      ]),
    { unit: '{connection}', description: 'Connections of each team database pool' },
  );
  telemetry.observe(
    'db.client.connection.pending_requests',
    () => pools().map((p) => ({ value: p.waiting, attributes: poolAttributes(p) })),
    { unit: '{request}', description: 'Calls waiting for a connection of a team database pool' },
  );
}

/** How far the central audit table (audit.postgres) is behind the local log. */
export function observeShipping(telemetry: Telemetry, shipper: Pick<AuditShipper, 'lag'>): void {
  telemetry.observe('airlock.audit.shipping.lag', () => shipper.lag().records, {
    unit: '{record}',
    description: 'Audit records not yet in the central PostgreSQL table',
  });
  telemetry.observe('airlock.audit.shipping.delay', () => shipper.lag().seconds, {
    unit: 's',
    description: 'Age of the oldest audit record not yet in the central table',
  });
}
