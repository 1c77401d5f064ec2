// `airlock ui --listen unix:PATH`: a 0600 socket (for an ssh forward) instead of a TCP port; the
// token and the CSRF rules hold the same, and a --listen that is not loopback is refused.
import { stat } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runCli } from '../approvals/helpers.js';
import { makeInstallation, type Installation } from '../helpers/fixture.js';
import { startUiProcess, type UiProcess } from './helpers.js';

let inst: Installation;
let ui: UiProcess;
let socketPath: string;

beforeAll(async () => {
  inst = await makeInstallation({});
  socketPath = path.join(inst.root, 'ui.sock');
  ui = await startUiProcess(inst, `unix:${socketPath}`);
});

afterAll(async () => {
  await ui?.stop();
  await inst?.cleanup();
});

function request(opts: { path: string; method?: string; headers?: Record<string, string>; body?: string }) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        path: opts.path,
        method: opts.method ?? 'GET',
        headers: { host: 'localhost:8787', ...opts.headers },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

it('serves on a 0600 Unix socket with the same sign-in and CSRF rules', async () => {
  expect((await stat(socketPath)).mode & 0o777).toBe(0o600);
  expect(ui.loginUrl).toMatch(/^http:\/\/localhost:8787\/\?token=/);
  const token = new URL(ui.loginUrl).searchParams.get('token')!;
  expect((await request({ path: '/' })).status).toBe(401);
  const page = await request({ path: '/', headers: { authorization: `Bearer ${token}` } });
  expect(page.status).toBe(200);
  expect(page.body).toContain('Pending approvals');
  expect(page.body).toMatch(/cannot read .*audit.jsonl \(ENOENT\)/); // no broker has written a record yet
  const csrf = /<meta name="airlock-csrf" content="([^"]+)">/.exec(page.body)![1]!;
  const post = (origin: string) =>
    request({
      path: '/approvals/abcdef012345/deny',
      method: 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        origin,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: `csrf=${csrf}`,
    });
  expect((await post('http://evil.example')).status).toBe(403);
  // Same origin, right token: it gets as far as the brokers (none runs here) and says so.
  const allowed = await post('http://localhost:8787');
  expect(allowed.status).toBe(303);
});

it('refuses to listen anywhere but loopback or a Unix socket', async () => {
  for (const listen of ['0.0.0.0:8787', '192.168.1.10:8787', 'example.com:80', 'unix:relative.sock']) {
    const r = await runCli(['ui', '--listen', listen, '--config', inst.configFile]);
    expect(r.code, listen).toBe(1);
    expect(r.stderr, listen).toMatch(/loopback only|absolute path/);
  }
});
