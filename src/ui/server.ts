// `airlock ui`: the audit viewer and approval page, on loopback only.
//
// - Authentication: a random token (or the operator's, from AIRLOCK_UI_TOKEN). Opening
//   `/?token=T` once sets an HttpOnly, SameSite=Strict cookie and redirects to a URL without it;
//   every other request needs that cookie (or `Authorization: Bearer T`).
// - The Host header must name the loopback address we listen on (no DNS rebinding), and every
//   POST must carry the page's CSRF token and come from our own origin.
// - Strict CSP: scripts and styles only from /assets/, nothing inline, no framing, forms only to
//   ourselves. All record content is escaped by render.ts.
// - Decisions go through the same control sockets as `airlock approve|deny` (via "ui").
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, unlink } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { decideApproval, listApprovals } from '../approvals/client.js';
import { MAX_GRANT_MS, parseDuration } from '../approvals/policy.js';
import type { PendingApproval } from '../approvals/service.js';
import type { AuditRecord } from '../audit/log.js';
import type { Logger } from '../log.js';
import { APP_CSS, APP_JS } from './assets.js';
import {
  AuditFollower,
  ChainWatch,
  findCall,
  matches,
  readPage,
  summarize,
  type CallFilter,
} from './audit-view.js';
import {
  callDetail,
  callRow,
  callsTable,
  chainPanel,
  FILTER_FIELDS,
  filtersForm,
  layout,
  parseFilter,
  pendingPanel,
  type FilterQuery,
} from './render.js';

const COOKIE = 'airlock_ui';
const PAGE_SIZE = 50;
const POLL_MS = 300;
const PENDING_POLL_MS = 1000;
const MAX_FORM_BYTES = 16 * 1024;
/** Calls whose records the live table keeps, to render a row when its next record arrives. */
const RECENT_CALLS = 2000;
const MAX_SSE_CLIENTS = 32;
/** How far back a new event stream catches up (past that, the page is stale: reload). */
const MAX_REPLAY_BYTES = 4 * 1024 * 1024;

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

export interface UiOptions {
  /** A loopback address and port, or `socketPath` instead (a 0600 Unix socket, e.g. for `ssh -L`). */
  host?: string;
  port?: number;
  socketPath?: string;
  token?: string;
  auditFile: string;
  stateDir: string;
  log: Logger;
}

export interface UiServer {
  url: string;
  /** The URL with the token, to open once. */
  loginUrl: string;
  close(): Promise<void>;
}

/** Whether `host` is a loopback address (the only kind the viewer listens on). */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

export async function startUi(opts: UiOptions): Promise<UiServer> {
  if (opts.socketPath === undefined && !isLoopback(opts.host ?? ''))
    throw new Error(`airlock ui listens on loopback only, not ${opts.host}`);
  const token = opts.token ?? randomBytes(24).toString('base64url');
  const csrf = createHmac('sha256', token).update('airlock-ui csrf').digest('base64url');
  const chain = new ChainWatch(opts.auditFile);
  void chain.refresh();
  const follower = new AuditFollower(opts.auditFile);
  await follower.init();
  const recent = new Map<string, AuditRecord[]>();
  const clients = new Set<{ res: http.ServerResponse; filter: CallFilter }>();
  let lastPendingKey = '';
  let lastPendingPoll = 0;
  let lastChainKey = '';
  /** Host headers accepted on TCP (DNS rebinding); undefined on a Unix socket, which no page can reach. */
  let allowedHosts: Set<string> | undefined = new Set();

  const pendingNow = async (): Promise<PendingApproval[] | { error: string }> => {
    try {
      return await listApprovals(opts.stateDir, { via: 'ui' });
    } catch (err) {
      return { error: (err as Error).message };
    }
  };

  const send = (res: http.ServerResponse, event: string, data: unknown) => {
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };

  // One poll loop for every viewer: new records, the pending list and the chain status.
  let polling = false;
  const poll = async () => {
    if (polling) return;
    polling = true;
    try {
      const records = await follower.poll();
      for (const r of records) {
        const list = recent.get(r.call) ?? [];
        list.push(r);
        recent.delete(r.call);
        recent.set(r.call, list);
        if (recent.size > RECENT_CALLS) recent.delete(recent.keys().next().value!);
      }
      const touched = new Set(records.map((r) => r.call));
      if (records.length) void chain.refresh();
      if (clients.size === 0) return;
      for (const call of touched) {
        const summary = summarize({ call, records: recent.get(call)! });
        const html = callRow(summary);
        for (const c of clients) send(c.res, 'call', { call, html: matches(summary, c.filter) ? html : '' });
      }
      const chainKey = JSON.stringify(chain.status);
      if (chainKey !== lastChainKey) {
        lastChainKey = chainKey;
        const html = chainPanel(chain.status);
        for (const c of clients) send(c.res, 'chain', { html });
      }
      // The pending list costs a round trip to every broker process: once a second is enough.
      if (Date.now() - lastPendingPoll >= PENDING_POLL_MS) {
        lastPendingPoll = Date.now();
        const pending = await pendingNow();
        const pendingKey = JSON.stringify(Array.isArray(pending) ? pending.map((p) => p.id) : pending);
        if (pendingKey !== lastPendingKey) {
          lastPendingKey = pendingKey;
          const html = pendingPanel(pending, csrf);
          for (const c of clients) send(c.res, 'pending', { html });
        }
      }
    } catch (err) {
      opts.log.warn({ err: (err as Error).message }, 'ui poll failed');
    } finally {
      polling = false;
    }
  };
  const timer = setInterval(() => void poll(), POLL_MS);
  const keepalive = setInterval(() => {
    for (const c of clients) c.res.write(': keepalive\n\n');
  }, 15_000);

  const authorized = (req: http.IncomingMessage): boolean => {
    const presented = [
      cookieValue(req.headers.cookie, COOKIE),
      /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1],
    ];
    return presented.some((p) => p !== undefined && safeEqual(p, token));
  };

  const server = http.createServer((req, res) => {
    void handle(req, res).catch((err: Error) => {
      opts.log.error({ err: err.message }, 'ui request failed');
      if (!res.headersSent) respond(res, 500, 'text/plain; charset=utf-8', 'internal error');
      else res.end();
    });
  });

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    setSecurityHeaders(res);
    if (allowedHosts && !allowedHosts.has(req.headers.host ?? '')) {
      return respond(
        res,
        421,
        'text/plain; charset=utf-8',
        'wrong Host header: open the URL airlock ui printed',
      );
    }
    const url = new URL(req.url ?? '/', 'http://viewer.invalid');
    const given = url.searchParams.get('token');
    if (req.method === 'GET' && url.pathname === '/' && given !== null) {
      if (!safeEqual(given, token)) return respond(res, 401, 'text/plain; charset=utf-8', 'wrong token');
      res.setHeader('set-cookie', `${COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=/`);
      url.searchParams.delete('token');
      return redirect(res, `/${url.searchParams.size ? `?${url.searchParams}` : ''}`);
    }
    if (!authorized(req)) {
      return respond(
        res,
        401,
        'text/html; charset=utf-8',
        layout({
          title: 'Sign in',
          body: '<section class="panel wide"><h2>Not signed in</h2><p>Open the URL with the token that <code>airlock ui</code> printed when it started.</p></section>',
        }),
      );
    }

    if (req.method === 'GET' && url.pathname === '/assets/app.css')
      return respond(res, 200, 'text/css; charset=utf-8', APP_CSS);
    if (req.method === 'GET' && url.pathname === '/assets/app.js')
      return respond(res, 200, 'text/javascript; charset=utf-8', APP_JS);

    if (req.method === 'GET' && url.pathname === '/') {
      const q = queryOf(url);
      const filter = parseFilter(q);
      const notice = url.searchParams.get('notice') ?? undefined;
      if (typeof filter === 'string') {
        return respond(
          res,
          400,
          'text/html; charset=utf-8',
          layout({
            title: 'Bad filter',
            notice: filter,
            body: `<div class="filters-wrap panel">${filtersForm(q)}</div>`,
          }),
        );
      }
      const beforeText = url.searchParams.get('before');
      const before = beforeText === null ? undefined : Number(beforeText);
      if (before !== undefined && !(Number.isSafeInteger(before) && before >= 0))
        return respond(res, 400, 'text/plain; charset=utf-8', 'before must be a byte offset');
      let table: string;
      try {
        table = callsTable(await readPage(opts.auditFile, { before, limit: PAGE_SIZE, filter }), q);
      } catch (err) {
        table = `<section class="panel calls"><h2>Calls</h2><p class="muted">cannot read ${escText(opts.auditFile)} (${escText((err as NodeJS.ErrnoException).code ?? (err as Error).message)})</p></section>`;
      }
      const body = [
        pendingPanel(await pendingNow(), csrf),
        chainPanel(chain.status),
        `<div class="filters-wrap panel">${filtersForm(q)}</div>`,
        table,
      ].join('\n');
      return respond(
        res,
        200,
        'text/html; charset=utf-8',
        layout({ title: 'Calls', body, csrf, ...(notice ? { notice } : {}) }),
      );
    }

    const callMatch = /^\/call\/([A-Za-z0-9-]{1,64})$/.exec(url.pathname);
    if (req.method === 'GET' && callMatch) {
      const records = await findCall(opts.auditFile, callMatch[1]!);
      return respond(
        res,
        records.length ? 200 : 404,
        'text/html; charset=utf-8',
        layout({ title: 'Call', body: callDetail(callMatch[1]!, records) }),
      );
    }

    if (req.method === 'GET' && url.pathname === '/events') {
      const filter = parseFilter(queryOf(url));
      if (typeof filter === 'string') return respond(res, 400, 'text/plain; charset=utf-8', filter);
      if (clients.size >= MAX_SSE_CLIENTS)
        return respond(res, 503, 'text/plain; charset=utf-8', 'too many viewers');
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        connection: 'keep-alive',
      });
      res.write('retry: 2000\n\n');
      const client = { res, filter };
      clients.add(client);
      send(res, 'chain', { html: chainPanel(chain.status) });
      // Calls that changed after the page was rendered and before this stream opened.
      const since = Number(url.searchParams.get('since'));
      const upTo = follower.position;
      if (Number.isSafeInteger(since) && since >= 0 && upTo - since <= MAX_REPLAY_BYTES) {
        for (const call of await follower.callsBetween(since, upTo)) {
          const records = recent.get(call);
          if (!records) continue;
          const summary = summarize({ call, records });
          send(res, 'call', { call, html: matches(summary, filter) ? callRow(summary) : '' });
        }
      }
      // The next poll sends the pending list to everyone, this viewer included (it may have
      // changed since the page was rendered).
      lastPendingKey = '';
      lastPendingPoll = 0;
      req.on('close', () => clients.delete(client));
      return;
    }

    const decision = /^\/approvals\/([0-9a-f]{1,64})\/(approve|deny)$/.exec(url.pathname);
    if (req.method === 'POST' && decision) {
      if (!sameOrigin(req))
        return respond(res, 403, 'text/plain; charset=utf-8', 'cross-site request refused');
      const form = await readForm(req);
      if (!form) return respond(res, 413, 'text/plain; charset=utf-8', 'form too large');
      if (!safeEqual(form.get('csrf') ?? '', csrf))
        return respond(res, 403, 'text/plain; charset=utf-8', 'bad CSRF token: reload the page');
      const id = decision[1]!;
      const approve = decision[2] === 'approve';
      let forMs: number | undefined;
      const forText = form.get('for');
      if (approve && forText) {
        const parsed = parseDuration(forText, MAX_GRANT_MS);
        if (typeof parsed === 'string') return redirect(res, `/?notice=${encodeURIComponent(parsed)}`);
        forMs = parsed;
      }
      const reason = form.get('reason')?.trim() || undefined;
      try {
        const reply = await decideApproval(opts.stateDir, id, {
          approve,
          via: 'ui',
          ...(forMs !== undefined ? { forMs } : {}),
          ...(!approve && reason ? { reason } : {}),
        });
        opts.log.info({ approval: id, state: reply.state, by: reply.by }, 'decided in the ui');
        return redirect(res, `/?notice=${encodeURIComponent(`${reply.state} ${id} as ${reply.by.user}`)}`);
      } catch (err) {
        return redirect(res, `/?notice=${encodeURIComponent((err as Error).message)}`);
      }
    }
    return respond(res, 404, 'text/plain; charset=utf-8', 'not found');
  };

  let base: string;
  if (opts.socketPath !== undefined) {
    await listen(server, (done) => server.listen(opts.socketPath, done));
    await chmod(opts.socketPath, 0o600);
    allowedHosts = undefined;
    // What the operator's browser reaches through a forward (`ssh -L 8787:<socket>`).
    base = 'http://localhost:8787';
  } else {
    await listen(server, (done) => server.listen(opts.port ?? 0, opts.host, done));
    const port = (server.address() as AddressInfo).port;
    const host = opts.host!;
    const hostPart = host.includes(':') ? `[${host}]` : host;
    allowedHosts = new Set([`${hostPart}:${port}`]);
    if (host === '127.0.0.1' || host === 'localhost')
      for (const name of ['127.0.0.1', 'localhost']) allowedHosts.add(`${name}:${port}`);
    base = `http://${hostPart}:${port}`;
  }
  return {
    url: base,
    loginUrl: `${base}/?token=${encodeURIComponent(token)}`,
    async close() {
      clearInterval(timer);
      clearInterval(keepalive);
      for (const c of clients) c.res.end();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (opts.socketPath !== undefined) await unlink(opts.socketPath).catch(() => undefined);
    },
  };
}

function escText(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function setSecurityHeaders(res: http.ServerResponse): void {
  res.setHeader('content-security-policy', CSP);
  res.setHeader('x-content-type-options', 'nosniff');
  res.setHeader('x-frame-options', 'DENY');
  // same-origin, not no-referrer: under no-referrer a browser sends `Origin: null` on our own
  // form posts, and the Origin check below needs the real one.
  res.setHeader('referrer-policy', 'same-origin');
  res.setHeader('cache-control', 'no-store');
  res.setHeader('cross-origin-opener-policy', 'same-origin');
  res.setHeader('cross-origin-resource-policy', 'same-origin');
}

function respond(res: http.ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function redirect(res: http.ServerResponse, location: string): void {
  res.writeHead(303, { location, 'content-length': 0 });
  res.end();
}

function queryOf(url: URL): FilterQuery {
  const q: FilterQuery = {};
  for (const key of FILTER_FIELDS) {
    const v = url.searchParams.get(key);
    if (v) q[key] = v.slice(0, 200);
  }
  return q;
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return v.join('=');
  }
  return undefined;
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function listen(server: http.Server, start: (done: () => void) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    start(() => {
      server.off('error', reject);
      resolve();
    });
  });
}

/**
 * A POST from our own page: its Origin names the host the request was sent to (the Host header,
 * itself checked on TCP), or, without a usable Origin, Sec-Fetch-Site says same-origin.
 */
function sameOrigin(req: http.IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin !== undefined && origin !== 'null') {
    try {
      const u = new URL(origin);
      return u.protocol === 'http:' && u.host === req.headers.host;
    } catch {
      return false;
    }
  }
  const site = req.headers['sec-fetch-site'];
  if (origin === 'null') return site === 'same-origin';
  return site === undefined || site === 'same-origin';
}

async function readForm(req: http.IncomingMessage): Promise<URLSearchParams | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) return undefined;
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}
