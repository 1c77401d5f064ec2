// Hostile paths and refs: whatever string an agent sends, either it is refused, or the URL path
// Octokit builds from it (each segment percent-encoded) decodes back to exactly that path, stays
// under /contents/, and has no query, fragment or dot segment.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Octokit } from '@octokit/rest';
import { encodePath, pathProblem, refProblem } from '../../servers/github/args.js';

const octokit = new Octokit({ baseUrl: 'https://api.github.test' });
const PIECES = [
  'a',
  'b',
  '.',
  '..',
  '/',
  '\\',
  '%',
  '%2e',
  '%2F',
  '?',
  '#',
  ' ',
  'é',
  '\u0000',
  '\n',
  '~',
  ':',
  '@',
  '+',
  '&',
  '=',
  ';',
  '[',
  ']',
];

describe('file paths', () => {
  it('property: a path is refused, or reaches GitHub as exactly itself under /contents/', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(...PIECES), { maxLength: 12 }).map((p) => p.join('')),
        (path) => {
          if (pathProblem(path) !== undefined) return;
          const { url } = octokit.request.endpoint('GET /repos/{owner}/{repo}/contents/{+path}', {
            owner: 'acme',
            repo: 'app',
            path: encodePath(path),
          });
          const parsed = new URL(url);
          expect(parsed.search).toBe('');
          expect(parsed.hash).toBe('');
          // The root ("") is /contents itself.
          const base = '/repos/acme/app/contents';
          expect(parsed.pathname === base || parsed.pathname.startsWith(`${base}/`)).toBe(true);
          const rest = parsed.pathname.slice(base.length + 1);
          const segments = rest === '' ? [] : rest.split('/').map(decodeURIComponent);
          expect(segments.join('/')).toBe(path);
          expect(segments.some((s) => s === '..' || s === '.')).toBe(false);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('refuses the classic traversal and smuggling forms', () => {
    for (const p of [
      '..',
      '../x',
      'a/../b',
      './a',
      'a//b',
      '/a',
      'a/',
      '%2e%2e/x',
      'a%2Fb',
      'a?ref=x',
      'a#x',
      'a\\b',
      'a\0b',
    ])
      expect(pathProblem(p), p).toBeDefined();
    for (const p of ['', 'README.md', 'src/a b/ü.ts', 'weird name (1).txt', '.github/workflows/ci.yml'])
      expect(pathProblem(p), p).toBeUndefined();
  });
});

describe('refs', () => {
  it('accepts branch names, tags and object ids; refuses option-like, traversal and escaped forms', () => {
    for (const r of ['main', 'agent/fix-1', 'refs/heads/main', 'v1.2.3', 'deadbee', 'a'.repeat(40)])
      expect(refProblem(r), r).toBeUndefined();
    for (const r of [
      '',
      '-x',
      '--upload-pack=evil',
      'a..b',
      'a@{1}',
      'a b',
      'a:b',
      'a~1',
      'a^',
      '.hidden',
      'a/.b',
      'a.lock',
      'a/',
      'x%2e',
      'a\nb',
    ])
      expect(refProblem(r), r).toBeDefined();
  });
});
