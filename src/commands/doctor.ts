// `airlock doctor`: checks what an operator would otherwise find out from a failed call —
// config, policies, that every secret resolves (never printing a value), git, socket folder
// permissions and the audit log.
import { execFile } from 'node:child_process';
import { access, constants, lstat, stat } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { ConfigError, loadConfig } from '../config.js';
import { checkPolicyFiles } from '../policy.js';
import { Redactor } from '../redact.js';
import { SecretStore } from '../secrets.js';
import { SERVERS } from '../servers.js';
import { verifyAuditFile } from '../audit.js';
import { socketDirProblem } from '../socket-dir.js';
import { workTreeConfinement } from '../../servers/git/runner.js';

const run = promisify(execFile);
/** Oldest git with the hardening options the git server relies on. */
const MIN_GIT = [2, 39];

type Check = { ok: boolean; warn?: boolean; label: string; detail?: string };

export async function doctorCommand(opts: {
  configFile: string;
  out?: NodeJS.WritableStream;
}): Promise<number> {
  const out = opts.out ?? process.stdout;
  const checks: Check[] = [];
  const report = (c: Check) => {
    checks.push(c);
    const mark = c.ok ? (c.warn ? 'warn' : ' ok ') : 'FAIL';
    out.write(`[${mark}] ${c.label}${c.detail ? ` — ${c.detail}` : ''}\n`);
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
    return 1;
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

  const store = new SecretStore(config.secrets, new Redactor());
  for (const r of await store.resolveAll()) {
    report({
      ok: r.ok,
      warn: Boolean(r.warning),
      label: `secret "${r.name}"`,
      detail: r.ok ? (r.warning ?? 'resolves') : r.error,
    });
  }

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
        detail: c.nsenter ? 'mount namespace per work tree (root)' : 'user + mount namespace per command',
      });
    } catch (err) {
      report({ ok: false, label: 'git work-tree confinement', detail: (err as Error).message });
    }
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
    report({
      ok: true,
      warn: true,
      label: `socket folder ${config.socketDir}`,
      detail: 'does not exist yet (airlock serve creates it)',
    });
  }

  try {
    await access(path.dirname(config.audit.file), constants.W_OK);
    const v = await verifyAuditFile(config.audit.file).catch(() => undefined);
    if (v === undefined)
      report({ ok: true, label: `audit log ${config.audit.file}`, detail: 'not created yet' });
    else
      report({
        ok: v.ok,
        label: `audit log ${config.audit.file}`,
        detail: v.ok ? `${v.count} records, chain intact` : `broken at line ${v.line}: ${v.reason}`,
      });
  } catch {
    report({
      ok: true,
      warn: true,
      label: `audit folder ${path.dirname(config.audit.file)}`,
      detail: 'not writable or missing (airlock serve creates it)',
    });
  }

  const failed = checks.filter((c) => !c.ok).length;
  out.write(failed ? `${failed} problem${failed === 1 ? '' : 's'} found\n` : 'all checks passed\n');
  return failed ? 1 : 0;
}
