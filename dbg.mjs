import { startPostgresCluster } from './dist/src/demo/postgres-cluster.js';
import { PostgresRuntime } from './dist/servers/postgres/runtime.js';
import { postgresSectionSchema } from './dist/servers/postgres/section.js';
import { silentLogger } from './dist/src/log.js';
const c = await startPostgresCluster();
const url = c.url({user: c.superuser, password: c.superPassword, database: 'postgres'});
const section = postgresSectionSchema.parse({ databases: { d: { connection: 'u' } } });
const rt = new PostgresRuntime(section, { get: async () => url }, silentLogger());
const lease = await rt.acquire('d', section.databases.d);
const p = lease.client.query('SELECT count(*) FROM generate_series(1, 4000000000)').catch(e => console.log('query err', e.code, e.message));
await new Promise(r => setTimeout(r, 300));
console.log('pid', lease.client.processID);
const opts = lease.pool?.options; 
try { await lease.cancel(); console.log('cancel returned'); } catch (e) { console.log('cancel err', e); }
await p;
await lease.release(false); await rt.close(); await c.close();
