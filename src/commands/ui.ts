// `airlock ui [--listen 127.0.0.1:PORT]`: starts the audit viewer and prints the URL to open
// (with its token) on stdout. Runs until SIGINT/SIGTERM.
import path from 'node:path';
import type { AirlockConfig } from '../config/airlock-yaml.js';
import { UserError } from '../broker.js';
import { createLogger } from '../log.js';
import { isLoopback, startUi } from '../ui/server.js';

export const DEFAULT_UI_LISTEN = '127.0.0.1:8787';

export function parseListen(text: string): { host: string; port: number } | { socketPath: string } {
  if (text.startsWith('unix:')) {
    const socketPath = text.slice('unix:'.length);
    if (!path.isAbsolute(socketPath))
      throw new UserError(`--listen unix:PATH needs an absolute path, not "${socketPath}"`);
    return { socketPath };
  }
  const m = /^(?:\[([0-9a-f:]+)\]|([^:[\]]+)):([0-9]{1,5})$/i.exec(text);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || !host || !Number.isInteger(port) || port > 65535)
    throw new UserError(`--listen must be HOST:PORT (e.g. ${DEFAULT_UI_LISTEN}), not "${text}"`);
  if (!isLoopback(host))
    throw new UserError(
      `--listen ${text}: the viewer listens on loopback only (127.0.0.1, ::1 or localhost)`,
    );
  return { host, port };
}

export async function uiCommand(opts: {
  config: AirlockConfig;
  listen?: string;
  out?: NodeJS.WritableStream;
  signal?: AbortSignal;
}): Promise<number> {
  const where = parseListen(opts.listen ?? DEFAULT_UI_LISTEN);
  const token = process.env.AIRLOCK_UI_TOKEN;
  if (token !== undefined && token.length < 16)
    throw new UserError('AIRLOCK_UI_TOKEN must be at least 16 characters');
  const ui = await startUi({
    ...where,
    ...(token ? { token } : {}),
    auditFile: opts.config.audit.file,
    stateDir: opts.config.stateDir,
    log: createLogger(),
  });
  const out = opts.out ?? process.stdout;
  if ('socketPath' in where) {
    out.write(
      `airlock ui: listening on ${where.socketPath} (0600); forward it, e.g. ssh -L 8787:${where.socketPath} HOST, then open ${ui.loginUrl}\n`,
    );
  } else out.write(`airlock ui: open ${ui.loginUrl}\n`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    opts.signal?.addEventListener('abort', stop, { once: true });
  });
  await ui.close();
  return 0;
}
