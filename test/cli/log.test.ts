// serve's log lines in both formats, from a real process writing to its stderr: secrets are
// scrubbed before either format is written, and the pretty format cannot carry terminal escapes.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/fixture.js';

const SECRET = 'tok_logFormatSecret_8877665544332211';

/** What a process logging through createLogger(redactor, 'info', format) writes on stderr. */
function logged(format: 'json' | 'pretty'): string {
  const script = `
    const { createLogger } = await import(${JSON.stringify(path.join(REPO_ROOT, 'dist/src/log.js'))});
    const { Redactor } = await import(${JSON.stringify(path.join(REPO_ROOT, 'dist/src/secrets/redact.js'))});
    const redactor = new Redactor();
    redactor.add(${JSON.stringify(SECRET)});
    const log = createLogger(redactor, 'info', ${JSON.stringify(format)});
    log.warn({ team: 'acme', upstream: 'said ${SECRET}', agentText: 'x\\u001b[2J\\u0007y' }, 'upstream error ${SECRET}');
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  expect(r.status, r.stderr).toBe(0);
  return r.stderr;
}

describe('log formats', () => {
  it('json: one pino object per line, the secret scrubbed', () => {
    const out = logged('json');
    expect(out).not.toContain(SECRET);
    const line = JSON.parse(out) as { level: number; msg: string; team: string };
    expect([line.level, line.team]).toEqual([40, 'acme']);
    expect(line.msg).toMatch(/^upstream error /);
  });

  it('pretty: local time, level, message and fields; the secret scrubbed; no raw escape reaches the terminal', () => {
    const out = logged('pretty');
    expect(out).not.toContain(SECRET);
    expect(out).not.toMatch(/[\u0007\u001b]/);
    expect(out).toMatch(
      /^\d\d:\d\d:\d\d\.\d{3} WARN {2}upstream error \S+ team=acme upstream="said \S+" agentText="x\\u001b\[2J\\u0007y"\n$/,
    );
  });
});
