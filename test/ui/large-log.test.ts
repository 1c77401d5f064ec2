// Paging through a 1 GiB audit log: the viewer reads pages backwards from byte offsets, so its
// peak memory stays far below the file's size (read from /proc: the `airlock ui` process's
// VmHWM), and a narrow filter stops at a scan budget instead of reading everything.
import { open, readFile } from 'node:fs/promises';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeInstallation, type Installation } from '../helpers/fixture.js';
import { startUiProcess, type UiProcess } from './helpers.js';

const GIB = 1024 * 1024 * 1024;
const CALLS = 120;

let inst: Installation;
let ui: UiProcess;
let auth: Record<string, string>;

/** `{"note":"xxx…"}` lines of 1 KiB: valid JSON, but not records, as old history stands in for. */
async function writeFiller(file: string, bytes: number): Promise<void> {
  const line = `{"note":"${'x'.repeat(1024 - 12)}"}\n`;
  const block = Buffer.from(line.repeat(1024)); // 1 MiB
  const fh = await open(file, 'w');
  try {
    for (let written = 0; written < bytes; written += block.length) await fh.write(block);
  } finally {
    await fh.close();
  }
}

function recordLines(): string {
  const lines: string[] = [];
  let seq = 0;
  const t0 = Date.parse('2026-12-02T12:00:00.000Z');
  for (let i = 1; i <= CALLS; i++) {
    const head = {
      team: i % 2 ? 'payments' : 'search',
      server: 'http',
      tool: 'http_request',
      session: 'a1b2c3d4-0000-4000-8000-000000000000',
      call: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
      args: { method: 'GET', url: `https://api.example/v1/items/${i}` },
      decision: 'allow',
      rule: 'http.hosts[0].paths',
    };
    const ts = new Date(t0 + i * 1000).toISOString();
    lines.push(JSON.stringify({ v: 1, seq: ++seq, ts, ...head, phase: 'request' }));
    lines.push(
      JSON.stringify({ v: 1, seq: ++seq, ts, ...head, phase: 'result', outcome: 'ok', durationMs: i }),
    );
  }
  return lines.join('\n') + '\n';
}

const callIds = (html: string) =>
  [...html.matchAll(/<tr class="call[^"]*" data-call="([^"]+)"/g)].map((m) => m[1]!);
const n = (id: string) => Number(id.slice(-12));
const older = (html: string) => /id="older" href="([^"]+)"/.exec(html)?.[1]?.replaceAll('&amp;', '&');

beforeAll(async () => {
  inst = await makeInstallation({});
  await mkdir(path.dirname(inst.auditFile), { recursive: true });
  await writeFiller(inst.auditFile, GIB);
  const fh = await open(inst.auditFile, 'a');
  await fh.write(recordLines());
  await fh.close();
  ui = await startUiProcess(inst);
  auth = { authorization: `Bearer ${new URL(ui.loginUrl).searchParams.get('token')}` };
}, 120_000);

afterAll(async () => {
  await ui?.stop();
  await inst?.cleanup();
});

const get = async (p: string) => {
  const res = await fetch(`${ui.origin}${p}`, { headers: auth });
  expect(res.status).toBe(200);
  return res.text();
};

describe('a 1 GiB audit log', () => {
  it(
    'pages newest first by byte offset, and finds one call, without loading the file',
    { timeout: 120_000 },
    async () => {
      const first = await get('/');
      expect(callIds(first).map(n)).toEqual(Array.from({ length: 50 }, (_, i) => CALLS - i));
      expect(first).toContain('log 1024.');
      const second = await get(older(first)!);
      expect(callIds(second).map(n)).toEqual(Array.from({ length: 50 }, (_, i) => CALLS - 50 - i));
      // The last 20 calls, then filler until the scan budget: the page says so and offers more.
      const third = await get(older(second)!);
      expect(callIds(third).map(n)).toEqual(Array.from({ length: 20 }, (_, i) => 20 - i));
      expect(third).toMatch(/scanned 64 MiB without filling the page/);
      expect(older(third)).toMatch(/before=\d+/);

      // Filters: a team, and a time range that ends the scan at its start.
      const search = await get('/?team=search&from=2026-12-02T12:01:00Z');
      expect(callIds(search).map(n)).toEqual(Array.from({ length: 31 }, (_, i) => CALLS - 2 * i));
      expect(older(search)).toBeUndefined();

      const detail = await get(`/call/00000000-0000-4000-8000-${String(CALLS).padStart(12, '0')}`);
      expect(detail.match(/<article class="record/g)).toHaveLength(2);

      // The chain check stops at the first line that is not a record.
      await expect
        .poll(async () => (await get('/')).includes('broken at line 1'), { timeout: 30_000 })
        .toBe(true);

      const status = await readFile(`/proc/${ui.child.pid}/status`, 'utf8');
      const peakKiB = Number(/^VmHWM:\s+(\d+) kB/m.exec(status)![1]);
      expect(peakKiB * 1024).toBeLessThan(GIB / 4);
    },
  );
});
