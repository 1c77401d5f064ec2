// Scrubs every secret value the broker holds from anything that leaves it: tool results,
// error texts, logs, audit records. A value is also caught in the forms it is usually
// re-encoded into on the way out: base64 (standard and URL-safe, at every byte alignment, so
// `user:token` basic auth with any user name is covered), URL-encoding and hex.
import { createHash } from 'node:crypto';

export const REDACTED = '[redacted]';

/** Shorter values would redact ordinary text; the broker warns about them instead. */
export const MIN_REDACTABLE_LENGTH = 4;

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

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
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
  try {
    const encoded = encodeURIComponent(value);
    out.add(encoded);
    out.add(encoded.replace(/%20/g, '+'));
  } catch {
    // A lone surrogate has no URL encoding (URIError): such a value has no URL-encoded form.
  }
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

/**
 * The key of the 4 code units at `i` (every form is at least MIN_REDACTABLE_LENGTH = 4 long): exact
 * for Latin-1 text, a hash otherwise (a bucket's forms are still compared whole).
 */
function prefixKey(text: string, i: number): number {
  const a = text.charCodeAt(i);
  const b = text.charCodeAt(i + 1);
  const c = text.charCodeAt(i + 2);
  const d = text.charCodeAt(i + 3);
  if ((a | b | c | d) < 256) return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
  return (Math.imul(Math.imul(Math.imul(a, 0x9e3779b1) ^ b, 0x85ebca6b) ^ c, 0xc2b2ae35) ^ d) >>> 0;
}

/** Past about this much source V8 no longer compiles an alternation to native code (~100× slower). */
const REGEX_MAX_SOURCE = 12_000;
/** Longer texts are scanned: on those the scan wins from about three secrets on… */
const REGEX_MAX_TEXT = 512;
/** …and below that (one or two secrets' forms) the alternation is faster on any text. */
const REGEX_ALWAYS_FORMS = 40;
const FILTER_BITS = 16;
const filterSlot = (key: number) => (key ^ (key >>> FILTER_BITS)) & ((1 << FILTER_BITS) - 1);

export class Redactor {
  private readonly values = new Set<string>();
  /**
   * Every form of every registered value, with how many registered values have it (only a new
   * value's forms are computed; a form stays while any value that has it is registered).
   */
  private readonly forms = new Map<string, number>();
  /**
   * Forms by the key of their first four code units, longest first. A scan looks each position's
   * key up (after a 64 Ki-slot filter that nearly every position fails), so its cost is the text's
   * length whatever the number of secrets. One RegExp alternation of every form (all there was
   * before) was 4× slower on 75 KB at 10 secrets and fell off a cliff past ~20 (V8 stops compiling
   * a pattern that large: 30 ms for 75 KB), while App tokens keep adding secrets to a broker.
   */
  private readonly buckets = new Map<number, string[]>();
  private readonly filter = new Uint8Array(1 << FILTER_BITS);
  /**
   * The same forms as one RegExp alternation, longest first, while that stays small: V8's
   * compiled pattern beats the scan on short strings (log lines, arguments: ~75 vs ~170 ns at one
   * secret). None while the set is larger than REGEX_MAX_SOURCE.
   */
  private pattern: RegExp | null = null;
  private patternSource = 0;

  /** Registers a secret value; returns false (and registers nothing) if it is too short to redact safely. */
  add(value: string): boolean {
    if (value.length < MIN_REDACTABLE_LENGTH) return false;
    if (this.values.has(value)) return true;
    this.values.add(value);
    for (const form of new Set(secretVariants(value))) {
      const owners = this.forms.get(form);
      this.forms.set(form, (owners ?? 0) + 1);
      if (owners) continue;
      const key = prefixKey(form, 0);
      const bucket = this.buckets.get(key);
      // Longest first, so a value's longer encoding is replaced whole (leftmost, then longest).
      if (bucket) {
        bucket.push(form);
        bucket.sort((x, y) => y.length - x.length);
      } else this.buckets.set(key, [form]);
      this.filter[filterSlot(key)] = 1;
      this.patternSource += form.length + 1;
    }
    this.rebuildPattern();
    return true;
  }

  /**
   * Stops redacting a value registered before (an installation token past its expiry: it grants
   * nothing any more, and a broker that mints every hour must not grow forever). Forms another
   * registered value also has are kept.
   */
  remove(value: string): void {
    if (!this.values.delete(value)) return;
    for (const form of new Set(secretVariants(value))) {
      const owners = this.forms.get(form) ?? 0;
      if (owners > 1) {
        this.forms.set(form, owners - 1);
        continue;
      }
      this.forms.delete(form);
      const key = prefixKey(form, 0);
      const bucket = this.buckets.get(key)?.filter((f) => f !== form);
      if (bucket?.length) this.buckets.set(key, bucket);
      else this.buckets.delete(key);
      this.patternSource -= form.length + 1;
    }
    // Slots are shared by keys: set again from the keys that are left.
    this.filter.fill(0);
    for (const key of this.buckets.keys()) this.filter[filterSlot(key)] = 1;
    this.rebuildPattern();
  }

  private rebuildPattern(): void {
    this.pattern =
      this.patternSource <= REGEX_MAX_SOURCE && this.forms.size > 0
        ? new RegExp(
            [...this.forms.keys()]
              .sort((a, b) => b.length - a.length)
              .map(escapeRegExp)
              .join('|'),
            'g',
          )
        : null;
  }

  get size(): number {
    return this.values.size;
  }

  /** The leftmost form in `text` at or after `from` (the longest one there), or undefined. */
  private find(text: string, from: number): { at: number; length: number } | undefined {
    const { filter, buckets } = this;
    const n = text.length;
    // The key of the four code units ending at j, rolled one unit at a time; a window holding a
    // unit past Latin-1 takes prefixKey's hash instead.
    let rolled = 0;
    let wideUntil = -1;
    for (let j = from; j < n; j++) {
      const c = text.charCodeAt(j);
      if (c > 255) wideUntil = j + 3;
      rolled = (rolled << 8) | c;
      if (j < from + 3) continue;
      const i = j - 3;
      const key = j <= wideUntil ? prefixKey(text, i) : rolled >>> 0;
      if (filter[filterSlot(key)] === 0) continue;
      const bucket = buckets.get(key);
      if (bucket === undefined) continue;
      for (const form of bucket) if (text.startsWith(form, i)) return { at: i, length: form.length };
    }
    return undefined;
  }

  /** The alternation, when it is the faster way through `text` (see `pattern`). */
  private patternFor(text: string): RegExp | null {
    return text.length <= REGEX_MAX_TEXT || this.forms.size <= REGEX_ALWAYS_FORMS ? this.pattern : null;
  }

  scrub(text: string): string {
    if (this.forms.size === 0) return text;
    const pattern = this.patternFor(text);
    if (pattern) return text.replace(pattern, REDACTED);
    let found = this.find(text, 0);
    if (!found) return text;
    let out = '';
    let done = 0;
    while (found) {
      out += text.slice(done, found.at) + REDACTED;
      done = found.at + found.length;
      found = this.find(text, done);
    }
    return out + text.slice(done);
  }

  /** True if `text` contains any registered secret in any form. */
  contains(text: string): boolean {
    if (this.forms.size === 0) return false;
    const pattern = this.patternFor(text);
    if (pattern) {
      pattern.lastIndex = 0;
      const found = pattern.test(text);
      pattern.lastIndex = 0;
      return found;
    }
    return this.find(text, 0) !== undefined;
  }

  /** Deep copy of `value` with every string (keys included) scrubbed. */
  scrubDeep<T>(value: T): T {
    if (this.forms.size === 0) return value;
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
