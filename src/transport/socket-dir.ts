// The socket folder's trust chain, checked by `airlock serve` before it creates team folders
// there and by `airlock doctor`.
import { lstat, realpath, stat } from 'node:fs/promises';
import path from 'node:path';

/**
 * The folder that holds the team folders, and every folder on the way to it (after symlinks):
 * anyone able to write to one of them, or owning one, could swap a team folder for their own.
 */
export async function socketDirProblem(dir: string): Promise<string | undefined> {
  const st = await stat(dir);
  if (!st.isDirectory()) return `socketDir ${dir} is not a directory`;
  const real = await realpath(dir);
  const uid = process.getuid?.();
  const chain: string[] = [];
  for (let p = real; ; p = path.dirname(p)) {
    chain.unshift(p);
    if (path.dirname(p) === p) break;
  }
  for (const folder of chain) {
    const at = await lstat(folder);
    const where =
      folder === real
        ? `socketDir ${dir}${real !== dir ? ` (${real})` : ''}`
        : `${folder} (on the way to socketDir ${dir})`;
    if (uid !== undefined && at.uid !== 0 && at.uid !== uid) {
      return `${where} is owned by uid ${at.uid}, not by root or this broker (uid ${uid}); its owner could replace the team folders`;
    }
    const sticky = (at.mode & 0o1000) !== 0;
    if ((at.mode & 0o002) !== 0 && !sticky) {
      return `${where} is writable by every user; chmod o-w it (or set the sticky bit)`;
    }
    if ((at.mode & 0o020) !== 0 && !sticky && at.gid !== 0) {
      return `${where} is writable by group ${at.gid}; chmod g-w it (or set the sticky bit)`;
    }
  }
  return undefined;
}
