// --help / -h on every command prints its usage and runs nothing; a bad flag is one short,
// specific error with the usage line (exit 1), never Node's parseArgs text.
import { existsSync } from 'node:fs';
import { readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMANDS, usageLine } from '../../src/cli.js';
import { airlock, emptyDir } from './helpers.js';

let dir: string;
let config: string;

beforeAll(async () => {
  dir = await emptyDir();
  config = path.join(dir, 'airlock.yaml');
  // A config whose folders do not exist: anything that really ran would create them.
  await writeFile(
    config,
    `socketDir: ./run\nstateDir: ./state\npolicies: ./policies\naudit:\n  file: ./audit/audit.jsonl\n`,
  );
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('--help', () => {
  for (const spec of COMMANDS) {
    for (const flag of ['--help', '-h']) {
      it(`airlock ${spec.name} ${flag} prints its usage and runs nothing`, async () => {
        const r = airlock([...spec.name.split(' '), flag, '--config', config], { cwd: dir, input: '' });
        expect(r.status, r.stderr).toBe(0);
        expect(r.stderr).toBe('');
        expect(r.stdout.startsWith(`usage: airlock ${spec.name}`)).toBe(true);
        for (const [name, o] of Object.entries(spec.options ?? {})) {
          expect(r.stdout).toContain(`--${name}`);
          if (o.short) expect(r.stdout).toContain(`-${o.short}, --${name}`);
        }
        expect(r.stdout).toContain('--config FILE');
        // Nothing was created, listened on, checked or printed from the audit log.
        expect((await readdir(dir)).sort()).toEqual(['airlock.yaml']);
        expect(r.stdout).not.toMatch(/listening|\[ ok \]|SEQ +TIME|"msg"/);
      });
    }
  }

  it('airlock --help lists every command; airlock with nothing prints it and exits 1', () => {
    const r = airlock(['--help']);
    expect(r.status).toBe(0);
    for (const spec of COMMANDS) expect(r.stdout).toContain(`  ${spec.name}`);
    const bare = airlock([]);
    expect(bare.status).toBe(1);
    expect(bare.stdout).toContain('usage: airlock COMMAND');
  });

  it('a command group without a subcommand lists its commands', () => {
    const r = airlock(['audit', '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('airlock audit verify');
    expect(r.stdout).toContain('airlock audit tail');
    const bare = airlock(['policy']);
    expect(bare.status).toBe(1);
    expect(bare.stderr).toContain('airlock policy check');
    expect(bare.stderr).toContain('airlock policy status');
  });

  it('--version prints the version', () => {
    const r = airlock(['--version']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^\d+\.\d+\.\d+\n$/);
  });

  it('policy check --help works where there is no airlock.yaml', async () => {
    const empty = await emptyDir();
    try {
      const r = airlock(['policy', 'check', '--help'], { cwd: empty });
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/^usage: airlock policy check \[PATH\.\.\.\]/);
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});

describe('bad arguments', () => {
  for (const spec of COMMANDS.filter((c) => !c.raw)) {
    it(`airlock ${spec.name} --no-such-flag: one short error with the usage, exit 1`, () => {
      const r = airlock([...spec.name.split(' '), '--no-such-flag', '--config', config], {
        cwd: dir,
        input: '',
      });
      expect(r.status).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr.trimEnd().split('\n')).toEqual([
        `airlock ${spec.name}: unknown option --no-such-flag`,
        `usage: ${usageLine(spec)}`,
      ]);
      expect(r.stderr).not.toMatch(/ERR_PARSE_ARGS|To specify a positional|TypeError|at .*\.js:\d+/);
      expect(existsSync(path.join(dir, 'run'))).toBe(false);
    });
  }

  it('names a missing value, a value given to a switch, a missing argument and an extra one', () => {
    const cases: [string[], string][] = [
      [['audit', 'tail', '-n'], 'airlock audit tail: --lines needs a value'],
      [['audit', 'tail', '--team'], 'airlock audit tail: --team needs a value'],
      [['doctor', '--json=yes'], 'airlock doctor: --json takes no value'],
      [['stdio'], 'airlock stdio: missing SERVER'],
      [['call', 'http'], 'airlock call: missing TOOL'],
      [['doctor', 'extra'], 'airlock doctor: unexpected argument "extra"'],
      [['serve', '--log-format', 'xml'], 'airlock serve: --log-format must be json or pretty, not "xml"'],
      [['audit', 'tail', '--since', 'yesterday'], 'airlock audit tail: --since takes an ISO time'],
      [['--config'], 'airlock: --config needs a FILE'],
    ];
    for (const [args, message] of cases) {
      const r = airlock([...args], { cwd: dir });
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr.startsWith(message), `${args.join(' ')}: ${r.stderr}`).toBe(true);
    }
  });

  it('an unknown command or subcommand says what exists', () => {
    expect(airlock(['nope']).stderr).toBe(
      `airlock: unknown command "nope"; run 'airlock --help' for the list\n`,
    );
    const sub = airlock(['audit', 'nope']);
    expect(sub.status).toBe(1);
    expect(sub.stderr).toMatch(
      /unknown command "airlock audit nope"; audit commands: verify, head, rotate, tail/,
    );
  });

  it('a value passed to secrets set as an argument is refused without being echoed', () => {
    const r = airlock(['secrets', 'set', 'tok', 'hunter2-value-on-argv'], { input: '' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('never as an argument');
    expect(r.stderr + r.stdout).not.toContain('hunter2-value-on-argv');
  });
});
