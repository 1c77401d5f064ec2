// Structured logs on stderr (so `airlock stdio` keeps stdout for MCP). pino is the smallest
// well-kept structured logger with a hook on the final line, which is where every secret value is
// scrubbed: nothing reaches the log stream unredacted, in either format. JSON lines when stderr
// is not a terminal (journald, files, log shippers); on a terminal, one readable line per event.
import { pino, type Logger as PinoLogger } from 'pino';
import type { Redactor } from './secrets/redact.js';

export type Logger = PinoLogger;
export type LogFormat = 'json' | 'pretty';

export const LOG_FORMATS: readonly LogFormat[] = ['json', 'pretty'];

/** pretty on a terminal, JSON otherwise. */
export function defaultLogFormat(stream: { isTTY?: boolean } = process.stderr): LogFormat {
  return stream.isTTY ? 'pretty' : 'json';
}

export function createLogger(
  redactor?: Redactor,
  level = process.env.AIRLOCK_LOG_LEVEL ?? 'info',
  format: LogFormat = defaultLogFormat(),
): Logger {
  const options = {
    name: 'airlock',
    level,
    base: { pid: process.pid },
    hooks: redactor ? { streamWrite: (line: string) => redactor.scrub(line) } : {},
  };
  if (format === 'pretty') {
    const colour = Boolean(process.stderr.isTTY) && !process.env.NO_COLOR;
    return pino(options, { write: (line: string) => void process.stderr.write(prettyLine(line, colour)) });
  }
  return pino(options, pino.destination({ dest: 2, sync: true }));
}

/** A logger that drops everything (tests, library use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

const LEVELS: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};
const LEVEL_COLOUR: Record<number, string> = { 40: '\u001b[33m', 50: '\u001b[31m', 60: '\u001b[31m' };
const OMITTED = new Set(['level', 'time', 'msg', 'pid', 'name', 'hostname']);

/**
 * One pino JSON line as `15:04:05.123 INFO  listening team=acme server=http`, in local time.
 * Values are JSON-encoded when they are not plain words, and control characters never pass:
 * a log line quoting agent input cannot move the cursor.
 */
export function prettyLine(line: string, colour = false): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.endsWith('\n') ? line : line + '\n';
  }
  const time = typeof entry.time === 'number' ? new Date(entry.time) : new Date();
  const hms = [time.getHours(), time.getMinutes(), time.getSeconds()].map((n) => String(n).padStart(2, '0'));
  const stamp = `${hms.join(':')}.${String(time.getMilliseconds()).padStart(3, '0')}`;
  const levelNumber = typeof entry.level === 'number' ? entry.level : 30;
  let level = (LEVELS[levelNumber] ?? String(levelNumber)).padEnd(5);
  if (colour && LEVEL_COLOUR[levelNumber]) level = `${LEVEL_COLOUR[levelNumber]}${level}\u001b[0m`;
  const fields = Object.entries(entry)
    .filter(([k]) => !OMITTED.has(k))
    .map(
      ([k, v]) => `${k}=${typeof v === 'string' && /^[\w./:@-]+$/.test(v) ? v : inert(JSON.stringify(v))}`,
    );
  const msg = typeof entry.msg === 'string' ? inert(entry.msg) : '';
  return `${stamp} ${level} ${[msg, ...fields].filter(Boolean).join(' ')}\n`;
}

function inert(text: string): string {
  return text.replace(
    /[\u0000-\u001f\u007f-\u009f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
