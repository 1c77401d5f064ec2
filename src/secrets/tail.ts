// The start of a secret at the very end of a text. The redactor recognizes whole forms of a
// secret only; a body cut at a size cap (or a stream that stops) can end inside a secret the
// upstream echoed, and the agent can pick where the cut falls (by padding a reflected value), so
// all but the last character would otherwise reach it.
import { secretVariants } from './redact.js';

/** Shorter trailing matches are left alone: too likely to be ordinary text, too little to matter. */
const MIN_SECRET_TAIL = 8;

/** The forms of `secrets` that redaction knows (plain, hex, URL, JSON, base64), as latin1 text of their UTF-8 bytes. */
export function secretFormsLatin1(secrets: Iterable<string>): string[] {
  const forms = new Set<string>();
  for (const secret of secrets) {
    for (const v of secretVariants(secret)) forms.add(Buffer.from(v, 'utf8').toString('latin1'));
  }
  return [...forms];
}

/**
 * Where a trailing, incomplete copy of one of `forms` begins in `text` (at least MIN_SECRET_TAIL
 * characters of its beginning), or `text.length` when the text does not end in one.
 */
export function secretTailStart(text: string, forms: readonly string[]): number {
  let start = text.length;
  for (const form of forms) {
    for (let n = Math.min(form.length - 1, text.length); n >= MIN_SECRET_TAIL; n--) {
      if (text.endsWith(form.slice(0, n))) {
        start = Math.min(start, text.length - n);
        break;
      }
    }
  }
  return start;
}

/** `body` without a trailing, incomplete copy of any form of `secrets`. */
export function cutSecretTail(body: Buffer, secrets: Iterable<string>): Buffer {
  const forms = secretFormsLatin1(secrets);
  if (forms.length === 0) return body;
  // Only the last (longest form) bytes can hold one; latin1 maps bytes 1:1 to characters.
  const from = Math.max(0, body.length - Math.max(...forms.map((f) => f.length)));
  return body.subarray(0, from + secretTailStart(body.subarray(from).toString('latin1'), forms));
}
