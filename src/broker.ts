// The broker process: wires config → secrets → audit → policies → pipeline, then serves MCP
// sessions on per-team Unix sockets (`airlock serve`) or on stdin/stdout (`airlock stdio`).
import { lstat, unlink, chmod, lchown, link } from 'node:fs/promises';
import type http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { startControlServer, type ControlServer } from './approvals/control.js';
import { ApprovalService } from './approvals/service.js';
import { AuditLog, LOCK_IDLE_HOLD_MS, LOCK_IDLE_HOLD_WATCHED_MS } from './audit/log.js';
import { loadOrCreateAuditSigner } from './audit/key.js';
import { loadOrCreateBrokerId } from './audit/broker-id.js';
import { AuditShipper } from './audit/shipper.js';
import type { AirlockConfig } from './config/airlock-yaml.js';
import { createLogger, type Logger, type LogFormat } from './log.js';
import { CallPipeline } from './pipeline/pipeline.js';
import { socketDirProblem } from './transport/socket-dir.js';
import { PolicyStore } from './policy/team-policy.js';
import { FleetLimits, type SharedRateLimiter } from './limits/fleet.js';
import { HostRateLimiter } from './limits/local-store.js';
import { Redactor } from './secrets/redact.js';
import { SecretStore, withoutSecretName } from './secrets/store.js';
import { SERVERS } from './servers.js';
import { NdjsonTransport } from './transport/ndjson.js';
import { openSession, type McpSession } from './transport/session.js';
import { ensureFolder, FolderError } from './transport/folders.js';
import { startTelemetry, type Telemetry } from './telemetry/telemetry.js';
import type { ServerName } from './tool.js';

/** Connections per model socket (HTTP keep-alive); MCP sockets are bounded by `sessions` in airlock.yaml. */
const MAX_MODEL_CONNECTIONS = 256;
/** A connection that has not completed the MCP handshake by then is closed. */
const HANDSHAKE_TIMEOUT_MS = 30_000;
const DRAIN_TIMEOUT_MS = 30_000;

export interface Core {
  config: AirlockConfig;
  log: Logger;
  redactor: Redactor;
  secrets: SecretStore;
  audit: AuditLog;
  /** This broker's id, in every audit record (`broker`). */
  brokerId: string;
  /** Ships the audit log to PostgreSQL (`audit.postgres`, serve only); `lag()` for metrics. */
  shipper?: AuditShipper;
  policies: PolicyStore;
  pipeline: CallPipeline;
  /** rateLimit counters: the host's (stateDir/ratelimits.json, shared by its processes) or the fleet's. */
  rateLimits: SharedRateLimiter;
  /** Set when `limits: { store: postgres }`: rateLimit and dailyTokenBudget count there. */
  fleetLimits?: FleetLimits;
  approvals: ApprovalService;
  /** OpenTelemetry when `telemetry:` is set (src/telemetry); undefined when off. */
  telemetry?: Telemetry;
  close(): Promise<void>;
}

export interface CoreOptions {
  log?: Logger;
  watch?: boolean;
  /** Format of the logger made when `log` is not given (default: pretty on a terminal). */
  logFormat?: LogFormat;
  /** Level of the logger made when `log` is not given (default AIRLOCK_LOG_LEVEL or info). */
  logLevel?: string;
  /** Refuse to start while any secret does not resolve (`serve --strict-secrets`). */
  strictSecrets?: boolean;
  /** How long a read secret value is reused (default DEFAULT_CACHE_TTL_MS; 0 reads on every call). */
  secretCacheTtlMs?: number;
  /** Start the central audit shipper when `audit.postgres` is set (Broker.start: serve). */
  shipAudit?: boolean;
  /** With `policies: { git: … }`: fetch the repository and follow it (serve only). */
  followPolicyGit?: boolean;
}

/** Builds everything but the transports. Fails (throws) on a broken config, policy or audit log. */
export async function createCore(config: AirlockConfig, opts: CoreOptions = {}): Promise<Core> {
  const redactor = new Redactor();
  const log = opts.log ?? createLogger(redactor, opts.logLevel, opts.logFormat);
  const secrets = new SecretStore(
    config.secrets,
    redactor,
    opts.secretCacheTtlMs === undefined ? {} : { cacheTtlMs: opts.secretCacheTtlMs },
  );
  // Resolve every secret up front so the redactor knows all values before any call runs.
  const unresolved: string[] = [];
  for (const r of await secrets.resolveAll()) {
    if (!r.ok) {
      unresolved.push(r.name);
      const error = withoutSecretName(r.name, r.error ?? '');
      log.warn({ secret: r.name, error }, 'secret does not resolve; calls that need it will fail');
    } else if (r.warning)
      log.warn({ secret: r.name, warning: withoutSecretName(r.name, r.warning) }, 'secret warning');
  }
  if (unresolved.length && (opts.strictSecrets || config.strictSecrets)) {
    throw new UserError(
      `strict secrets: ${unresolved.map((n) => `"${n}"`).join(', ')} ${unresolved.length === 1 ? 'does' : 'do'} not resolve ` +
        `(see the warnings above, or run airlock doctor); fix ${unresolved.length === 1 ? 'it' : 'them'} or remove them from airlock.yaml`,
    );
  }
  // A folder that cannot be made (permission, a file in the path, /proc) is the operator's to fix.
  await ensureFolder(path.dirname(config.audit.file), 'audit folder', 0o700);
  // The host key signs checkpoint records; without it the chain is still written, unanchored.
  const signer = await loadOrCreateAuditSigner(config.stateDir).catch((err: Error) => {
    log.error(
      { err: err.message, stateDir: config.stateDir },
      'no audit signing key; checkpoints are not written',
    );
    return undefined;
  });
  const brokerId = await loadOrCreateBrokerId(config.stateDir, config.brokerId);
  const telemetry = await startTelemetry(config.telemetry, {
    log,
    secretValue: (name) => secrets.brokerValue(name),
    scrub: (text) => redactor.scrub(text),
    servers: SERVERS.loaded,
    instanceId: brokerId,
  });
  // Nothing exported yet is lost when start-up fails below; the exporters' timers must not linger.
  const stopTelemetry = async () => telemetry?.shutdown();
  let shipper: AuditShipper | undefined;
  const made: { pipeline?: CallPipeline } = {}; // the pipeline is made below, once the log is open
  const audit = await AuditLog.open(config.audit.file, {
    redactor,
    idleHoldMs: LOCK_IDLE_HOLD_MS, // the broker's event loop never blocks on a synchronous call
    idleHoldWatchedMs: LOCK_IDLE_HOLD_WATCHED_MS,
    // …except on a fast fdatasync while one call (the one being recorded) or none is in flight.
    syncInline: { when: () => (made.pipeline?.activeCalls ?? 0) <= 1 },
    ...(signer ? { checkpoints: { signer } } : {}),
    ...(telemetry ? { onFsync: (seconds: number) => telemetry.auditFsync(seconds) } : {}),
    broker: brokerId,
    onSync: () => shipper?.wake(),
  }).catch(async (err: unknown) => {
    await stopTelemetry();
    throw err;
  });
  const central = config.audit.postgres;
  if (central && opts.shipAudit) {
    shipper = new AuditShipper({
      file: config.audit.file,
      broker: brokerId,
      table: central.table,
      stateDir: config.stateDir,
      connection: () => secrets.brokerValue(central.connection),
      log: log.child({ component: 'audit-shipper' }),
    });
    if (telemetry) (await import('./telemetry/pools.js')).observeShipping(telemetry, shipper);
  }
  if (audit.tornTailSetAside)
    log.warn(
      { file: audit.tornTailSetAside.file, bytes: audit.tornTailSetAside.bytes },
      'the audit log ended in a half-written line (a crash cut its write short; that call was never answered); moved it aside',
    );
  let policies: PolicyStore;
  try {
    // Policies from git: only serve fetches them; other commands read the commit serve put in force.
    policies =
      config.policyGit && opts.followPolicyGit
        ? await (await import('./policy/git-source.js')).loadGitPolicies(config, SERVERS, log, secrets)
        : await PolicyStore.load(config, SERVERS, log);
  } catch (err) {
    await audit.close();
    await stopTelemetry();
    throw err;
  }
  if (opts.watch !== false && !config.policyGit) policies.watch();
  // Counted in the file on every check (not at exit), so serve, stdio and call share them.
  const fleetLimits = FleetLimits.fromConfig(config, secrets, log);
  const rateLimits = fleetLimits ?? new HostRateLimiter(config.stateDir);
  const approvals = new ApprovalService({
    stateDir: config.stateDir,
    audit,
    redact: (value) => redactor.scrubDeep(value),
    log,
  });
  try {
    await approvals.start();
  } catch (err) {
    await audit.close();
    await stopTelemetry();
    throw err;
  }
  const pipeline = (made.pipeline = new CallPipeline({
    approvals,
    servers: SERVERS.loaded,
    policies,
    audit,
    secrets,
    redactor,
    rateLimiter: rateLimits,
    stateDir: config.stateDir,
    log,
    ...(telemetry ? { telemetry } : {}),
  }));
  // With telemetry only: its gauges read the http server's pools (loaded with them).
  if (telemetry) (await import('./telemetry/pools.js')).observePools(telemetry, () => pipeline.poolUse());
  policies.on('change', (teams: string[]) => {
    for (const team of teams) void pipeline.resetRuntimes(team);
  });
  // Started last, so a start-up that fails above leaves no shipping loop behind.
  shipper?.start();
  return {
    config,
    log,
    redactor,
    secrets,
    audit,
    brokerId,
    ...(shipper ? { shipper } : {}),
    policies,
    pipeline,
    rateLimits,
    ...(fleetLimits ? { fleetLimits } : {}),
    approvals,
    ...(telemetry ? { telemetry } : {}),
    async close() {
      policies.close();
      await approvals.close();
      await pipeline.resetRuntimes();
      await fleetLimits?.close();
      await audit.close();
      await shipper?.stop();
      await stopTelemetry();
    },
  };
}

/** Kept here for callers that import it from the broker. */
export { sanitizeRateState } from './limits/local-store.js';

interface Listener {
  team: string;
  /** An MCP server, or `model` (the HTTP/1.1 model API proxy). */
  server: ServerName | 'model';
  socketPath: string;
  net: net.Server;
  sessions: Set<McpSession>;
  /** Every open connection, sessions or not yet (handshake, refusal): ended when the socket goes. */
  connections: Set<net.Socket>;
}

export class Broker {
  private readonly listeners = new Map<string, Listener>();
  private readonly modelProxies = new Set<http.Server>();
  /** MCP sessions per team, counted from accept (before the session is set up) to close. */
  private readonly teamSessions = new Map<string, number>();
  private totalSessions = 0;
  private stopping = false;
  /** The out-of-band approval socket (`<stateDir>/approvals/control/<pid>.sock`). */
  private control: ControlServer | undefined;
  private syncing: Promise<void> = Promise.resolve();

  private constructor(readonly core: Core) {}

  static async start(config: AirlockConfig, opts: CoreOptions = {}): Promise<Broker> {
    const core = await createCore(config, { shipAudit: true, followPolicyGit: true, ...opts });
    const broker = new Broker(core);
    try {
      broker.control = await startControlServer(core.approvals, core.log, core.config.approvers);
    } catch (err) {
      await core.close();
      throw err;
    }
    // At startup a socket that cannot be served is fatal (the operator is watching); on a later
    // reload it is logged and the other teams carry on.
    // Not logged here: the error thrown says it once (one socket folder problem fails every team alike).
    const failures = await broker.syncSockets(false);
    if (failures.length) {
      await broker.stop();
      const message = [...new Set(failures.map((f) => f.message))].join('\n');
      // Socket folder problems (ownership, symlinks, group, creation) are the operator's to fix: exit 1.
      const userFixable = failures.every((f) => f instanceof UserError || f instanceof FolderError);
      throw userFixable ? new UserError(message) : new Error(message);
    }
    core.policies.on('change', (teams: string[]) => void broker.onPolicyChange(teams));
    // A git policy source runs on its own timer: catch up with a commit put in force meanwhile.
    if (config.policyGit) await broker.syncSockets();
    return broker;
  }

  /** Socket paths currently served, for logs and tests. */
  sockets(): string[] {
    return [...this.listeners.values()].map((l) => l.socketPath);
  }

  sessionCount(): number {
    let n = 0;
    for (const l of this.listeners.values()) n += l.sessions.size;
    return n;
  }

  async reload(): Promise<void> {
    // The store logs each broken file with its position and keeps the last good policy.
    await this.core.policies.reload();
    // A change already triggered a socket sync through the 'change' event; wait for it.
    await this.syncSockets();
  }

  private async onPolicyChange(teams: string[]): Promise<void> {
    await this.syncSockets();
    for (const l of this.listeners.values()) {
      if (teams.includes(l.team)) for (const s of l.sessions) s.notifyToolsChanged();
    }
    this.core.log.info({ teams }, 'policies reloaded');
  }

  /**
   * Opens a socket for every (team, server) the policies enable and closes the rest. Serialized.
   * One socket that cannot be opened is logged and does not keep the others from opening;
   * the failures are returned.
   */
  syncSockets(logFailures = true): Promise<Error[]> {
    const run = this.syncing.then(() => this.doSync(logFailures));
    this.syncing = run.then(
      () => undefined,
      (err) => this.core.log.error({ err: (err as Error).message }, 'could not update sockets'),
    );
    return run.catch((err: Error) => [err]);
  }

  private async doSync(logFailures: boolean): Promise<Error[]> {
    if (this.stopping) return [];
    const failures: Error[] = [];
    const open = async (team: string, server: ServerName | 'model') => {
      try {
        await this.listen(team, server);
      } catch (err) {
        failures.push(err as Error);
        if (logFailures)
          this.core.log.error({ team, server, err: (err as Error).message }, 'cannot open socket');
      }
    };
    const wanted = new Set<string>();
    for (const policy of this.core.policies.teams()) {
      for (const name of Object.keys(policy.servers)) {
        if (!SERVERS.has(name)) continue;
        const key = `${policy.team}/${name}`;
        wanted.add(key);
        if (!this.listeners.has(key)) await open(policy.team, name as ServerName);
      }
      if (policy.model) {
        const key = `${policy.team}/model`;
        wanted.add(key);
        if (!this.listeners.has(key)) await open(policy.team, 'model');
      }
    }
    for (const [key, l] of this.listeners) {
      if (!wanted.has(key)) await this.closeListener(key, l);
      else {
        // A policy may have changed the team's group: the open folder and socket follow it.
        const gid = this.socketGroupOf(l.team);
        if (gid === undefined) continue;
        try {
          await giveToGroup(path.dirname(l.socketPath), gid);
          await giveToGroup(l.socketPath, gid);
        } catch (err) {
          failures.push(err as Error);
          this.core.log.error({ team: l.team, err: (err as Error).message }, 'cannot change socket group');
        }
      }
    }
    return failures;
  }

  /** The group of a team's sockets: its policy's, else airlock.yaml's socketGroups entry, else socketGroup. */
  private socketGroupOf(team: string): number | undefined {
    const { config } = this.core;
    return this.core.policies.get(team)?.socketGroup ?? config.socketGroups[team] ?? config.socketGroup;
  }

  private async listen(team: string, server: ServerName | 'model'): Promise<void> {
    const { socketDir } = this.core.config;
    const socketGroup = this.socketGroupOf(team);
    const teamDir = path.join(socketDir, team);
    await ensureFolder(socketDir, 'socketDir', 0o755);
    await checkSocketDir(socketDir);
    await ensureFolder(teamDir, 'team socket folder', 0o750);
    // Never follow a link or adopt someone else's folder: chmod/chown below would apply to it.
    await checkOwnedDir(teamDir);
    await chmod(teamDir, 0o750);
    if (socketGroup !== undefined) await giveToGroup(teamDir, socketGroup);
    const socketPath = path.join(teamDir, `${server}.sock`);
    // Bound under another name of the same length (socket paths are limited to ~107 bytes) and
    // linked to its own name only once it listens with its mode and group: a client that finds
    // the socket can connect, never meeting one that refuses it (bind before listen) or has yet
    // to get its group. A link, not a rename, so a broker starting at the same moment is refused,
    // not displaced.
    const boundPath = path.join(teamDir, `.${server}.new`);
    await removeStaleSocket(socketPath);
    await removeStaleSocket(boundPath); // a broker stopped between its listen and its link

    const listener: Listener = {
      team,
      server,
      socketPath,
      net: await this.createListener(team, server),
      sessions: new Set(),
      connections: new Set(),
    };
    listener.net.on('connection', (conn: net.Socket) => {
      listener.connections.add(conn);
      conn.once('close', () => listener.connections.delete(conn));
    });
    if (server === 'model') listener.net.maxConnections = MAX_MODEL_CONNECTIONS;
    if (server !== 'model')
      listener.net.on('connection', (conn) => {
        this.accept(listener, conn).catch((err: Error) =>
          this.core.log.error({ team, server, err: err.message }, 'could not start a session'),
        );
      });
    listener.net.on('error', (err) => this.core.log.error({ err: err.message, socketPath }, 'socket error'));
    try {
      await new Promise<void>((resolve, reject) => {
        listener.net.once('error', reject);
        listener.net.listen(boundPath, () => {
          listener.net.off('error', reject);
          resolve();
        });
      });
      // The folder is ours and closed to others, so this is still the socket listen() made.
      if (!(await lstat(boundPath)).isSocket())
        throw new UserError(`${boundPath} was replaced; refusing to chmod it`);
      await chmod(boundPath, 0o660);
      if (socketGroup !== undefined) await giveToGroup(boundPath, socketGroup);
      await link(boundPath, socketPath).catch((err: NodeJS.ErrnoException) => {
        throw err.code === 'EEXIST'
          ? new UserError(`${socketPath} is served by another running broker`)
          : err;
      });
      await unlink(boundPath);
    } catch (err) {
      listener.net.close();
      await unlink(boundPath).catch(() => undefined);
      throw err;
    }
    this.listeners.set(`${team}/${server}`, listener);
    this.core.log.info({ team, server, socketPath }, 'listening');
  }

  private async createListener(team: string, server: ServerName | 'model'): Promise<net.Server> {
    if (server !== 'model') return net.createServer();
    const { core } = this;
    // Loaded for a team with a model section only: its HTTP(S) client and zlib are not start-up's.
    const { createModelProxy } = await import('./model/proxy.js');
    const proxy = createModelProxy({
      team,
      getSection: () => core.policies.get(team)?.model,
      secrets: core.secrets.forTeam(team),
      audit: core.audit,
      redactor: core.redactor,
      log: core.log.child({ team, server: 'model' }),
      stateDir: core.config.stateDir,
      ...(core.fleetLimits ? { fleetBudget: core.fleetLimits } : {}),
    });
    this.modelProxies.add(proxy);
    proxy.once('close', () => this.modelProxies.delete(proxy));
    return proxy;
  }

  private async accept(listener: Listener, conn: net.Socket): Promise<void> {
    if (this.stopping || listener.server === 'model') return void conn.destroy();
    const log = this.core.log;
    const { team } = listener;
    const limits = this.core.config.sessions;
    const open = this.teamSessions.get(team) ?? 0;
    const refusal =
      open >= limits.maxPerTeam
        ? `team "${team}" has ${open} sessions open, the most allowed (sessions.maxPerTeam); close one and retry`
        : this.totalSessions >= limits.maxTotal
          ? `the broker has ${this.totalSessions} sessions open, the most allowed (sessions.maxTotal); retry later`
          : undefined;
    if (refusal) {
      log.warn(
        { team, server: listener.server, open, total: this.totalSessions },
        'session refused: too many sessions',
      );
      // A JSON-RPC error the client can show, then the connection ends.
      conn.on('error', () => undefined);
      conn.end(
        JSON.stringify({
          jsonrpc: '2.0',
          id: null,
          error: { code: -32000, message: `refused: ${refusal}` },
        }) + '\n',
      );
      setTimeout(() => conn.destroy(), 2000).unref();
      return;
    }
    this.teamSessions.set(team, open + 1);
    this.totalSessions++;
    const release = () => {
      const left = (this.teamSessions.get(team) ?? 1) - 1;
      if (left <= 0) this.teamSessions.delete(team);
      else this.teamSessions.set(team, left);
      this.totalSessions--;
    };
    let session: McpSession;
    try {
      session = await startSession(this.core, listener.team, listener.server, conn, conn, 'socket');
    } catch (err) {
      release();
      conn.destroy();
      throw err;
    }
    void session.closed.then(release);
    listener.sessions.add(session);
    const handshake = setTimeout(() => {
      log.warn({ team: listener.team, server: listener.server }, 'no MCP handshake; closing connection');
      void session.close();
    }, HANDSHAKE_TIMEOUT_MS);
    handshake.unref();
    session.server.oninitialized = () => clearTimeout(handshake);
    void session.closed.then(() => {
      clearTimeout(handshake);
      listener.sessions.delete(session);
    });
  }

  private async closeListener(key: string, l: Listener): Promise<void> {
    this.listeners.delete(key);
    // close() only calls back once every connection has ended, so the sessions are ended first:
    // waiting on it with sessions open hung this sync, and with it every later reload.
    const closed = new Promise<void>((resolve) => l.net.close(() => resolve()));
    await unlink(l.socketPath).catch(() => undefined);
    for (const s of l.sessions) await s.close().catch(() => undefined);
    for (const conn of l.connections) conn.destroy();
    await closed;
    this.core.log.info({ team: l.team, server: l.server }, 'socket closed (no longer in policy)');
  }

  /** Stops accepting, lets in-flight calls finish (aborting them after the drain timeout), then closes. */
  async stop(drainTimeoutMs = DRAIN_TIMEOUT_MS): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await this.syncing;
    // Closing no longer removes the socket file (the listener was bound under another name):
    // it goes now, so no client finds it while calls drain.
    for (const l of this.listeners.values()) l.net.close();
    await Promise.all([...this.listeners.values()].map((l) => unlink(l.socketPath).catch(() => undefined)));
    // Calls waiting for a human end now (expired, never approved) instead of holding the drain.
    await this.control?.close();
    await this.core.approvals.close();
    this.core.log.info({ inFlight: this.core.pipeline.activeCalls }, 'draining');
    const models = [...this.modelProxies].map(
      (p) => new Promise<void>((resolve) => p.close(() => resolve())),
    );
    const clean = await this.core.pipeline.drain(drainTimeoutMs);
    // Model streams in flight get the same drain window, then are cut.
    const modelTimer = setTimeout(
      () => {
        for (const p of this.modelProxies) p.closeAllConnections();
      },
      clean ? drainTimeoutMs : 0,
    );
    await Promise.all(models);
    clearTimeout(modelTimer);
    // The SDK sends a handler's response a few microtasks after it returns: let those go out.
    await new Promise((resolve) => setImmediate(resolve));
    if (!clean) this.core.log.warn('drain timed out; in-flight calls were aborted');
    for (const l of this.listeners.values()) {
      for (const s of l.sessions) await s.close().catch(() => undefined);
    }
    this.listeners.clear();
    await this.core.close();
  }
}

/** The folder that holds the team folders (see socketDirProblem): an operator's problem to fix. */
async function checkSocketDir(dir: string): Promise<void> {
  const problem = await socketDirProblem(dir);
  if (problem) throw new UserError(problem);
}

/** A team socket folder must be a real directory (not a symlink) owned by this broker's user. */
async function checkOwnedDir(dir: string): Promise<void> {
  const st = await lstat(dir);
  if (st.isSymbolicLink()) throw new UserError(`socket folder ${dir} is a symlink; refusing to use it`);
  if (!st.isDirectory()) throw new UserError(`socket folder ${dir} is not a directory`);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new UserError(
      `socket folder ${dir} is owned by uid ${st.uid}, not by this broker (uid ${uid}); remove it`,
    );
  }
}

/** chgrp to socketGroup, with an error that says how to fix the usual cause. */
async function giveToGroup(file: string, gid: number): Promise<void> {
  try {
    await lchown(file, process.getuid?.() ?? 0, gid);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EPERM') throw err;
    throw new UserError(
      `cannot give ${file} to group ${gid} (socketGroup): the broker's user must be root or a member of ` +
        `that group (add it with usermod -aG, or SupplementaryGroups= in the systemd unit)`,
    );
  }
}

/** A leftover socket file from a crashed broker is removed; a live one means another broker runs. */
async function removeStaleSocket(socketPath: string): Promise<void> {
  let st;
  try {
    st = await lstat(socketPath);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new UserError(`${socketPath} exists and is not a socket; refusing to replace it`);
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new UserError(`${socketPath} is served by another running broker`);
  await unlink(socketPath);
}

/** One MCP session of `team` on `server`, over newline-delimited JSON-RPC on input/output. */
function startSession(
  core: Core,
  team: string,
  server: ServerName,
  input: Readable,
  output: Writable,
  kind: 'socket' | 'stdio',
): Promise<McpSession> {
  const transport = new NdjsonTransport(input, output, {
    onProtocolError: (message) => core.log.warn({ team, server, message }, 'protocol error'),
  });
  return openSession(core.pipeline, { team, server, transport, kind });
}

/** `airlock stdio SERVER --team T`: one session on stdin/stdout, same policy, secrets and audit. */
export async function serveStdio(config: AirlockConfig, server: ServerName, team: string): Promise<void> {
  const core = await createCore(config);
  const policy = core.policies.get(team);
  if (!policy) {
    await core.close();
    throw new UserError(`no policy for team "${team}" in ${config.policies}`);
  }
  if (!policy.servers[server]) {
    await core.close();
    throw new UserError(`team "${team}" does not enable the ${server} server`);
  }
  // The control socket, through which `airlock approve` reaches a call waiting here, opens once
  // this server's section has a tool with `approve` (at start, or on a reload that adds one):
  // without one no call can wait, and a listen costs start-up (Node loads its cluster module).
  const needsControl = () =>
    Object.values(core.policies.get(team)?.servers[server]?.tools ?? {}).some((t) => t.approve !== undefined);
  let control: Promise<ControlServer> | undefined;
  const openControl = () => (control ??= startControlServer(core.approvals, core.log, core.config.approvers));
  if (needsControl()) {
    try {
      await openControl();
    } catch (err) {
      await core.close();
      throw err;
    }
  }
  const closeControl = async () => (await control?.catch(() => undefined))?.close();
  const session = await startSession(core, team, server, process.stdin, process.stdout, 'stdio');
  core.policies.on('change', (teams: string[]) => {
    if (!teams.includes(team)) return;
    if (needsControl())
      openControl().catch((err: Error) => {
        control = undefined; // tried again on the next reload
        core.log.error(
          { err: err.message },
          'cannot open the approvals control socket; a call waiting for approval cannot be approved until a reload opens it',
        );
      });
    session.notifyToolsChanged();
  });
  const stop = async () => {
    await closeControl();
    await core.approvals.close();
    await core.pipeline.drain(DRAIN_TIMEOUT_MS);
    await session.close().catch(() => undefined);
  };
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
  process.on('SIGHUP', () => {
    core.policies.reload().catch((err: Error) => core.log.error({ err: err.message }, 'reload failed'));
  });
  await session.closed;
  await closeControl();
  await core.approvals.close();
  await core.pipeline.drain(DRAIN_TIMEOUT_MS);
  await core.close();
}

/** An error the user can fix (bad input, bad policy): exit code 1. */
export class UserError extends Error {
  override name = 'UserError';
}
