// Whether a broker process that left state behind is still the same running process. A pid
// alone is not enough (pids are reused): on Linux the process start time from /proc tells a
// new process with the same pid apart.
import { readFile } from 'node:fs/promises';

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); undefined off Linux. */
export async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces or ")".
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19];
  } catch {
    return undefined;
  }
}

export async function processAlive(pid: number, start: string | undefined): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists but belongs to someone else (so it is not one of ours any more).
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (start === undefined) return true;
  return (await processStartTime(pid)) === start;
}
