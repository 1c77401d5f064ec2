import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog, type AuditRecord } from '../../src/audit/log.js';
import { auditTailCommand, auditVerifyCommand, formatAuditTable } from '../../src/commands/audit.js';
import { entry, tempDir } from './helpers.js';

let dir: string;
let cleanup: () => void;
let file: string;
beforeEach(() => {
  ({ dir, cleanup } = tempDir());
  file = path.join(dir, 'audit.jsonl');
});
afterEach(() => cleanup());

function sink(): { out: PassThrough; text: () => string } {
  const out = new PassThrough();
  let buf = '';
  out.on('data', (d: Buffer) => (buf += d.toString('utf8')));
  return { out, text: () => buf };
}

/** Six records: payments and search teams, allowed and denied. */
async function seed(): Promise<AuditRecord[]> {
  const log = await AuditLog.open(file);
  const recs = [
    await log.append(
      entry({ team: 'payments', call: 'a', phase: 'request', outcome: undefined, durationMs: undefined }),
    ),
    await log.append(entry({ team: 'payments', call: 'a', durationMs: 812.4 })),
    await log.append(
      entry({
        team: 'search',
        tool: 'query',
        server: 'postgres',
        call: 'b',
        decision: 'deny',
        outcome: 'denied',
        rule: 'postgres.tools',
        reason: 'tool not in policy',
        durationMs: 0.3,
      }),
    ),
    await log.append(
      entry({ team: 'payments', call: 'c', outcome: 'error', error: 'upstream 502', durationMs: 2500 }),
    ),
    await log.append(
      entry({
        team: 'search',
        call: 'd',
        decision: 'deny',
        outcome: 'denied',
        rule: 'git.tools.git_push.branches',
        reason: 'branch "main" not allowed',
      }),
    ),
    await log.append(entry({ team: 'search', call: 'e' })),
  ];
  await log.close();
  return recs;
}

describe('audit verify command', () => {
  it('prints the count and returns 0 for an intact chain', async () => {
    await seed();
    const s = sink();
    expect(await auditVerifyCommand({ file, out: s.out })).toBe(0);
    expect(s.text()).toBe('ok: 6 records, chain intact\n');
  });

  it('prints the first bad line, escaped, and returns 1', async () => {
    await seed();
    const text = readFileSync(file, 'utf8').split('\n');
    text[2] = text[2]!
      .replace('"tool not in policy"', '"tool not in policy\\u001b[2J"')
      .replace('"deny"', '"allow"');
    writeFileSync(file, text.join('\n'));
    const s = sink();
    expect(await auditVerifyCommand({ file, out: s.out })).toBe(1);
    const lines = s.text().split('\n');
    expect(lines[0]).toBe('broken at line 3: hash mismatch (record altered)');
    expect(lines[1]).toContain('"decision":"allow"');
    expect(lines[2]).toBe('(2 records before it verify)');
  });

  it('returns 1 for a missing file', async () => {
    const s = sink();
    expect(await auditVerifyCommand({ file: path.join(dir, 'nope.jsonl'), out: s.out })).toBe(1);
    expect(s.text()).toMatch(/cannot read .*nope\.jsonl: ENOENT/);
  });
});

describe('formatAuditTable', () => {
  it('prints one aligned line per record with time, team, server, tool, phase, decision, duration and result', async () => {
    const recs = await seed();
    const table = formatAuditTable(recs).split('\n');
    expect(table).toHaveLength(7);
    expect(table[0]).toMatch(/^ *SEQ +TIME +TEAM +SERVER +TOOL +PHASE +DECISION +DURATION +RESULT$/);
    expect(table[1]).toMatch(/1 +\d{4}-\d\d-\d\dT[\d:.]+Z +payments +git +git_push +request +allow +…$/);
    expect(table[2]).toMatch(/payments +git +git_push +result +allow +812ms +ok$/);
    expect(table[3]).toMatch(
      /search +postgres +query +result +deny +0ms +denied: postgres\.tools: tool not in policy$/,
    );
    expect(table[4]).toMatch(/2\.50s +error: upstream 502$/);
    // Columns line up: every row has TEAM at the same offset.
    const teamAt = table[0]!.indexOf('TEAM');
    for (const row of table.slice(1)) expect(row.slice(teamAt)).toMatch(/^(payments|search) /);
  });

  it('escapes control characters from record fields', () => {
    const rec = {
      ...entry({ reason: 'x\u001b[2J\u0007\ry', decision: 'deny', outcome: 'denied', team: 'a\u202eb' }),
      v: 1,
      seq: 1,
      ts: 't',
      prev: '',
      hash: '',
    } as AuditRecord;
    const table = formatAuditTable([rec]);
    for (const line of table.split('\n')) expect(line).not.toMatch(/[\u0000-\u001f\u202e]/);
    expect(table).toContain('x\\u001b[2J\\u0007\\u000dy');
  });
});

describe('audit tail command', () => {
  it('prints the last N records as a table, filtered by team and decision', async () => {
    await seed();
    let s = sink();
    expect(await auditTailCommand({ file, follow: false, out: s.out })).toBe(0);
    expect(s.text().trimEnd().split('\n')).toHaveLength(7);

    s = sink();
    await auditTailCommand({ file, follow: false, team: 'search', out: s.out });
    const rows = s.text().trimEnd().split('\n').slice(1);
    expect(rows).toHaveLength(3);
    for (const r of rows) expect(r).toContain(' search ');

    s = sink();
    await auditTailCommand({ file, follow: false, team: 'search', decision: 'deny', lines: 1, out: s.out });
    expect(s.text().trimEnd().split('\n').slice(1)).toEqual([
      expect.stringMatching(/git_push\.branches: branch "main" not allowed$/),
    ]);
  });

  it('prints raw JSON records with json', async () => {
    const recs = await seed();
    const s = sink();
    await auditTailCommand({ file, follow: false, json: true, decision: 'allow', lines: 2, out: s.out });
    const got = s
      .text()
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditRecord);
    expect(got).toEqual([recs[3], recs[5]]);
  });

  it('rejects a bad line count and a missing file', async () => {
    let s = sink();
    expect(await auditTailCommand({ file, follow: false, lines: -1, out: s.out })).toBe(1);
    s = sink();
    expect(await auditTailCommand({ file, follow: false, out: s.out })).toBe(1);
    expect(s.text()).toMatch(/ENOENT/);
  });

  it('follows appended records (only complete lines, filtered) until aborted', async () => {
    await seed();
    const s = sink();
    const controller = new AbortController();
    const done = auditTailCommand({
      file,
      follow: true,
      json: true,
      team: 'payments',
      lines: 0,
      out: s.out,
      signal: controller.signal,
      pollMs: 20,
    });
    const waitFor = async (pred: () => boolean) => {
      const until = Date.now() + 20_000; // a bound on the wait, generous for a busy machine
      while (!pred()) {
        if (Date.now() > until) throw new Error(`timed out; output so far: ${s.text()}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const log = await AuditLog.open(file);
    await log.append(entry({ team: 'search', call: 'skip-me' }));
    const wanted = await log.append(entry({ team: 'payments', call: 'follow-1' }));
    await waitFor(() => s.text().includes('follow-1'));
    await log.close();
    // A line being written shows only once it is complete.
    const body = { ...wanted, seq: 99, call: 'partial' };
    const line = JSON.stringify(body);
    appendFileSync(file, line.slice(0, 20));
    await new Promise((r) => setTimeout(r, 100));
    expect(s.text()).not.toContain('partial');
    appendFileSync(file, line.slice(20) + '\n');
    await waitFor(() => s.text().includes('partial'));
    controller.abort();
    expect(await done).toBe(0);
    const got = s
      .text()
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditRecord);
    expect(got.map((r) => r.call)).toEqual(['follow-1', 'partial']);
  });

  it('waits for a log that does not exist yet when following', async () => {
    const s = sink();
    const controller = new AbortController();
    const done = auditTailCommand({ file, follow: true, out: s.out, signal: controller.signal, pollMs: 20 });
    await new Promise((r) => setTimeout(r, 50));
    const log = await AuditLog.open(file);
    await log.append(entry({ call: 'late' }));
    await log.close();
    const until = Date.now() + 20_000; // a bound on the wait, generous for a busy machine
    while (!/git_push +result +allow/.test(s.text()) && Date.now() < until)
      await new Promise((r) => setTimeout(r, 10));
    controller.abort();
    expect(await done).toBe(0);
    expect(s.text().split('\n')[0]).toMatch(/^ *SEQ +TIME/);
    expect(s.text()).toMatch(/git_push +result +allow/);
    // Rows printed after an empty table are not cut to the header widths.
    expect(s.text()).toMatch(/\d{4}-\d\d-\d\dT[\d:.]+Z +payments +git +git_push /);
  });
});
