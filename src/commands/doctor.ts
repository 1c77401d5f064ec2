// `airlock doctor`: checks what an operator would otherwise find out from a failed call or a
// failed start — config, policies, that every secret resolves (never printing a value), git,
// and every folder serve needs: socket and state folders (creatable, right owner), each git work
// tree (exists, the agent's group, setgid) and the audit folder (writable, fsync honoured).
import { execFile } from 'node:child_process';
import Module from 'node:module';
import { access, constants, lstat, open, stat, statfs, unlink } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { CommandContext } from '../cli.js';
import type { CompileCache } from '../compile-cache.cjs';
import { ConfigError, loadConfig, type AirlockConfig } from '../config/airlock-yaml.js';
import { folderProblem } from '../transport/folders.js';
import { checkPolicyFiles, type TeamPolicy } from '../policy/team-policy.js';
import { Redactor } from '../secrets/redact.js';
import { SecretStore, withoutSecretName } from '../secrets/store.js';
import { SERVERS } from '../servers.js';
import { auditFileHead, verifyAuditFile } from '../audit/log.js';
import { socketDirProblem } from '../transport/socket-dir.js';
import { workTreeConfinement } from '../../servers/git/runner.js';
import { checkReadOnlyRole } from '../../servers/postgres/doctor.js';
import type { PostgresSection } from '../../servers/postgres/section.js';

const run = promisify(execFile);
/** Oldest git with the hardening options the git server relies on. */
const MIN_GIT = [2, 39];

type Check = { ok: boolean; warn?: boolean; label: string; detail?: string };

/** What each group of checks gets: the loaded config and policies, and where to report. */
interface DoctorContext {
  config: AirlockConfig;
  policies: TeamPolicy[];
  report(check: Check): void;
}

export async function doctorCommand(opts: {
  configFile: string;
  /** One JSON object `{ok, problems, checks: [{status, label, detail}]}` instead of lines. */
  json?: boolean;
  out?: NodeJS.WritableStream;
}): Promise<number> {
  const out = opts.out ?? process.stdout;
  const checks: Check[] = [];
  const report = (c: Check) => {
    checks.push(c);
    if (opts.json) return;
    const mark = c.ok ? (c.warn ? 'warn' : ' ok ') : 'FAIL';
    out.write(`[${mark}] ${c.label}${c.detail ? ` — ${c.detail}` : ''}\n`);
  };
  const finish = (): number => {
    const failed = checks.filter((c) => !c.ok).length;
    if (opts.json) {
      const status = (c: Check) => (c.ok ? (c.warn ? 'warn' : 'ok') : 'fail');
      out.write(
        JSON.stringify({
          ok: failed === 0,
          problems: failed,
          checks: checks.map((c) => ({
            status: status(c),
            label: c.label,
            ...(c.detail ? { detail: c.detail } : {}),
          })),
        }) + '\n',
      );
    } else {
      out.write(failed ? `${failed} problem${failed === 1 ? '' : 's'} found\n` : 'all checks passed\n');
    }
    return failed ? 1 : 0;
  };

  let config;
  try {
    config = await loadConfig(opts.configFile);
    report({ ok: true, label: `config ${opts.configFile}` });
  } catch (err) {
    const detail =
      err instanceof ConfigError && err.issues.length
        ? err.issues.map((i) => `${i.file}:${i.line}:${i.col}: ${i.message}`).join('\n       ')
        : (err as Error).message;
    report({ ok: false, label: `config ${opts.configFile}`, detail });
    return finish();
  }

  const { policies, issues } = await checkPolicyFiles(config, SERVERS);
  for (const i of issues)
    report({ ok: false, label: 'policy', detail: `${i.file}:${i.line}:${i.col}: ${i.message}` });
  if (issues.length === 0) {
    report({
      ok: true,
      label: `policies (${policies.length} team${policies.length === 1 ? '' : 's'}: ${policies.map((p) => p.team).join(', ') || 'none'})`,
    });
  }

  const ctx: DoctorContext = { config, policies, report };
  // Each group reports its own checks; a new one (a server's own) is one more line here.
  for (const group of [
    checkSecrets,
    checkGit,
    checkSocketFolders,
    checkStateFolder,
    checkWorkTrees,
    checkAudit,
    checkAuditShipping,
    checkFleetLimits,
    checkPostgres,
    checkStartupCache,
  ]) {
    await group(ctx);
  }
  return finish();
}

async function checkSecrets({ config, report }: DoctorContext): Promise<void> {
  const store = new SecretStore(config.secrets, new Redactor());
  for (const r of await store.resolveAll()) {
    const detail = r.ok ? (r.warning ?? 'resolves') : (r.error ?? 'does not resolve');
    report({
      ok: r.ok,
      warn: Boolean(r.warning),
      label: `secret "${r.name}"`,
      // The label names the secret: `[FAIL] secret "x" — secret "x": …` said it twice.
      detail: withoutSecretName(r.name, detail),
    });
  }
  if (config.strictSecrets)
    report({
      ok: true,
      label: 'secrets: { strict: true }',
      detail: 'serve refuses to start while one does not resolve',
    });
}

async function checkGit({ policies, report }: DoctorContext): Promise<void> {
  try {
    const { stdout } = await run('git', ['--version'], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    const m = /(\d+)\.(\d+)/.exec(stdout);
    const ok =
      !!m && (Number(m[1]) > MIN_GIT[0]! || (Number(m[1]) === MIN_GIT[0] && Number(m[2]) >= MIN_GIT[1]!));
    report({
      ok,
      label: 'git',
      detail: `${stdout.trim()}${ok ? '' : ` (need ${MIN_GIT.join('.')} or newer)`}`,
    });
  } catch {
    report({ ok: false, label: 'git', detail: 'git is not installed (needed by the git server)' });
  }
  if (policies.some((p) => p.servers.git)) {
    // The git server refuses to run git over a work tree it cannot confine.
    try {
      const c = await workTreeConfinement();
      report({
        ok: true,
        label: 'git work-tree confinement',
        // Every git command forks from the spawn helper, inside this one namespace.
        detail: `the git spawn helper's ${c.userNamespace ? 'user + mount namespace' : 'mount namespace (root)'}`,
      });
    } catch (err) {
      report({ ok: false, label: 'git work-tree confinement', detail: (err as Error).message });
    }
  }
}

async function checkSocketFolders({ config, policies, report }: DoctorContext): Promise<void> {
  const gid = config.socketGroup;
  const uid = process.getuid?.();
  if (gid !== undefined && uid !== undefined && uid !== 0) {
    // serve chgrps every socket to socketGroup: only root or a member of the group may.
    const member = process.getgid?.() === gid || (process.getgroups?.() ?? []).includes(gid);
    report({
      ok: member,
      label: `socketGroup ${gid}`,
      detail: member
        ? 'this user is a member'
        : `this user (uid ${uid}) is not in it, so serve cannot give the sockets to it; add it (usermod -aG) or set SupplementaryGroups= in the systemd unit`,
    });
  }
  try {
    const st = await stat(config.socketDir);
    // The same rules as serve: owners and write bits of every folder on the way.
    const problem = await socketDirProblem(config.socketDir);
    report({
      ok: problem === undefined,
      label: `socket folder ${config.socketDir}`,
      detail: problem ?? `mode ${(st.mode & 0o7777).toString(8)}`,
    });
    for (const p of policies) {
      const dir = path.join(config.socketDir, p.team);
      // The team's own group (its policy, then airlock.yaml's socketGroups), else socketGroup.
      const group = p.socketGroup ?? config.socketGroups[p.team] ?? config.socketGroup;
      try {
        const t = await lstat(dir);
        if (t.isSymbolicLink() || !t.isDirectory()) {
          report({
            ok: false,
            label: `team socket folder ${dir}`,
            detail: `is ${t.isSymbolicLink() ? 'a symlink' : 'not a directory'}; airlock serve refuses it (remove it)`,
          });
          continue;
        }
        const uid = process.getuid?.();
        if (uid !== undefined && t.uid !== uid) {
          report({
            ok: false,
            label: `team socket folder ${dir}`,
            detail: `is owned by uid ${t.uid}, not by this user (uid ${uid}); airlock serve refuses it`,
          });
          continue;
        }
        const mode = t.mode & 0o777;
        const okMode = (mode & 0o007) === 0;
        const okGroup = group === undefined || t.gid === group;
        report({
          ok: okMode && okGroup,
          label: `team socket folder ${dir}`,
          detail: `mode ${mode.toString(8)}, gid ${t.gid}${okMode ? '' : ' (others must have no access)'}${okGroup ? '' : ` (expected gid ${group})`}`,
        });
        // The sockets themselves (present while airlock serve runs): 0660, the socket group.
        const names = [...Object.keys(p.servers), ...(p.model ? ['model'] : [])];
        for (const name of names) {
          const sock = path.join(dir, `${name}.sock`);
          const s = await lstat(sock).catch(() => undefined);
          if (!s) continue;
          const sockMode = s.mode & 0o777;
          const good = s.isSocket() && sockMode === 0o660 && (group === undefined || s.gid === group);
          report({
            ok: good,
            label: `socket ${sock}`,
            detail: s.isSocket()
              ? `mode ${sockMode.toString(8)}, gid ${s.gid}${good ? '' : ` (expected 660${group === undefined ? '' : `, gid ${group}`})`}`
              : 'is not a socket; airlock serve refuses to replace it',
          });
        }
      } catch {
        report({
          ok: true,
          warn: true,
          label: `team socket folder ${dir}`,
          detail: 'not created yet (airlock serve creates it)',
        });
      }
    }
  } catch {
    // Missing: fine if serve can create it (and not a path under /proc, a file, a broken link…).
    const problem = await folderProblem(config.socketDir, 'socketDir');
    report({
      ok: problem === undefined,
      warn: problem === undefined,
      label: `socket folder ${config.socketDir}`,
      detail: problem ?? `does not exist yet (airlock serve creates it${ownerNote()})`,
    });
  }
}

/** ", owned by uid N": who will own what serve creates. */
function ownerNote(): string {
  const uid = process.getuid?.();
  return uid === undefined ? '' : `, owned by this user, uid ${uid}`;
}

async function checkStateFolder({ config, report }: DoctorContext): Promise<void> {
  const label = `state folder ${config.stateDir}`;
  const st = await stat(config.stateDir).catch(() => undefined);
  if (!st) {
    const problem = await folderProblem(config.stateDir, 'stateDir');
    report({
      ok: problem === undefined,
      warn: problem === undefined,
      label,
      detail: problem ?? `does not exist yet (created on first use, mode 700${ownerNote()})`,
    });
    return;
  }
  if (!st.isDirectory()) return report({ ok: false, label, detail: 'is not a directory' });
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    return report({
      ok: false,
      label,
      detail: `is owned by uid ${st.uid}, not by this user (uid ${uid}); chown it to the broker's user`,
    });
  }
  const writable = await access(config.stateDir, constants.W_OK).then(
    () => true,
    () => false,
  );
  if (!writable) return report({ ok: false, label, detail: 'is not writable by this user' });
  const open = (st.mode & 0o077) !== 0;
  report({
    ok: true,
    warn: open,
    label,
    detail: `mode ${(st.mode & 0o7777).toString(8)}${open ? ' (host-owned git dirs live here: chmod 700 it)' : ''}`,
  });
}

/**
 * Each git workspace path: the agent writes it, so it must exist (or be creatable) with the
 * agent's group, group-writable and setgid (`chown 1000:1000 DIR && chmod 2775 DIR`).
 */
async function checkWorkTrees({ config, policies, report }: DoctorContext): Promise<void> {
  const group = config.socketGroup;
  for (const p of policies) {
    const section = p.servers.git as { workspaces?: Record<string, { path: string }> } | undefined;
    for (const [name, ws] of Object.entries(section?.workspaces ?? {})) {
      const dir = ws.path;
      const label = `work tree ${dir} (team ${p.team}, workspace ${name})`;
      const fix = `install -d -o <agent uid> -g ${group ?? '<agent gid>'} -m 2775 ${dir}`;
      const st = await stat(dir).catch(() => undefined);
      if (!st) {
        const parent = await stat(path.dirname(dir)).catch(() => undefined);
        if (
          parent &&
          parent.isDirectory() &&
          parent.gid !== 0 &&
          (group === undefined || parent.gid === group)
        ) {
          report({
            ok: true,
            warn: true,
            label,
            detail: `does not exist yet; the first git call creates it ${parent.uid}:${parent.gid} mode 2775 (like ${path.dirname(dir)})`,
          });
        } else {
          report({ ok: false, label, detail: `does not exist; create it for the agent: ${fix}` });
        }
        continue;
      }
      if (!st.isDirectory()) {
        report({ ok: false, label, detail: 'is not a directory' });
        continue;
      }
      const mode = st.mode & 0o7777;
      const problems: string[] = [];
      if (st.uid === 0 && st.gid === 0) problems.push('owned by root:root, which the agent cannot write');
      else if (group !== undefined && st.gid !== group)
        problems.push(`group ${st.gid}, not socketGroup ${group}`);
      if ((mode & 0o020) === 0) problems.push('not group-writable');
      if ((mode & 0o2000) === 0) problems.push('no setgid bit (files git writes would not keep the group)');
      report({
        ok: problems.length === 0,
        label,
        detail: `${st.uid}:${st.gid} mode ${mode.toString(8)}${problems.length ? `: ${problems.join('; ')}; fix: chown <agent uid>:${group ?? '<agent gid>'} ${dir} && chmod 2775 ${dir}` : ''}`,
      });
    }
  }
}

/** statfs magic numbers of filesystems whose fsync does not make anything survive a reboot. */
const VOLATILE_FS: Record<number, string> = { 0x01021994: 'tmpfs', 0x858458f6: 'ramfs' };

const FSYNC_SAMPLES = 5;
/** Past this an fdatasync dominates every call (a local SSD takes well under 1 ms). */
const SLOW_FSYNC_MS = 5;

async function checkAudit({ config, report }: DoctorContext): Promise<void> {
  const dir = path.dirname(config.audit.file);
  const st = await stat(dir).catch(() => undefined);
  if (!st) {
    const problem = await folderProblem(dir, 'audit folder');
    report({
      ok: problem === undefined,
      warn: problem === undefined,
      label: `audit folder ${dir}`,
      detail: problem ?? `does not exist yet (airlock serve creates it, mode 700${ownerNote()})`,
    });
    return;
  }
  const probe = path.join(dir, `.airlock-doctor-${process.pid}`);
  let handle;
  try {
    handle = await open(probe, 'wx', 0o600);
    await handle.write('probe\n');
    await handle.datasync();
    // What each record costs here: an allowed call waits for two of these before it is answered.
    const syncMs: number[] = [];
    for (let i = 0; i < FSYNC_SAMPLES; i++) {
      await handle.write('probe\n');
      const started = performance.now();
      await handle.datasync();
      syncMs.push(performance.now() - started);
    }
    const median = syncMs.sort((a, b) => a - b)[Math.floor(FSYNC_SAMPLES / 2)]!;
    const measured = `fdatasync ${median.toFixed(2)} ms (median of ${FSYNC_SAMPLES}; an allowed call waits for two)`;
    const fsType = VOLATILE_FS[Number((await statfs(dir)).type)];
    const slow = median > SLOW_FSYNC_MS;
    report({
      ok: true,
      warn: fsType !== undefined || slow,
      label: `audit folder ${dir}`,
      detail:
        fsType !== undefined
          ? `writable, but on ${fsType}: records do not survive a reboot; put audit.file on a disk`
          : slow
            ? `writable; fsync works, but slowly: ${measured}; a local SSD for audit.file makes every call faster`
            : `writable; fsync works; ${measured}`,
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    const why =
      code === 'EINVAL' || code === 'ENOTSUP' || code === 'EOPNOTSUPP'
        ? `its filesystem does not support fsync (${code}); records could not be made durable, so serve would refuse every call`
        : `not writable by this user (${code})`;
    report({ ok: false, label: `audit folder ${dir}`, detail: why });
  } finally {
    await handle?.close();
    await unlink(probe).catch(() => undefined);
  }
  const v = await verifyAuditFile(config.audit.file).catch((err: NodeJS.ErrnoException) =>
    err.code === 'ENOENT' ? undefined : err,
  );
  if (v === undefined)
    report({ ok: true, label: `audit log ${config.audit.file}`, detail: 'not created yet' });
  else if (v instanceof Error)
    report({
      ok: false,
      label: `audit log ${config.audit.file}`,
      detail: `cannot read (${v.code ?? v.message})`,
    });
  else
    report({
      ok: v.ok,
      label: `audit log ${config.audit.file}`,
      detail: v.ok ? `${v.count} records, chain intact` : `broken at line ${v.line}: ${v.reason}`,
    });
}

/**
 * `audit.postgres`: how far the central table is behind the local log, from the status file the
 * shipper of `airlock serve` keeps in stateDir. Behind while PostgreSQL is down is a warning (the
 * local log is the durable record); a table that disagrees with the local log is a failure.
 */
async function checkAuditShipping({ config, report }: DoctorContext): Promise<void> {
  const central = config.audit.postgres;
  if (!central) return;
  const label = `audit shipping to ${central.table}`;
  const { readShippingStatus } = await import('../audit/shipper.js');
  const status = await readShippingStatus(config.stateDir);
  const head = await auditFileHead(config.audit.file).then(
    (h) => h.seq,
    () => status?.headSeq ?? 0,
  );
  if (!status) {
    report({
      ok: true,
      warn: head > 0,
      label,
      detail: 'no shipping status yet (airlock serve ships the log)',
    });
    return;
  }
  const shipped = status.shippedSeq;
  const behind = shipped === undefined ? head : Math.max(0, head - shipped);
  const age = Math.round((Date.now() - Date.parse(status.updatedAt)) / 1000);
  const parts = [
    `broker ${status.broker}`,
    shipped === undefined ? 'never reached the table' : `shipped up to seq ${shipped} of ${head}`,
    `lag ${behind} record${behind === 1 ? '' : 's'}${status.lagSeconds ? `, ${status.lagSeconds}s` : ''}`,
    `status ${age}s old`,
  ];
  if (status.lastError) parts.push(`last error: ${status.lastError}`);
  const problems = [
    ...(status.conflicts.length
      ? [
          `${status.conflicts.length} shipped record(s) differ from the local log (seq ${status.conflicts.map((c) => c.seq).join(', ')})`,
        ]
      : []),
    ...(status.localProblem ? [status.localProblem] : []),
  ];
  report({
    ok: problems.length === 0,
    warn: behind > 0 || status.lastError !== undefined,
    label,
    detail: [...problems, ...parts].join('; '),
  });
}

/**
 * `limits: { store: postgres }`: the store answers and its table is usable by the broker's role.
 * Until then every fleet-limited call is refused (fail closed), so each problem is a failure.
 */
async function checkFleetLimits({ config, report }: DoctorContext): Promise<void> {
  if (config.limits?.store !== 'postgres') return;
  const { FleetLimits, FleetLimitError } = await import('../limits/fleet.js');
  const { LIMITS_TABLE } = await import('../limits/names.js');
  const { silentLogger } = await import('../log.js');
  const redactor = new Redactor();
  const fleet = FleetLimits.fromConfig(config, new SecretStore(config.secrets, redactor), silentLogger());
  if (!fleet) return;
  const label = `fleet limits store (secret "${config.limits.connection}")`;
  const refused = 'calls under a rateLimit or dailyTokenBudget are refused until then';
  try {
    const state = await fleet.readiness();
    report(
      state === 'ready'
        ? { ok: true, label, detail: `table ${LIMITS_TABLE} in place` }
        : state === 'missing'
          ? {
              ok: false,
              label,
              detail: `table ${LIMITS_TABLE} does not exist: run airlock limits migrate; ${refused}`,
            }
          : {
              ok: false,
              label,
              detail: `this role may not SELECT, INSERT and UPDATE ${LIMITS_TABLE} (GRANT SELECT, INSERT, UPDATE ON ${LIMITS_TABLE} TO <role>); ${refused}`,
            },
    );
  } catch (err) {
    const why = err instanceof FleetLimitError ? `unreachable (${err.detail})` : String(err);
    report({ ok: false, label, detail: `${redactor.scrub(why)}; ${refused}` });
  } finally {
    await fleet.close();
  }
}

export async function doctorMain(ctx: CommandContext): Promise<number> {
  return doctorCommand({ configFile: ctx.configFile, json: Boolean(ctx.values.json) });
}

/**
 * Whether this process's bundle compiled from its build-time code cache (src/compile-cache.cts).
 * V8 refuses it under another Node version than the build's or any V8 flag, which costs every
 * command ~100 ms of start-up; nothing says so otherwise. No line when run unbundled (tsc output).
 */
async function checkStartupCache({ report }: DoctorContext): Promise<void> {
  // The key src/compile-cache.cts keeps its state under (not imported: the bundle's copy is the one
  // that ran, and the unbundled tsc output has none).
  const cache = (Module as unknown as Record<symbol, CompileCache | undefined>)[
    Symbol.for('airlock.compileCache')
  ];
  if (!cache) return;
  const label = 'start-up code cache';
  if (cache.rejected.length > 0) {
    report({
      ok: true,
      warn: true,
      label,
      detail:
        `refused by this Node (${process.version}; the build's was another, or V8 flags are set, e.g. ` +
        `--max-old-space-size in NODE_OPTIONS): every command compiles its code at start (~100 ms more); ` +
        `rebuild with this Node (npm run build) or drop the flag where start-up matters`,
    });
  } else if (cache.used.length === 0) {
    report({ ok: true, warn: true, label, detail: 'none beside the bundle (npm run build writes it)' });
  } else {
    report({ ok: true, label, detail: `${cache.used.length} files compiled from it` });
  }
}

async function checkPostgres({ config, policies, report }: DoctorContext): Promise<void> {
  const redactor = new Redactor();
  await checkPostgresRoles(policies, new SecretStore(config.secrets, redactor), redactor, report);
}

/**
 * Connects as each postgres database's role: a read-only database whose role could write, create
 * objects or holds a dangerous role fails, naming what to revoke (the role is the last line of
 * defence behind Airlock's own rules). Never prints the connection URL.
 */
async function checkPostgresRoles(
  policies: TeamPolicy[],
  store: SecretStore,
  redactor: Redactor,
  report: (c: Check) => void,
): Promise<void> {
  for (const policy of policies) {
    const section = policy.servers.postgres as unknown as PostgresSection | undefined;
    if (!section) continue;
    for (const [name, db] of Object.entries(section.databases)) {
      const label = `postgres ${policy.team}/${name} (${db.access})`;
      try {
        const url = await store.resolve(db.connection, policy.team);
        const finding = await checkReadOnlyRole(url, db);
        report({
          ok: finding.ok,
          label,
          detail: finding.ok
            ? `role ${finding.role} ${db.access === 'read-only' ? 'cannot write, create or reach server files' : 'is not a superuser'}`
            : `role ${finding.role}: ${finding.problems.join('; ')}`,
        });
      } catch (err) {
        const e = err as { code?: string; message?: string };
        report({
          ok: false,
          label,
          detail: `cannot check the role: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}`,
        });
      }
    }
  }
}
