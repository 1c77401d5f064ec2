// YAML aliases are resolved once per file, not by a walk of the document per alias: a policy of
// thousands of aliases used to take 11–18 s to check and stalled every team's reload meanwhile.
import { Alias } from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { locate, parseYaml } from '../../src/config/yaml-positions.js';

const original = Alias.prototype.resolve;
afterEach(() => {
  Alias.prototype.resolve = original;
});

/** Counts calls of the library's per-alias resolution (a walk of the whole document each). */
function countResolves(): { calls: number } {
  const counter = { calls: 0 };
  Alias.prototype.resolve = function (this: Alias, ...args: Parameters<Alias['resolve']>) {
    counter.calls++;
    return original.apply(this, args);
  };
  return counter;
}

describe('YAML aliases', () => {
  it('checks an 18 KB file of 3,000 aliases without resolving any alias by a document walk', () => {
    let text = 'team: acme\nanchor: &a { x: 1 }\nservers:\n  http:\n    hosts:\n';
    for (let i = 0; text.length < 18_000; i++) text += `      - *a\n`;
    const counter = countResolves();
    const src = parseYaml('acme.yaml', text);
    expect(counter.calls).toBe(0);
    // More aliases than toJS allows: refused as a resource-exhaustion attempt, with a position.
    expect(src.usable).toBe(false);
    expect(src.issues.map((i) => i.message)).toContain(
      'more than 100 aliases; a policy does not need them (write the values out)',
    );
  });

  it('still reports an unknown alias at its position and resolves known ones for positions', () => {
    const src = parseYaml('p.yaml', 'a: &x { b: 1 }\nc: *x\nd: *missing\n');
    expect(src.issues).toContainEqual({
      file: 'p.yaml',
      line: 3,
      col: 4,
      message: 'unknown alias "*missing"',
    });
    const ok = parseYaml('q.yaml', 'a: &x { b: 1 }\nc: *x\n');
    expect(ok.issues).toEqual([]);
    expect(ok.data).toEqual({ a: { b: 1 }, c: { b: 1 } });
    // A path through the alias lands on the anchored node (line 1), as before.
    const at = locate(ok, ['c', 'b']);
    expect(at.found).toBe(true);
    expect(at.value?.range?.[0]).toBe('a: &x { b: '.length);
  });

  it('resolves a re-used anchor name to its latest definition before the alias', () => {
    const src = parseYaml('r.yaml', 'a: &x 1\nb: *x\nc: &x 2\nd: *x\n');
    expect(src.data).toEqual({ a: 1, b: 1, c: 2, d: 2 });
    expect(locate(src, ['d']).value?.range?.[0]).toBe('a: &x 1\nb: *x\nc: &x '.length);
  });
});
