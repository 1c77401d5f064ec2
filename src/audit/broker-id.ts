// The broker id: names this host's audit chain among every broker's in the central table. It is
// made once (`host-<8 hex>`) in <stateDir>/broker-id and never changes, so a restart resumes the
// same chain; `brokerId` in airlock.yaml overrides it.
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** What a broker id may look like: it is printed in reports and stored as a column value. */
export const BROKER_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const BROKER_ID_FILE = 'broker-id';

export class BrokerIdError extends Error {}

/** The id in `<stateDir>/broker-id`, or undefined when none was made yet. Never creates it. */
export async function readBrokerId(stateDir: string): Promise<string | undefined> {
  const file = path.join(stateDir, BROKER_ID_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new BrokerIdError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const id = text.trim();
  if (!BROKER_ID.test(id))
    throw new BrokerIdError(
      `${file} does not hold a broker id (letters, digits, ".", "_", "-", at most 64); fix or remove it`,
    );
  return id;
}

/**
 * The broker id: `configured` when given, else the one in `<stateDir>/broker-id`, made on first
 * use. Creation is atomic (a complete temporary file hard-linked into place, which fails if the
 * name exists), so brokers starting at once agree on the first one written.
 */
export async function loadOrCreateBrokerId(stateDir: string, configured?: string): Promise<string> {
  if (configured !== undefined) return configured;
  const existing = await readBrokerId(stateDir);
  if (existing) return existing;
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const file = path.join(stateDir, BROKER_ID_FILE);
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, `host-${randomBytes(4).toString('hex')}\n`, { mode: 0o644, flag: 'wx' });
  try {
    await link(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  const id = await readBrokerId(stateDir);
  if (!id) throw new BrokerIdError(`${file} vanished while it was created`);
  return id;
}
