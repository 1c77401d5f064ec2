// Text from GitHub is written by whoever could open an issue or a pull request: it is the
// classic prompt-injection channel. Before an agent sees it, invisible characters that can hide
// instructions (Unicode tag characters, bidi controls, zero-width and other format characters,
// variation selectors, invisible fillers) are removed and counted, its size is capped, and each
// piece is labelled with who wrote it and GitHub's author_association for them, so an agent and
// the audit can tell a maintainer's words from an outsider's.
import { z } from 'zod';

/**
 * \p{Cf} is Unicode's "format" category: zero-width space/joiners (U+200B–U+200D), word joiner
 * and invisible operators (U+2060–U+2064), bidi embeddings/overrides/isolates (U+202A–U+202E,
 * U+2066–U+2069), LRM/RLM/ALM, BOM (U+FEFF), soft hyphen, interlinear annotations and the tag
 * block (U+E0001, U+E0020–U+E007F). Added: variation selectors (U+FE00–U+FE0F, U+E0100–U+E01EF,
 * used to smuggle bytes after a visible character), the combining grapheme joiner, Hangul and
 * braille fillers that render as blanks, and C0/C1 controls other than tab and newline.
 */
const INVISIBLE = new RegExp(
  // eslint-disable-next-line no-misleading-character-class -- combining marks are listed on purpose, one by one
  '[\\p{Cf}\\uFE00-\\uFE0F\\u{E0100}-\\u{E01EF}\\u034F\\u115F\\u1160\\u3164\\uFFA0\\u2800\\u180B-\\u180D\\u180F\\0-\\x08\\x0B-\\x1F\\x7F-\\x9F]',
  'gu',
);

export interface CleanText {
  text: string;
  /** Invisible characters (code points) removed. */
  removed: number;
  truncated: boolean;
}

/** Removes invisible characters (CRLF becomes LF), then caps the result at `maxChars` code units. */
export function cleanText(raw: string, maxChars: number): CleanText {
  let removed = 0;
  const normalized = raw.replace(/\r\n/g, '\n');
  let text = normalized.replace(INVISIBLE, () => {
    removed++;
    return '';
  });
  let truncated = false;
  if (text.length > maxChars) {
    // Never cut a surrogate pair in half.
    let end = maxChars;
    const code = text.charCodeAt(end - 1);
    if (code >= 0xd800 && code <= 0xdbff) end--;
    text = text.slice(0, end);
    truncated = true;
  }
  return { text, removed, truncated };
}

/** author_association values that mean the author has write access (or owns the repository). */
const WRITE_ASSOCIATIONS: ReadonlySet<string> = new Set(['OWNER', 'MEMBER', 'COLLABORATOR']);

export type UntrustedAuthors = 'label' | 'omit';

export const labelledTextSchema = z.object({
  /** GitHub login of the author (null when GitHub does not say, e.g. a deleted user). */
  author: z.string().nullable(),
  /** GitHub's author_association (OWNER, MEMBER, COLLABORATOR, CONTRIBUTOR, NONE, …); null when GitHub gives none. */
  authorAssociation: z.string().nullable(),
  /** True for OWNER, MEMBER, COLLABORATOR; false for others; null when the association is unknown. */
  writeAccess: z.boolean().nullable(),
  /** The cleaned text; null when omitted by `untrustedAuthors: omit`. */
  text: z.string().nullable(),
  omitted: z.boolean(),
  /** Invisible characters removed from it. */
  invisibleRemoved: z.number().int(),
  truncated: z.boolean(),
});

export type LabelledText = z.output<typeof labelledTextSchema>;

export interface TextAuthor {
  login?: string | null;
  association?: string | null;
}

/** Cleans one piece of GitHub text and labels it with its author; drops it when policy says so. */
export function labelText(
  raw: string | null | undefined,
  author: TextAuthor,
  opts: { maxChars: number; untrustedAuthors: UntrustedAuthors },
): LabelledText {
  const association = author.association ?? null;
  const writeAccess = association === null ? null : WRITE_ASSOCIATIONS.has(association);
  const base = {
    author: author.login ?? null,
    authorAssociation: association,
    writeAccess,
  };
  // Unknown association counts as untrusted for omission: the host decides, not the text.
  if (opts.untrustedAuthors === 'omit' && writeAccess !== true) {
    return { ...base, text: null, omitted: true, invisibleRemoved: 0, truncated: false };
  }
  const cleaned = cleanText(raw ?? '', opts.maxChars);
  return {
    ...base,
    text: cleaned.text,
    omitted: false,
    invisibleRemoved: cleaned.removed,
    truncated: cleaned.truncated,
  };
}

/** A one-line title or name: cleaned, newlines folded, capped. */
export function cleanLine(raw: string | null | undefined, maxChars = 512): CleanText {
  return cleanText((raw ?? '').replace(/[\r\n]+/g, ' '), maxChars);
}

/** How a labelled piece is shown in the text rendering: a header naming the author, then the text. */
export function renderLabelled(what: string, piece: LabelledText): string {
  const who = piece.author ? `@${piece.author}` : 'an unknown author';
  const assoc = piece.authorAssociation ?? 'association unknown';
  const access =
    piece.writeAccess === true
      ? 'write access'
      : piece.writeAccess === false
        ? 'NO write access'
        : 'access unknown';
  const notes: string[] = [];
  if (piece.invisibleRemoved > 0) notes.push(`${piece.invisibleRemoved} invisible character(s) removed`);
  if (piece.truncated) notes.push('truncated');
  const header = `----- ${what} by ${who} (${assoc}, ${access})${notes.length ? ` [${notes.join('; ')}]` : ''} -----`;
  if (piece.omitted)
    return `${header}\n[omitted: the author has no write access (policy untrustedAuthors: omit)]`;
  return `${header}\n${piece.text ?? ''}`;
}

/** Totals for a result's audit detail. */
export function invisibleTotal(pieces: readonly { invisibleRemoved: number }[]): number {
  return pieces.reduce((sum, p) => sum + p.invisibleRemoved, 0);
}
