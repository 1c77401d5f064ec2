// Scrubs every secret value the broker holds from anything that leaves it: tool results,
// error texts, logs, audit records. A value is also caught in the forms it is usually
// re-encoded into on the way out: base64 (standard and URL-safe, at every byte alignment, so
// `user:token` basic auth with any user name is covered), URL-encoding and hex.
import { createHash } from 'node:crypto';

export const REDACTED = '[redacted]';

/** Shorter values would redact ordinary text; the broker warns about them instead. */
export const MIN_REDACTABLE_LENGTH = 4;

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * The base64 text that encodes `value` whatever bytes precede it: for each of the three
 * alignments, encode with 0–2 filler bytes in front and keep only the characters that depend on
 * the value alone.
 */
function base64Cores(value: Buffer): string[] {
  const cores: string[] = [];
  for (let shift = 0; shift < 3; shift++) {
    const padded = Buffer.concat([Buffer.alloc(shift), value]);
    const b64 = padded.toString('base64').replace(/=+$/, '');
    // Leading chars mix filler bits; trailing chars may mix with whatever follows.
    const start = Math.ceil((shift * 8) / 6);
    const end = Math.floor(((shift + value.length) * 8) / 6);
    const core = b64.slice(start, end);
    if (core.length >= MIN_REDACTABLE_LENGTH) cores.push(core);
  }
  return cores;
}

const hex4 = (c: string) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0');

/**
 * The ways JSON encoders write `value` inside a string: JSON.stringify's, with `/` as `\/`
 * (PHP, some Java), with `<`, `>`, `&`, `'` as `\u00XX` (Go, .NET), and with everything
 * non-ASCII as `\uXXXX` (Python's ensure_ascii).
 */
function jsonEscapedForms(value: string): string[] {
  const plain = JSON.stringify(value).slice(1, -1);
  const slash = plain.replace(/\//g, '\\/');
  const html = (t: string) => t.replace(/[<>&']/g, hex4);
  const ascii = (t: string) => t.replace(/[\u007f-\uffff]/g, hex4);
  return [plain, slash, html(plain), html(slash), ascii(plain), ascii(slash), ascii(html(slash))];
}

/** Hex (both cases) and base64 (standard and URL-safe, every alignment) of `bytes`. */
function byteForms(bytes: Buffer, out: Set<string>): void {
  const hex = bytes.toString('hex');
  out.add(hex);
  out.add(hex.toUpperCase());
  for (const core of base64Cores(bytes)) {
    out.add(core);
    out.add(core.replace(/\+/g, '-').replace(/\//g, '_'));
  }
}

export function secretVariants(value: string): string[] {
  const out = new Set<string>([value]);
  byteForms(Buffer.from(value, 'utf8'), out);
  out.add(encodeURIComponent(value));
  out.add(encodeURIComponent(value).replace(/%20/g, '+'));
  // JSON string escaping (a secret with quotes, slashes or backslashes inside serialized text).
  for (const form of jsonEscapedForms(value)) out.add(form);
  // UTF-16 (a body in a UTF-16 charset, read as bytes or as UTF-8 text): each code unit's bytes.
  const le = Buffer.from(value, 'utf16le');
  const be = Buffer.from(le).swap16();
  for (const bytes of [le, be]) {
    out.add(bytes.toString('latin1'));
    byteForms(bytes, out);
  }
  return [...out].filter((v) => v.length >= MIN_REDACTABLE_LENGTH);
}

export class Redactor {
  private readonly values = new Set<string>();
  /** Every form of every registered value (kept across adds: only a new value's forms are computed). */
  private readonly forms = new Set<string>();
  private pattern: RegExp | null = null;

  /** Registers a secret value; returns false (and registers nothing) if it is too short to redact safely. */
  add(value: string): boolean {
    if (value.length < MIN_REDACTABLE_LENGTH) return false;
    if (this.values.has(value)) return true;
    this.values.add(value);
    for (const variant of secretVariants(value)) this.forms.add(variant);
    // Longest first so a value's longer encoding is replaced whole.
    const parts = [...this.forms].sort((a, b) => b.length - a.length).map(escapeRegExp);
    this.pattern = new RegExp(parts.join('|'), 'g');
    return true;
  }

  get size(): number {
    return this.values.size;
  }

  scrub(text: string): string {
    if (!this.pattern || text.length === 0) return text;
    return text.replace(this.pattern, REDACTED);
  }

  /** True if `text` contains any registered secret in any form. */
  contains(text: string): boolean {
    if (!this.pattern) return false;
    this.pattern.lastIndex = 0;
    const found = this.pattern.test(text);
    this.pattern.lastIndex = 0;
    return found;
  }

  /** Deep copy of `value` with every string (keys included) scrubbed. */
  scrubDeep<T>(value: T): T {
    if (!this.pattern) return value;
    return this.walk(value) as T;
  }

  private walk(value: unknown): unknown {
    if (typeof value === 'string') return this.scrub(value);
    if (Array.isArray(value)) return value.map((v) => this.walk(v));
    if (value && typeof value === 'object') {
      if (Buffer.isBuffer(value)) return this.scrub(value.toString('utf8'));
      // fromEntries defines keys, so an argument named "__proto__" stays a key, not a prototype.
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [this.scrub(k), this.walk(v)]));
    }
    return value;
  }
}

/** Short digest used when a long value is truncated in audit records and logs. */
export function digest(text: string): string {
  return 'sha256:' + createHash('sha256').update(text).digest('hex');
}
