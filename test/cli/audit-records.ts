import { readFile } from 'node:fs/promises';
import type { AuditRecord } from '../../src/audit/log.js';

/** Every record of an audit log, in order. */
export async function readAuditFile(file: string): Promise<AuditRecord[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AuditRecord);
}
