// Folders the broker creates (the socket folder and its team folders). Node's recursive mkdir
// never settles on some paths (one under /proc spins at full CPU), and its errors name neither
// the setting nor the fix; this walks up once to the first folder that exists, then creates
// each missing one, and turns every failure into one message with the path and what to do.

import { constants } from 'node:fs';
import { access, lstat, mkdir, readlink, stat, statfs } from 'node:fs/promises';
import path from 'node:path';

/** A folder problem the operator must fix (exit 1); the message names the path and the fix. */
export class FolderError extends Error {
  // Named like the broker's UserError so the command line exits 1 with the message once.
  override name = 'UserError';
}

type Errno = NodeJS.ErrnoException;

/** statfs magic numbers of kernel filesystems where no folder of ours can be made. */
const VIRTUAL_FS: Record<number, string> = {
  0x9fa0: 'proc',
  0x62656572: 'sysfs',
  0x63677270: 'cgroup2',
  0x27e0eb: 'cgroup',
  0x64626720: 'debugfs',
  0x73636673: 'securityfs',
  0x1cd1: 'devpts',
};

/**
 * Why `dir` (the `label` setting, e.g. `socketDir`) cannot be used or created, or undefined
 * when it exists as a directory or could be created. Creates nothing.
 */
export async function folderProblem(dir: string, label: string): Promise<string | undefined> {
  try {
    const { missing, existing } = await walk(dir, label);
    if (missing.length === 0) return undefined;
    // What mkdir would answer, asked without creating anything.
    const fsType = VIRTUAL_FS[Number((await statfs(existing)).type)];
    if (fsType) return createFailure(dir, label, missing[0]!, 'ENOENT', existing);
    const writable = await access(existing, constants.W_OK | constants.X_OK).then(
      () => true,
      (err: Errno) => (err.code === 'EROFS' ? 'EROFS' : false),
    );
    if (writable !== true) return createFailure(dir, label, missing[0]!, writable || 'EACCES', existing);
    return undefined;
  } catch (err) {
    if (err instanceof FolderError) return err.message;
    throw err;
  }
}

/** Creates `dir` and its missing parents (each with `mode`), or throws a FolderError. */
export async function ensureFolder(dir: string, label: string, mode = 0o755): Promise<void> {
  const { missing, existing } = await walk(dir, label);
  for (const d of missing) {
    try {
      await mkdir(d, { mode });
    } catch (err) {
      const code = (err as Errno).code;
      if (code === 'EEXIST' && (await stat(d).catch(() => undefined))?.isDirectory()) continue;
      throw new FolderError(createFailure(dir, label, d, code, existing));
    }
  }
}

/** The missing folders of `dir` (outermost first) and the nearest one that exists. */
async function walk(dir: string, label: string): Promise<{ missing: string[]; existing: string }> {
  const missing: string[] = [];
  let current = path.resolve(dir);
  for (;;) {
    let st;
    try {
      st = await stat(current);
    } catch (err) {
      const code = (err as Errno).code;
      if (code === 'EACCES') {
        throw new FolderError(
          `${label} ${dir}: cannot look into ${path.dirname(current)} (permission denied); ` +
            `run the broker as a user that may, or choose another path`,
        );
      }
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err;
      const link = code === 'ENOENT' ? await lstat(current).catch(() => undefined) : undefined;
      if (link?.isSymbolicLink()) {
        const target = await readlink(current).catch(() => '?');
        throw new FolderError(
          `${label} ${dir}: ${current} is a symlink to ${target}, which does not exist; ` +
            `create the target folder or remove the link`,
        );
      }
      missing.unshift(current);
      const parent = path.dirname(current);
      if (parent === current) break;
      current = parent;
      continue;
    }
    if (!st.isDirectory()) {
      throw new FolderError(
        `${label} ${dir}: ${current} is not a directory; remove it or choose another path`,
      );
    }
    return { missing, existing: current };
  }
  throw new FolderError(`${label} ${dir}: no folder of the path exists`);
}

function createFailure(
  dir: string,
  label: string,
  failed: string,
  code: string | undefined,
  existing: string,
): string {
  const parent = path.dirname(failed);
  const head = `cannot create ${label} ${dir}`;
  // Root is refused only by the filesystem itself (/sys answers EPERM even to root).
  if (code === 'EPERM' && process.getuid?.() === 0) code = 'ENOENT';
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return (
        `${head}: permission denied in ${parent}. Create it once as root ` +
        `(install -d -m 0755 -o ${process.env.USER ?? '<broker user>'} ${dir}), ` +
        `or choose a path this user may create (under systemd: RuntimeDirectory=, StateDirectory=, LogsDirectory=)`
      );
    case 'EROFS':
      return `${head}: ${parent} is on a read-only filesystem; choose a path on a writable one`;
    case 'ENOENT':
      // mkdir in a folder that exists but refuses new entries: /proc, /sys and other virtual filesystems.
      return (
        `${head}: ${existing} does not allow creating folders (a virtual filesystem such as /proc or /sys); ` +
        `choose a path on a real filesystem`
      );
    case 'ENOTDIR':
      return `${head}: a part of ${parent} is not a directory; remove it or choose another path`;
    case 'ENOSPC':
      return `${head}: no space left on the filesystem of ${parent}`;
    default:
      return `${head}: mkdir ${failed} failed (${code ?? 'unknown error'})`;
  }
}
