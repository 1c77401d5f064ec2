// YAML with positions: parse a file with the `yaml` package (keeping a LineCounter), and turn
// every problem — syntax errors, duplicate keys, zod validation issues — into a
// `file:line:col: message` issue that points at the offending node. Operators fix policies from
// these messages, so each one names the exact key or value, and every problem is reported at once.
import {
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  visit,
  type Alias,
  type Document,
  type Node,
} from 'yaml';
import type { z } from 'zod';

export interface PolicyIssue {
  file: string;
  /** 1-based. */
  line: number;
  /** 1-based. */
  col: number;
  message: string;
}

export type IssuePath = readonly PropertyKey[];

export function formatIssue(issue: PolicyIssue): string {
  return `${issue.file}:${issue.line}:${issue.col}: ${issue.message}`;
}

/** Sorts issues by file, then position, so output is stable and reads top to bottom. */
export function sortIssues(issues: PolicyIssue[]): PolicyIssue[] {
  return [...issues].sort(
    (a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0) || a.line - b.line || a.col - b.col,
  );
}

export interface YamlSource {
  file: string;
  doc: Document.Parsed;
  lineCounter: LineCounter;
  /** The document as plain data (undefined when the YAML could not be read at all). */
  data: unknown;
  /** Syntax errors, duplicate keys and other YAML-level problems. */
  issues: PolicyIssue[];
  /** True when the only YAML problems are ones that leave the data usable (duplicate keys). */
  usable: boolean;
  /** Each alias's target, found in one pass (resolving each alias by a walk of the document is quadratic). */
  aliases: Map<Alias, Node>;
}

/** Problems after which the parsed data is still the file's evident meaning, so schema checks can run too. */
const RECOVERABLE_CODES = new Set(['DUPLICATE_KEY']);

/** Aliases one file may use (an alias bomb expands each many times over). */
const MAX_ALIASES = 100;

export function parseYaml(file: string, text: string): YamlSource {
  const lineCounter = new LineCounter();
  // prettyErrors off: we print our own `file:line:col`, not the library's context block.
  // YAML 1.2 core schema: no `yes`/`no` booleans, no merge keys, no custom tags; nothing expands
  // environment variables — `$HOME` stays the literal text.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, version: '1.2' });
  const issues: PolicyIssue[] = [];
  let usable = true;
  for (const err of [...doc.errors, ...doc.warnings]) {
    const { line, col } = lineCounter.linePos(err.pos[0]);
    const message = err.code === 'DUPLICATE_KEY' ? duplicateKeyMessage(doc, err.pos[0]) : err.message;
    issues.push({ file, line, col, message });
    if (!RECOVERABLE_CODES.has(err.code)) usable = false;
  }
  // An alias to an anchor that is not defined (before it) is a YAML error the parser leaves to
  // toJS; report it at the alias. One pass in document order: an alias names the last node
  // anchored with its name before it (as the library resolves it, without a walk per alias).
  const aliases = new Map<Alias, Node>();
  const anchored = new Map<string, Node>();
  visit(doc, (_key, node) => {
    if (isAlias(node)) {
      const target = anchored.get(node.source);
      if (target) aliases.set(node, target);
      else {
        issues.push({
          file,
          ...lineCounter.linePos(node.range?.[0] ?? 0),
          message: `unknown alias "*${node.source}"`,
        });
        usable = false;
      }
    } else if ((isScalar(node) || isMap(node) || isSeq(node)) && node.anchor) {
      anchored.set(node.anchor, node);
    }
  });
  let data: unknown;
  if (usable && aliases.size > MAX_ALIASES) {
    // toJS would resolve each by a walk of the document before giving up.
    const first = [...aliases.keys()][MAX_ALIASES]!;
    issues.push({
      file,
      ...lineCounter.linePos(first.range?.[0] ?? 0),
      message: `more than ${MAX_ALIASES} aliases; a policy does not need them (write the values out)`,
    });
    usable = false;
  }
  if (usable) {
    try {
      data = doc.toJS({ maxAliasCount: MAX_ALIASES });
    } catch (err) {
      // e.g. an alias bomb (RESOURCE_EXHAUSTION) or an undefined alias.
      usable = false;
      issues.push({ file, line: 1, col: 1, message: `cannot read YAML: ${(err as Error).message}` });
    }
  }
  return { file, doc, lineCounter, data, issues, usable, aliases };
}

/**
 * A key as an error message may quote it: a name, or only its length. A file that is not a
 * policy (a symlink to a credentials file, a wrong path) must not be printed line by line
 * through "unknown key" messages in `policy check` output and the reload log.
 */
export function shownKey(key: string): string {
  return /^[A-Za-z0-9 _.-]{1,64}$/.test(key) ? `"${key}"` : `(a key of ${key.length} characters, not shown)`;
}

function duplicateKeyMessage(doc: Document.Parsed, offset: number): string {
  let key: string | undefined;
  const visit = (node: unknown): void => {
    if (key !== undefined) return;
    if (isMap(node)) {
      for (const pair of node.items) {
        if (isScalar(pair.key) && pair.key.range?.[0] === offset) {
          key = String(pair.key.value);
          return;
        }
        visit(pair.value);
      }
    } else if (isSeq(node)) {
      for (const item of node.items) visit(item);
    }
  };
  visit(doc.contents);
  return key === undefined ? 'duplicate key' : `duplicate key ${shownKey(key)}`;
}

// ---------------------------------------------------------------------------------------------
// Positions

interface Located {
  /** The value node at the path (undefined if absent). */
  value?: Node;
  /** The key node at the path (for a mapping entry). */
  key?: Node;
  /** The deepest node that exists along the path. */
  deepest?: Node;
  /** True when every segment of the path exists. */
  found: boolean;
}

function resolveAlias(src: Pick<YamlSource, 'aliases'>, node: unknown): unknown {
  return isAlias(node) ? src.aliases.get(node) : node;
}

export function locate(src: Pick<YamlSource, 'doc' | 'aliases'>, path: IssuePath): Located {
  let node = resolveAlias(src, src.doc.contents) as Node | null | undefined;
  let key: Node | undefined;
  let deepest: Node | undefined = node ?? undefined;
  for (const segment of path) {
    if (isMap(node)) {
      const pair = node.items.find(
        (p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(segment),
      );
      if (!pair) return { deepest, found: false };
      key = pair.key as Node;
      node = resolveAlias(src, pair.value) as Node | null;
      // `key:` with nothing after it has no value node; the key is the closest position.
      deepest = node ?? key;
    } else if (isSeq(node) && typeof segment === 'number') {
      const item = node.items[segment];
      if (item === undefined) return { deepest, found: false };
      key = undefined;
      node = resolveAlias(src, item) as Node | null;
      deepest = node ?? deepest;
    } else {
      return { deepest, found: false };
    }
  }
  return { value: node ?? undefined, key, deepest, found: true };
}

function nodePosition(
  src: Pick<YamlSource, 'lineCounter'>,
  node: Node | undefined,
): { line: number; col: number } {
  const offset = node?.range?.[0];
  if (offset === undefined) return { line: 1, col: 1 };
  return src.lineCounter.linePos(offset);
}

/** Position of the value at `path` (or the closest existing node above it). */
export function valuePosition(src: YamlSource, path: IssuePath): { line: number; col: number } {
  const at = locate(src, path);
  return nodePosition(src, at.found ? (at.value ?? at.key) : at.deepest);
}

/** Position of the key at `path` (the value's position for a sequence item). */
export function keyPosition(src: YamlSource, path: IssuePath): { line: number; col: number } {
  const at = locate(src, path);
  return nodePosition(src, at.found ? (at.key ?? at.value) : at.deepest);
}

/**
 * An issue at the node of `path`. The message is prefixed with the path, except for a key
 * (`where: 'key'`), which is prefixed with the mapping that holds it.
 */
export function issueAt(
  src: YamlSource,
  path: IssuePath,
  message: string,
  where: 'key' | 'value' = 'value',
): PolicyIssue {
  const pos = where === 'key' ? keyPosition(src, path) : valuePosition(src, path);
  return { file: src.file, ...pos, message: prefixPath(where === 'key' ? path.slice(0, -1) : path, message) };
}

/** `servers.http.hosts[0].origin` — the path as an operator reads it. */
export function formatPath(path: IssuePath): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else {
      const name = String(segment);
      out += /^[A-Za-z0-9_$-]+$/.test(name) ? (out ? '.' : '') + name : `[${JSON.stringify(name)}]`;
    }
  }
  return out;
}

function prefixPath(path: IssuePath, message: string): string {
  return path.length ? `${formatPath(path)}: ${message}` : message;
}

// ---------------------------------------------------------------------------------------------
// zod issues → positioned issues

type ZodIssue = z.core.$ZodIssue;
type AnySchema = z.core.$ZodType;

function valueAt(data: unknown, path: IssuePath): { present: boolean; value: unknown } {
  let current: unknown = data;
  for (const segment of path) {
    if (current === null || typeof current !== 'object') return { present: false, value: undefined };
    if (!Object.prototype.hasOwnProperty.call(current, segment)) return { present: false, value: undefined };
    current = (current as Record<PropertyKey, unknown>)[segment];
  }
  return { present: true, value: current };
}

// zod 4 schemas describe themselves through `_zod.def`; we only read it to name the keys an
// object accepts, so "unknown key" messages can say what would have been right.
function unwrap(schema: AnySchema | undefined): AnySchema | undefined {
  let s = schema;
  for (let i = 0; s && i < 20; i++) {
    const def = s._zod.def as unknown as Record<string, unknown> & { type: string };
    if (
      ['optional', 'nullable', 'default', 'prefault', 'readonly', 'catch', 'nonoptional'].includes(def.type)
    ) {
      s = def.innerType as AnySchema;
    } else if (def.type === 'pipe') {
      // `.transform()` pipes the schema into a transform; `z.preprocess()` pipes a transform into
      // the schema: either way the side that is a schema says which keys are allowed.
      const input = def.in as AnySchema;
      s = (input._zod.def as { type: string }).type === 'transform' ? (def.out as AnySchema) : input;
    } else if (def.type === 'lazy') {
      s = (def.getter as () => AnySchema)();
    } else {
      return s;
    }
  }
  return s;
}

function objectKeys(schema: AnySchema | undefined): string[] | undefined {
  const s = unwrap(schema);
  if (!s) return undefined;
  const def = s._zod.def as unknown as { type: string; shape?: Record<string, AnySchema> };
  return def.type === 'object' && def.shape ? Object.keys(def.shape) : undefined;
}

/**
 * The keys an object schema accepts. For a union of objects (zod reports an unknown key
 * directly when the other keys single out one alternative), the alternative that accepts every
 * other key of the value.
 */
function allowedKeys(schema: AnySchema | undefined, value: unknown, unknown: string[]): string[] | undefined {
  const s = unwrap(schema);
  const def = s?._zod.def as unknown as { type: string; options?: AnySchema[] } | undefined;
  if (def?.type !== 'union' || !def.options) return objectKeys(s);
  const present =
    value && typeof value === 'object' ? Object.keys(value).filter((k) => !unknown.includes(k)) : [];
  for (const option of def.options) {
    const keys = objectKeys(option);
    if (keys && present.length > 0 && present.every((k) => keys.includes(k))) return keys;
  }
  return undefined;
}

/** The sub-schema at a data path (best effort; undefined when it cannot be followed). */
export function schemaAt(schema: AnySchema | undefined, path: IssuePath): AnySchema | undefined {
  let s = unwrap(schema);
  for (const segment of path) {
    if (!s) return undefined;
    const def = s._zod.def as unknown as Record<string, unknown> & { type: string };
    if (def.type === 'object') {
      s = unwrap((def.shape as Record<string, AnySchema>)[String(segment)]);
    } else if (def.type === 'record') {
      s = unwrap(def.valueType as AnySchema);
    } else if (def.type === 'array') {
      s = unwrap(def.element as AnySchema);
    } else if (def.type === 'union') {
      const options = def.options as AnySchema[];
      s = options.map((o) => schemaAt(o, [segment])).find((x) => x !== undefined);
    } else {
      return undefined;
    }
  }
  return s;
}

/** A value of another kind altogether (a string where an object goes): that alternative was not meant. */
const WRONG_KIND_WEIGHT = 1000;

function issueWeight(issues: ZodIssue[]): number {
  return issues.reduce((n, i) => {
    if (i.path.length === 0 && (i.code === 'invalid_type' || i.code === 'invalid_value'))
      return n + WRONG_KIND_WEIGHT;
    return n + (i.code === 'unrecognized_keys' ? i.keys.length : 1);
  }, 0);
}

function cleanMessage(message: string): string {
  return message.replace(/^Invalid input: /, '');
}

/** How a zod type reads in a message about YAML. */
const KIND_NAMES: Record<string, string> = {
  object: 'a mapping',
  array: 'a list',
  record: 'a mapping',
  string: 'a string',
  number: 'a number',
  boolean: 'true or false',
};

/** What a YAML value is, for "expected a list, not a string". */
function kindOf(value: unknown): string {
  if (Array.isArray(value)) return 'a list';
  if (value === null || value === undefined) return 'nothing';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'boolean') return `${value}`;
  return `a ${typeof value}`;
}

/** `Too small: expected array to have >=1 items` → `must list at least 1 item`. Custom messages stay. */
function sizeMessage(issue: ZodIssue): string {
  const i = issue as ZodIssue & {
    origin?: string;
    minimum?: number | bigint;
    maximum?: number | bigint;
    inclusive?: boolean;
  };
  if (!/^Too (small|big)/.test(issue.message)) return cleanMessage(issue.message);
  const small = issue.code === 'too_small';
  const bound = Number(small ? i.minimum : i.maximum);
  const inclusive = i.inclusive !== false;
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  switch (i.origin) {
    case 'array':
    case 'set':
      if (small && bound === 1) return 'must list at least one item';
      return small
        ? `must list at least ${plural(bound, 'item')}`
        : `must list at most ${plural(bound, 'item')}`;
    case 'string':
      if (small && bound === 1) return 'must not be empty';
      return small
        ? `must be at least ${plural(bound, 'character')}`
        : `must be at most ${plural(bound, 'character')}`;
    case 'number':
    case 'int':
    case 'bigint':
      if (small) return inclusive ? `must be ${bound} or more` : `must be more than ${bound}`;
      return inclusive ? `must be ${bound} or less` : `must be less than ${bound}`;
    default:
      return cleanMessage(issue.message);
  }
}

/**
 * Maps zod issues onto the YAML nodes they concern: an unknown key at the key, a wrong type or
 * failed refinement at the value, a missing key at the mapping that lacks it. `schema` is the
 * schema the issues came from (validating the data at `base`); it names the allowed keys.
 */
export function zodIssuesToPolicyIssues(
  src: YamlSource,
  zodIssues: readonly ZodIssue[],
  schema?: AnySchema,
  base: IssuePath = [],
): PolicyIssue[] {
  const out: PolicyIssue[] = [];
  for (const issue of zodIssues) {
    const path: PropertyKey[] = [...base, ...issue.path];
    switch (issue.code) {
      case 'unrecognized_keys': {
        const allowed = allowedKeys(schemaAt(schema, issue.path), valueAt(src.data, path).value, issue.keys);
        const hint = allowed ? ` (allowed: ${allowed.length ? allowed.join(', ') : 'none'})` : '';
        for (const key of issue.keys)
          out.push(issueAt(src, [...path, key], `unknown key ${shownKey(key)}${hint}`, 'key'));
        break;
      }
      case 'invalid_key': {
        const reasons = issue.issues.map((i) => cleanMessage(i.message)).join('; ');
        const key = path[path.length - 1];
        out.push(issueAt(src, path, `invalid key ${shownKey(String(key))}: ${reasons}`, 'key'));
        break;
      }
      case 'invalid_union': {
        // Report the alternative the author most likely meant: the one with the fewest problems.
        const ranked = issue.errors
          .map((errs, option) => ({ errs, option, weight: issueWeight(errs) }))
          .sort((a, b) => a.weight - b.weight);
        const [best, second] = ranked;
        const union = schemaAt(schema, issue.path);
        if (best && best.errs.length > 0 && (!second || best.weight < second.weight)) {
          const options = (union?._zod.def as unknown as { options?: AnySchema[] } | undefined)?.options;
          out.push(...zodIssuesToPolicyIssues(src, best.errs, options?.[best.option], path));
        } else {
          out.push(issueAt(src, path, unionMessage(union, issue.message)));
        }
        break;
      }
      case 'invalid_type': {
        const at = valueAt(src.data, path);
        if (!at.present && path.length > 0) {
          // Missing key: point at the mapping that should contain it.
          const parent = path.slice(0, -1);
          const key = String(path[path.length - 1]);
          out.push(issueAt(src, parent, `missing required key "${key}"`));
        } else if (at.value === null || at.value === undefined) {
          // `key:` with nothing after it, or a file with nothing in it.
          const what = KIND_NAMES[issue.expected] ?? issue.expected;
          out.push(
            issueAt(
              src,
              path,
              path.length === 0
                ? `the file is empty; expected ${what} of settings`
                : `is empty; expected ${what}`,
            ),
          );
        } else {
          const what = KIND_NAMES[issue.expected];
          out.push(
            issueAt(
              src,
              path,
              what ? `expected ${what}, not ${kindOf(at.value)}` : cleanMessage(issue.message),
            ),
          );
        }
        break;
      }
      case 'invalid_value': {
        // An enum: say the choices plainly (`must be one of: GET, HEAD`), not zod's `"GET"|"HEAD"`.
        const values = (issue as { values?: unknown[] }).values;
        const plain = values?.every((v) => typeof v === 'string' || typeof v === 'number');
        out.push(
          issueAt(
            src,
            path,
            plain && values ? `must be one of: ${values.join(', ')}` : cleanMessage(issue.message),
          ),
        );
        break;
      }
      case 'too_small':
      case 'too_big':
        out.push(issueAt(src, path, sizeMessage(issue)));
        break;
      default:
        out.push(issueAt(src, path, cleanMessage(issue.message)));
    }
  }
  return out;
}

function unionMessage(union: AnySchema | undefined, fallback: string): string {
  const s = unwrap(union);
  const def = s?._zod.def as unknown as { type: string; options?: AnySchema[] } | undefined;
  if (def?.type === 'union' && def.options) {
    const firstKeys = def.options.map((o) => objectKeys(o)?.[0]);
    if (firstKeys.every((k) => k !== undefined)) {
      return `expected a mapping with exactly one of: ${[...new Set(firstKeys)].join(', ')}`;
    }
  }
  return cleanMessage(fallback);
}

/** Validates a parsed YAML source against a schema; returns positioned issues and the parsed value. */
export function validateYaml<S extends z.ZodType>(
  src: YamlSource,
  schema: S,
): { success: true; data: z.output<S>; issues: [] } | { success: false; issues: PolicyIssue[] } {
  const result = schema.safeParse(src.data, { jitless: true });
  if (result.success) return { success: true, data: result.data, issues: [] };
  return { success: false, issues: zodIssuesToPolicyIssues(src, result.error.issues, schema) };
}
