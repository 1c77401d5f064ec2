// `airlock serve` sizes V8's heap for a long-running process (src/commands/heap-sizing.ts): the
// same allocation as a busy broker's, with and without the setting, in one run.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/fixture.js';

const MODULE = pathToFileURL(path.join(REPO_ROOT, 'dist/src/commands/heap-sizing.js')).href;

interface Churned {
  set: string[];
  newSpaceMiB: number;
  heapMiB: number;
}

/** Short-lived objects, and some kept a while (calls in flight); the heap's size at the end. */
function churn(size: boolean, env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): Churned {
  const source = `
    const { sizeBrokerHeap } = await import(${JSON.stringify(MODULE)});
    const { getHeapSpaceStatistics } = await import('node:v8');
    const set = ${size} ? sizeBrokerHeap() : [];
    let live = [];
    let kept = [];
    for (let round = 0; round < 600; round++) {
      for (let i = 0; i < 5000; i++) live.push({ i, text: 'call ' + i + ' of round ' + round, args: [i, round] });
      if (live.length > 60000) {
        kept.push(live.slice(0, 2000));
        live = live.slice(30000);
      }
      if (kept.length > 40) kept = kept.slice(20);
    }
    const spaces = getHeapSpaceStatistics();
    const newSpace = spaces.find((s) => s.space_name === 'new_space').space_size;
    const heap = spaces.reduce((sum, s) => sum + s.space_size, 0);
    console.log(JSON.stringify({ set, newSpaceMiB: newSpace / 2 ** 20, heapMiB: heap / 2 ** 20 }));
  `;
  const r = spawnSync(process.execPath, [...nodeArgs, '--input-type=module', '-e', source], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { PATH: process.env.PATH, ...env },
  });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Churned;
}

describe("the broker's heap", () => {
  it('keeps the new space at its initial size and the heap well below what V8 grows it to otherwise', () => {
    const grown = churn(false);
    const sized = churn(true);
    expect(sized.set).toEqual(['--semi-space-growth-factor=1', '--heap-growing-percent=100']);
    expect(grown.newSpaceMiB).toBeGreaterThanOrEqual(8);
    expect(sized.newSpaceMiB).toBeLessThanOrEqual(grown.newSpaceMiB / 4);
    expect(sized.heapMiB).toBeLessThan(grown.heapMiB * 0.75);
  });

  it("leaves alone what the operator set on Node's command line", () => {
    const r = churn(true, { NODE_OPTIONS: '--max-semi-space-size=8' });
    expect(r.set).toEqual(['--heap-growing-percent=100']);
    expect(r.newSpaceMiB).toBeGreaterThanOrEqual(8);
    // Node allows neither of these two in NODE_OPTIONS, only as its own arguments.
    expect(churn(true, {}, ['--heap-growing-percent=50', '--semi-space-growth-factor=2']).set).toEqual([]);
  });
});
