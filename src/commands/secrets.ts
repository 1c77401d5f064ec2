// `airlock secrets set NAME | list | delete NAME`: OS keychain entries under service "airlock".
// A value only ever arrives on stdin: an argument would sit in `ps` output and shell history.
import type { ReadStream } from 'node:tty';
import type { CommandContext } from '../cli.js';
import { secretNameSchema } from '../secrets/config.js';
import { MIN_REDACTABLE_LENGTH, Redactor } from '../secrets/redact.js';
import { KEYCHAIN_SERVICE, osKeychain, type Keychain } from '../secrets/keychain.js';
import { trimOneNewline, MAX_SECRET_FILE_BYTES } from '../secrets/store.js';

export interface SecretsCommandOptions {
  action: 'set' | 'list' | 'delete';
  name?: string;
  /**
   * Positional arguments after NAME, as the CLI parsed them. Any makes `set` fail: a value on the
   * command line has already leaked to `ps` and shell history. They are never echoed.
   */
  extraArgs?: string[];
  stdin?: NodeJS.ReadableStream;
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
  keychain?: Keychain;
}

export const EXIT_OK = 0;
export const EXIT_USER = 1;
export const EXIT_INTERNAL = 2;

/** Same cap as a secret file: anything larger is a mistake (wrong file piped in). */
const MAX_VALUE_BYTES = MAX_SECRET_FILE_BYTES;

class UserError extends Error {}

export async function secretsCommand(opts: SecretsCommandOptions): Promise<number> {
  const out = opts.out ?? process.stdout;
  const err = opts.err ?? process.stderr;
  const keychain = opts.keychain ?? osKeychain;
  const where = `the OS keychain (service "${KEYCHAIN_SERVICE}")`;
  // Whatever goes wrong after the value is read, no message may carry it.
  const redactor = new Redactor();
  try {
    switch (opts.action) {
      case 'list': {
        if (opts.name !== undefined || (opts.extraArgs?.length ?? 0) > 0)
          throw new UserError('usage: airlock secrets list');
        const names = await keychain.list();
        for (const name of names) out.write(`${name}\n`);
        if (names.length === 0) err.write(`no secrets in ${where}\n`);
        return EXIT_OK;
      }
      case 'set': {
        const name = checkName(opts.name, 'set');
        if ((opts.extraArgs?.length ?? 0) > 0) {
          throw new UserError(
            `airlock secrets set takes the value on stdin, never as an argument (an argument is visible in ps and shell history); ` +
              `if that argument was a real credential, rotate it. Usage: printf %s "$VALUE" | airlock secrets set ${name}`,
          );
        }
        const value = await readValue(opts.stdin ?? process.stdin, err, name);
        redactor.add(value);
        await keychain.set(name, value);
        out.write(`stored secret "${name}" in ${where}\n`);
        if (value.length < MIN_REDACTABLE_LENGTH) {
          err.write(
            `warning: the value is shorter than ${MIN_REDACTABLE_LENGTH} characters, so it cannot be redacted from output\n`,
          );
        }
        return EXIT_OK;
      }
      case 'delete': {
        const name = checkName(opts.name, 'delete');
        if ((opts.extraArgs?.length ?? 0) > 0) throw new UserError('usage: airlock secrets delete NAME');
        if (!(await keychain.delete(name))) throw new UserError(`secret "${name}" is not in ${where}`);
        out.write(`deleted secret "${name}" from ${where}\n`);
        return EXIT_OK;
      }
      default:
        throw new UserError(
          `unknown action "${String(opts.action)}"; usage: airlock secrets set NAME | list | delete NAME`,
        );
    }
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    err.write(`airlock secrets: ${redactor.scrub(message)}\n`);
    if (e instanceof UserError) return EXIT_USER;
    // Keychain unavailable (KeychainUnavailableError says what is missing and how to fix it) or a bug.
    return EXIT_INTERNAL;
  }
}

function checkName(name: string | undefined, action: string): string {
  if (name === undefined || name === '') throw new UserError(`usage: airlock secrets ${action} NAME`);
  const parsed = secretNameSchema.safeParse(name);
  if (!parsed.success)
    throw new UserError(`invalid secret name "${name}": ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  return parsed.data;
}

async function readValue(
  stdin: NodeJS.ReadableStream,
  err: NodeJS.WritableStream,
  name: string,
): Promise<string> {
  const tty = stdin as Partial<ReadStream>;
  const value =
    tty.isTTY && typeof tty.setRawMode === 'function'
      ? await readHidden(stdin as ReadStream, err, name)
      : trimOneNewline(await readAll(stdin));
  if (value === '') throw new UserError('refusing to store an empty value (nothing was read from stdin)');
  return value;
}

async function readAll(stdin: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stdin) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk as Uint8Array);
    size += buf.length;
    if (size > MAX_VALUE_BYTES)
      throw new UserError(`the value on stdin is larger than ${MAX_VALUE_BYTES} bytes`);
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Reads one line from a terminal with echo off. Ctrl-C cancels, Backspace edits, Enter or Ctrl-D ends. */
function readHidden(stdin: ReadStream, err: NodeJS.WritableStream, name: string): Promise<string> {
  err.write(
    `value for secret "${name}" (input hidden; or pipe it: printf %s "$VALUE" | airlock secrets set ${name}): `,
  );
  return new Promise((resolve, reject) => {
    let value = '';
    const finish = (error?: Error) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      err.write('\n');
      if (error) reject(error);
      else resolve(value);
    };
    const onData = (chunk: Buffer | string) => {
      for (const ch of typeof chunk === 'string' ? chunk : chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return finish();
        if (ch === '\u0003') return finish(new UserError('cancelled'));
        if (ch === '\u007f' || ch === '\b') value = [...value].slice(0, -1).join('');
        else if (ch >= ' ') value += ch;
        if (value.length > MAX_VALUE_BYTES)
          return finish(new UserError(`the value is larger than ${MAX_VALUE_BYTES} bytes`));
      }
    };
    stdin.setRawMode(true);
    stdin.on('data', onData);
    stdin.resume();
  });
}

export function secretsMain(ctx: CommandContext, action: SecretsCommandOptions['action']): Promise<number> {
  const [name, ...extraArgs] = ctx.positionals;
  // The command checks its arguments itself (a value given as an argument gets its own warning).
  return secretsCommand({ action, name, extraArgs, stdin: process.stdin });
}
