// The audit viewer in a real browser (headless Chromium via playwright-core) against a real
// `airlock serve` and `airlock ui`: hostile markup in arguments stays text, filters work, and a
// pending call approved on the page completes. Screenshots go to .tmp/artifacts/.
import path from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  acmeHttpPolicy,
  connectSocketClient,
  makeInstallation,
  startEchoUpstream,
  type EchoUpstream,
  type Installation,
} from '../helpers/fixture.js';
import {
  auditRecords,
  callWithProgress,
  startServe,
  textOf,
  waitForPending,
  type ServeProcess,
} from '../approvals/helpers.js';
import { ARTIFACTS, launchChromium, startUiProcess, type UiProcess } from './helpers.js';

const SECRET = 'sk_live_viewerSecret0123456789abcdefgh';
const SCRIPT = '<script>alert(1)</script>';
const IMG = '<img src=x onerror=alert(2)>';

let inst: Installation;
let upstream: EchoUpstream;
let serve: ServeProcess;
let ui: UiProcess;
let client: Client;
let browser: Browser;
let page: Page;
const dialogs: string[] = [];
const pageErrors: string[] = [];

beforeAll(async () => {
  // Playwright waits are bounded below the test timeout, so a failure names what it waited for.
  // /v1/fail drops the connection: an upstream error, for the error highlight.
  upstream = await startEchoUpstream((req, res) => {
    if (req.url !== '/v1/fail') return false;
    res.socket?.destroy();
    return true;
  });
  inst = await makeInstallation({ secrets: { 'api-token': SECRET } });
  await inst.writePolicy(
    'acme.yaml',
    acmeHttpPolicy(upstream.origin).replace(
      '      http_request: {}',
      '      http_request:\n        approve: { when: { methods: [POST] }, timeout: 5m, grant: { for: 1h } }',
    ),
  );
  serve = await startServe(inst, [inst.socket('acme', 'http')]);
  ({ client } = await connectSocketClient(inst.socket('acme', 'http')));
  // A few calls of each kind, with markup planted where the agent controls the text.
  const get = (url: string, headers?: Record<string, string>) =>
    client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url, ...(headers ? { headers } : {}) },
    });
  expect((await get(`${upstream.origin}/v1/charges`)).isError).toBeFalsy();
  expect((await get(`${upstream.origin}/v1/notes`, { 'X-Note': SCRIPT })).isError).toBeFalsy();
  expect((await get(`${upstream.origin}/v1/${IMG}`)).isError).toBeFalsy();
  expect((await get(`https://evil.example/${IMG}`)).isError).toBe(true);
  expect((await get(`${upstream.origin}/admin`)).isError).toBe(true);
  expect((await get(`${upstream.origin}/v1/fail`)).isError).toBe(true);
  ui = await startUiProcess(inst);
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1480, height: 1000 } });
  page.setDefaultTimeout(20_000);
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });
  page.on('pageerror', (e) => pageErrors.push(e.message));
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await ui?.stop();
  await client?.close().catch(() => undefined);
  await serve?.stop();
  await upstream?.close();
  await inst?.cleanup();
});

const shot = (name: string) =>
  page.screenshot({ path: path.join(ARTIFACTS, `ui-${name}.png`), fullPage: true });

describe('airlock ui in Chromium', () => {
  it('signs in with the printed token, lists the calls and keeps planted markup inert', async () => {
    const response = await page.goto(ui.loginUrl);
    expect(response?.status()).toBe(200);
    expect(page.url()).toBe(`${ui.origin}/`); // the token left the address bar
    expect(response?.headers()['content-security-policy']).toContain("script-src 'self'");
    await page.locator('#live[data-state="on"]').waitFor();
    const rows = page.locator('#calls tr.call');
    expect(await rows.count()).toBe(6);
    // The planted markup is shown as text, and it created no element and ran nothing.
    await expect.poll(() => page.locator('td.args', { hasText: SCRIPT }).count()).toBe(1);
    expect(await page.locator('td.args', { hasText: IMG }).count()).toBe(2);
    expect(await page.locator('img').count()).toBe(0);
    expect(await page.evaluate(() => [...document.scripts].map((s) => s.getAttribute('src')))).toEqual([
      '/assets/app.js',
    ]);
    // Denials are highlighted.
    expect(await page.locator('#calls tr.row-deny').count()).toBe(2);
    expect(await page.locator('#calls tr.row-error .outcome-error').count()).toBe(1);
    await page.locator('#chain .badge-intact').waitFor();
    expect(await page.locator('#chain').innerText()).toMatch(/intact 10 records verified/);
    await shot('calls');
    expect(dialogs).toEqual([]);
  });

  it('filters by decision, tool and team', async () => {
    await page.selectOption('select[name="decision"]', 'deny');
    await Promise.all([page.waitForURL(/decision=deny/), page.click('#filters button[type="submit"]')]);
    expect(await page.locator('#calls tr.call').count()).toBe(2);
    expect(await page.locator('#calls tr.call:not(.row-deny)').count()).toBe(0);
    await shot('filter-deny');
    await page.goto(`${ui.origin}/?team=nobody`);
    expect(await page.locator('#calls tr.call').count()).toBe(0);
    expect(await page.locator('#calls tr.empty').innerText()).toBe('no calls match');
    await page.goto(`${ui.origin}/?tool=http_request&decision=allow`);
    expect(await page.locator('#calls tr.call').count()).toBe(4);
    await page.goto(`${ui.origin}/?outcome=error`);
    expect(await page.locator('#calls tr.call').count()).toBe(1);
    const session = (await auditRecords(inst))[0]!.session;
    await page.goto(`${ui.origin}/?session=${session.slice(0, 8)}&server=http`);
    expect(await page.locator('#calls tr.call').count()).toBe(6);
    await page.goto(`${ui.origin}/?session=ffffffff`);
    expect(await page.locator('#calls tr.call').count()).toBe(0);
    await page.goto(`${ui.origin}/?to=2020-01-01T00:00Z`);
    expect(await page.locator('#calls tr.call').count()).toBe(0);
    await page.goto(`${ui.origin}/?from=2020-01-01T00:00Z&team=acme`);
    expect(await page.locator('#calls tr.call').count()).toBe(6);
    const bad = await page.goto(`${ui.origin}/?from=yesterday`);
    expect(bad?.status()).toBe(400);
    expect(await page.locator('.notice').innerText()).toBe('from is not a time (e.g. 2026-12-02T10:00Z)');
  });

  it(
    'shows a pending call live, approves it from the page, and sees it complete',
    { timeout: 60_000 },
    async () => {
      await page.goto(`${ui.origin}/`);
      await page.locator('#live[data-state="on"]').waitFor();
      const { result } = callWithProgress(client, 'http_request', {
        method: 'POST',
        url: `${upstream.origin}/v1/refunds`,
        body: `{"amount":100,"note":"${IMG}"}`,
      });
      const pending = await waitForPending(inst, 'http_request');
      // Arrives over server-sent events: no reload.
      const card = page.locator(`li.approval[data-approval="${pending.id}"]`);
      await card.waitFor();
      await page
        .locator(`#calls tr[data-call="${(await auditRecords(inst)).at(-1)!.call}"] .outcome-pending`)
        .waitFor();
      expect(await card.locator('pre.args').innerText()).toContain('/v1/refunds');
      expect(await page.locator('img').count()).toBe(0);
      await shot('pending');

      await Promise.all([page.waitForURL(/notice=/), card.locator('button.btn-approve').click()]);
      expect(await page.locator('.notice').innerText()).toBe(`approved ${pending.id} as root`);
      const r = await result;
      expect(r.isError, textOf(r)).toBeFalsy();
      expect(upstream.requests.filter((x) => x.method === 'POST')).toHaveLength(1);
      const records = await auditRecords(inst);
      const decided = records.find(
        (x) => x.phase === 'approval' && (x.approval as { state: string }).state === 'approved',
      )!;
      expect(decided.approval).toMatchObject({
        id: pending.id,
        decidedBy: { uid: 0, user: 'root', via: 'ui' },
      });
      await page.locator(`#calls tr[data-call="${decided.call}"] .outcome-ok`).waitFor();
      expect(await page.locator('#pending').innerText()).toContain('none waiting');
      await shot('approved');

      // The call's records together: request, approval pending, approval approved, result.
      await page.click(`#calls tr[data-call="${decided.call}"] td.ts a`);
      await page.waitForURL(/\/call\//);
      expect(await page.locator('article.record h3 .badge:first-child').allInnerTexts()).toEqual([
        'request',
        'approval',
        'approval',
        'result',
      ]);
      await shot('call');
      expect(dialogs).toEqual([]);
      expect(pageErrors).toEqual([]);
    },
  );
});

describe('the live table has no gap', () => {
  it('a call recorded after the page was rendered but before its event stream opened still shows up', async () => {
    // Hold the page's event stream until the viewer has certainly read the new records: a
    // second stream (ours) sees the call first, so only the catch-up can bring it to the page.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    await page.route('**/events?**', async (route) => {
      await held;
      await route.continue();
    });
    try {
      await page.goto(`${ui.origin}/`);
      const token = new URL(ui.loginUrl).searchParams.get('token')!;
      const controller = new AbortController();
      const stream = await fetch(`${ui.origin}/events`, {
        headers: { authorization: `Bearer ${token}` },
        signal: controller.signal,
      });
      const reader = stream.body!.getReader();
      const r = await client.callTool({
        name: 'http_request',
        arguments: { method: 'GET', url: `${upstream.origin}/v1/late` },
      });
      expect(r.isError).toBeFalsy();
      const call = (await auditRecords(inst)).at(-1)!.call;
      let seen = '';
      while (!seen.includes(`"call":"${call}"`) || !seen.includes('outcome-ok')) {
        const chunk = await reader.read();
        if (chunk.done) throw new Error('our event stream ended');
        seen += new TextDecoder().decode(chunk.value);
      }
      controller.abort();
      expect(await page.locator(`#calls tr[data-call="${call}"]`).count()).toBe(0);
      release();
      await page.locator(`#calls tr[data-call="${call}"] .outcome-ok`).waitFor();
    } finally {
      release();
      await page.unroute('**/events?**');
    }
  });
});

describe('the viewer refuses what a page of another site could send', () => {
  it(
    'no cookie, a foreign Host, a missing CSRF token or a foreign Origin get nothing done',
    { timeout: 60_000 },
    async () => {
      expect((await fetch(`${ui.origin}/`)).status).toBe(401);
      expect((await fetch(`${ui.origin}/?token=wrong`)).status).toBe(401);
      expect((await fetch(`${ui.origin}/events`)).status).toBe(401);
      expect((await fetch(`${ui.origin}/call/x`)).status).toBe(401);
      const token = new URL(ui.loginUrl).searchParams.get('token')!;
      const auth = { authorization: `Bearer ${token}` };
      expect((await fetch(`${ui.origin}/`, { headers: auth })).status).toBe(200);
      // DNS rebinding: the right token under a foreign name is still refused (raw request: fetch
      // will not let a page set Host).
      const http = await import('node:http');
      const status = await new Promise<number>((resolve, reject) => {
        const u = new URL(ui.origin);
        const req = http.request(
          { host: u.hostname, port: u.port, path: '/', headers: { ...auth, host: `evil.example:${u.port}` } },
          (res) => resolve(res.statusCode!),
        );
        req.on('error', reject);
        req.end();
      });
      expect(status).toBe(421);

      const { result } = callWithProgress(client, 'http_request', {
        method: 'POST',
        url: `${upstream.origin}/v1/x`,
      });
      const pending = await waitForPending(inst, 'http_request');
      const post = (headers: Record<string, string>, body: string) =>
        fetch(`${ui.origin}/approvals/${pending.id}/approve`, {
          method: 'POST',
          redirect: 'manual',
          headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded', ...headers },
          body,
        });
      expect((await post({}, 'csrf=forged')).status).toBe(403);
      const html = await (await fetch(`${ui.origin}/`, { headers: auth })).text();
      const csrf = /name="csrf" value="([^"]+)"/.exec(html)![1]!;
      expect((await post({ origin: 'https://evil.example' }, `csrf=${csrf}`)).status).toBe(403);
      expect((await waitForPending(inst, 'http_request')).id).toBe(pending.id); // still waiting
      const denied = await fetch(`${ui.origin}/approvals/${pending.id}/deny`, {
        method: 'POST',
        redirect: 'manual',
        headers: { ...auth, origin: ui.origin, 'content-type': 'application/x-www-form-urlencoded' },
        body: `csrf=${csrf}&reason=${encodeURIComponent('not from the viewer test')}`,
      });
      expect(denied.status).toBe(303);
      expect(textOf(await result)).toContain(
        `approval ${pending.id} was denied by root (uid 0, ui): not from the viewer test`,
      );
    },
  );
});
