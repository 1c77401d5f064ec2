import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AuditEntry } from '../../src/audit/log.js';

/** A fresh temp folder; removed by the returned cleanup. */
export function tempDir(prefix = 'airlock-audit-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function entry(over: Partial<AuditEntry> = {}): AuditEntry {
  return {
    team: 'payments',
    server: 'git',
    tool: 'git_push',
    session: 'sess-1',
    call: 'call-1',
    phase: 'result',
    args: { workspace: 'api', branch: 'agent/fix' },
    decision: 'allow',
    rule: 'git.tools.git_push',
    outcome: 'ok',
    durationMs: 12.5,
    resultBytes: 311,
    ...over,
  };
}

/** Runs a system tool as the test's user (root here) and fails loudly if it does not work. */
export function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Mounts a tmpfs of `size` at a new folder; returns it and an unmount+remove cleanup. */
export function mountTmpfs(size: string): { dir: string; cleanup: () => void } {
  const { dir, cleanup } = tempDir('airlock-audit-tmpfs-');
  sh('mount', '-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir);
  return {
    dir,
    cleanup: () => {
      try {
        sh('umount', dir);
      } catch {
        sh('umount', '--lazy', dir); // a failed test may have left a file open on it
      }
      cleanup();
    },
  };
}
