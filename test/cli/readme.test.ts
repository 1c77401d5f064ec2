// The README is part of the product: its policy example is the shipped policies/payments.yaml,
// and its command reference names every command and every flag the CLI accepts.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMMANDS, usageLine } from '../../src/cli.js';
import { REPO_ROOT } from '../helpers/fixture.js';

const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');

/** The fenced block that follows `marker` in the README. */
function blockAfter(marker: string): string {
  const at = readme.indexOf(marker);
  expect(at, marker).toBeGreaterThan(-1);
  const open = readme.indexOf('```yaml\n', at) + '```yaml\n'.length;
  return readme.slice(open, readme.indexOf('```\n', open));
}

describe('README', () => {
  it('shows policies/payments.yaml exactly as the repository has it', () => {
    const shipped = readFileSync(path.join(REPO_ROOT, 'policies/payments.yaml'), 'utf8');
    expect(blockAfter('`policies/payments.yaml`')).toBe(shipped);
  });

  it('the command reference has every command with its full usage, and so every flag', () => {
    const reference = readme.slice(readme.indexOf('## Commands\n'), readme.indexOf('## Tools\n'));
    for (const spec of COMMANDS) {
      expect(reference, spec.name).toContain(`\`${usageLine(spec).replace(/\|/g, '\\|')}\``);
      for (const name of Object.keys(spec.options ?? {})) expect(reference).toContain(`--${name}`);
    }
    for (const flag of ['--help', '--config FILE']) expect(reference).toContain(flag);
  });

  it('the first screen says what ships and how to install it on Node alone', () => {
    const first = readme.slice(0, readme.indexOf('## The threat it answers'));
    expect(first).toContain('npm pack');
    expect(first).toContain('npm install -g ./airlock-');
    expect(first).toMatch(/\*\*git\*\*, \*\*github\*\*, \*\*postgres\*\* and \*\*http\*\* MCP servers/);
    expect(first).toContain('fleet mode for many hosts');
    expect(first).toContain('[Running a fleet](#running-a-fleet)');
    expect(readme).toContain('airlock bridge /run/airlock/payments/git.sock');
  });
});
