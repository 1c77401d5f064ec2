// `airlock audit tail` as a process: filters, JSON lines, a table fitted to the terminal's width
// (a real pseudo-terminal through script(1)) and colour only on a terminal.
import { spawnSync } from 'node:child_process';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog, type AuditRecord } from '../../src/audit/log.js';
import { entry } from '../audit/helpers.js';
import { CLI } from '../helpers/fixture.js';
import { airlock, emptyDir } from './helpers.js';

const LONG_REASON = `path "/v1/${'x'.repeat(180)}" is not allowed (allowed: /v1/charges*)`;
let dir: string;
let file: string;
let records: AuditRecord[];

beforeAll(async () => {
  dir = await emptyDir();
  file = path.join(dir, 'audit.jsonl');
  const log = await AuditLog.open(file);
  records = [
    await log.append(
      entry({ team: 'payments', server: 'git', tool: 'git_push', session: 'aaaa-1111', call: 'c1' }),
    ),
    await log.append(
      entry({ team: 'payments', server: 'http', tool: 'http_request', session: 'bbbb-2222', call: 'c2' }),
    ),
    await log.append(
      entry({
        team: 'search',
        server: 'http',
        tool: 'http_request',
        session: 'bbbb-2222',
        call: 'c3',
        decision: 'deny',
        outcome: 'denied',
        rule: 'http.hosts[0].paths',
        reason: LONG_REASON,
      }),
    ),
    await log.append(
      entry({ team: 'search', server: 'git', tool: 'git_status', session: 'cccc-3333', call: 'c4' }),
    ),
  ];
  await log.close();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const tail = (...args: string[]) => airlock(['audit', 'tail', '--file', file, ...args]);
const jsonTail = (...args: string[]) =>
  tail('--json', ...args)
    .stdout.trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as AuditRecord).call);

describe('audit tail filters', () => {
  it('--server, --tool, --session (a prefix) and --team narrow the records; --json prints them whole', () => {
    expect(jsonTail()).toEqual(['c1', 'c2', 'c3', 'c4']);
    expect(jsonTail('--server', 'http')).toEqual(['c2', 'c3']);
    expect(jsonTail('--tool', 'git_status')).toEqual(['c4']);
    expect(jsonTail('--session', 'bbbb')).toEqual(['c2', 'c3']);
    expect(jsonTail('--server', 'http', '--team', 'search')).toEqual(['c3']);
    expect(jsonTail('--decision', 'deny')).toEqual(['c3']);
    const whole = JSON.parse(tail('--json', '--tool', 'git_status').stdout) as AuditRecord;
    expect(whole).toEqual(records[3]);
  });

  it('--since takes an ISO time or a duration back from now', async () => {
    const { writeFile } = await import('node:fs/promises');
    const timed = path.join(dir, 'timed.jsonl');
    const at = (seq: number, ts: string) => JSON.stringify({ ...entry({ call: `t${seq}` }), v: 1, seq, ts });
    const now = Date.now();
    await writeFile(
      timed,
      [
        at(1, '2026-01-01T10:00:00.000Z'),
        at(2, '2026-01-01T12:00:00.000Z'),
        at(3, new Date(now - 3 * 3_600_000).toISOString()),
        at(4, new Date(now - 60_000).toISOString()),
        '',
      ].join('\n'),
    );
    const since = (value: string) =>
      airlock(['audit', 'tail', '--json', '--file', timed, '--since', value])
        .stdout.trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => (JSON.parse(l) as AuditRecord).call);
    expect(since('2026-01-01T11:00')).toEqual(['t2', 't3', 't4']);
    expect(since('2026-01-01T12:00:00.000Z')).toEqual(['t2', 't3', 't4']);
    expect(since('1h')).toEqual(['t4']);
    expect(since('1d')).toEqual(['t3', 't4']);
    expect(since('2999-01-01T00:00:00Z')).toEqual([]);
  });

  it('piped output has no colour and never cuts a result to fit', () => {
    const r = tail();
    expect(r.status).toBe(0);
    expect(r.stdout).not.toContain('\u001b[');
    expect(r.stdout).toContain(LONG_REASON);
  });
});

/** The command on a pseudo-terminal `columns` wide; its output lines, escapes kept. */
function onTerminal(columns: number, args: string[]): string[] {
  const command = [process.execPath, CLI, 'audit', 'tail', '--file', file, ...args]
    .map((a) => `'${a}'`)
    .join(' ');
  const r = spawnSync('script', ['-qec', `stty cols ${columns} rows 40; ${command}`, '/dev/null'], {
    encoding: 'utf8',
    timeout: 20_000,
    env: { PATH: process.env.PATH, TERM: 'xterm' },
  });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout.split(/\r?\n/).filter(Boolean);
}

const visible = (line: string) => line.replace(/\u001b\[[0-9;]*m/g, '');

describe('audit tail on a terminal', () => {
  it('at 250 columns RESULT takes the rest of the line (not cut at 100), denials in red', () => {
    const lines = onTerminal(250, []);
    const denied = lines.find((l) => l.includes('http.hosts[0].paths'))!;
    expect(denied.startsWith('\u001b[31m')).toBe(true);
    expect(visible(denied).length).toBe(250);
    const result = visible(denied).slice(visible(denied).indexOf('denied: '));
    expect(result.length).toBeGreaterThan(120);
    expect(result.endsWith('…')).toBe(true);
    expect(lines.find((l) => l.includes('git_status'))).not.toContain('\u001b[31m');
  });

  it('at 120 columns each row fits the terminal, the result cut with …', () => {
    const lines = onTerminal(120, []);
    for (const l of lines) expect(visible(l).length).toBeLessThanOrEqual(120);
    const denied = visible(lines.find((l) => l.includes('http.hosts[0].paths'))!);
    expect(denied.endsWith('…')).toBe(true);
  });

  it('--json is never coloured nor cut, even on a terminal', () => {
    const json = onTerminal(100, ['--json']);
    for (const l of json) expect(l).not.toContain('\u001b[');
    const denied = json.map((l) => JSON.parse(l) as AuditRecord).find((r) => r.call === 'c3')!;
    expect(denied.reason).toBe(LONG_REASON);
  });
});
