// Structured logs (JSON lines on stderr, so `airlock stdio` keeps stdout for MCP). pino is the
// smallest well-kept structured logger with a hook on the final line, which is where every
// secret value is scrubbed: nothing reaches the log stream unredacted.
import { pino, type Logger as PinoLogger } from 'pino';
import type { Redactor } from './redact.js';

export type Logger = PinoLogger;

export function createLogger(redactor?: Redactor, level = process.env.AIRLOCK_LOG_LEVEL ?? 'info'): Logger {
  return pino(
    {
      name: 'airlock',
      level,
      base: { pid: process.pid },
      hooks: redactor ? { streamWrite: (line: string) => redactor.scrub(line) } : {},
    },
    pino.destination({ dest: 2, sync: true }),
  );
}

/** A logger that drops everything (tests, library use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
