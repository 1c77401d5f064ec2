// Server-side HTML for the audit viewer. Everything that comes from a record (agent-written
// arguments, reasons, tool names) goes through esc(); the page has no inline script or style,
// so even markup that slipped through could not run (the CSP allows only /assets/ files).
import type { PendingApproval } from '../approvals/service.js';
import type { AuditRecord } from '../audit/log.js';
import { formatDuration } from '../approvals/policy.js';
import { summarize, type CallFilter, type CallSummary, type ChainStatus, type Page } from './audit-view.js';

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
  '`': '&#96;',
};

export function esc(value: unknown): string {
  const s =
    value === undefined || value === null ? '' : typeof value === 'string' ? value : JSON.stringify(value);
  return s.replace(/[&<>"'`]/g, (c) => ESCAPES[c]!);
}

const MAX_ARGS_IN_ROW = 160;

function clip(s: string, n: number): string {
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

function ms(value: number | undefined): string {
  if (value === undefined) return '';
  return value < 1000 ? `${Math.round(value)} ms` : `${(value / 1000).toFixed(value < 10_000 ? 2 : 1)} s`;
}

function time(ts: string): string {
  // 2026-12-02T18:00:00.123Z → 2026-12-02 18:00:00.123 (UTC, as recorded)
  return ts.replace('T', ' ').replace('Z', '');
}

export function layout(opts: { title: string; body: string; notice?: string; csrf?: string }): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
${opts.csrf ? `<meta name="airlock-csrf" content="${esc(opts.csrf)}">\n` : ''}<title>${esc(opts.title)} · Airlock audit</title>
<link rel="stylesheet" href="/assets/app.css">
<script src="/assets/app.js" defer></script>
</head>
<body>
<header class="top">
  <a class="brand" href="/"><span class="mark">◆</span> Airlock <span class="sub">audit &amp; approvals</span></a>
  <span class="live" id="live" data-state="connecting">live</span>
</header>
${opts.notice ? `<div class="notice" role="status">${esc(opts.notice)}</div>` : ''}
<main>
${opts.body}
</main>
</body>
</html>
`;
}

export function chainPanel(status: ChainStatus): string {
  let state: string;
  let detail: string;
  switch (status.state) {
    case 'intact':
      state = 'intact';
      detail = `${status.count} records verified${status.last ? `; last: seq ${status.last.seq} at ${esc(time(status.last.ts))}, hash ${esc(status.last.hash.slice(0, 16))}…` : ''}; checked ${esc(time(status.checkedAt))}`;
      break;
    case 'broken':
      state = 'broken';
      detail = `broken at line ${status.line}: ${esc(status.reason)} (${status.count} records before it verify${status.last ? `; last good: seq ${status.last.seq}` : ''})`;
      break;
    case 'verifying':
      state = 'verifying';
      detail = `verifying… ${status.count} records so far`;
      break;
    default:
      state = 'unreadable';
      detail = `cannot read the audit log (${esc(status.reason)})`;
  }
  return `<section class="panel chain chain-${state}" id="chain"><h2>Chain</h2><p><span class="badge badge-${state}">${state}</span> ${detail}</p></section>`;
}

export function pendingPanel(pending: PendingApproval[] | { error: string }, csrf: string): string {
  if (!Array.isArray(pending)) {
    return `<section class="panel pending" id="pending"><h2>Pending approvals</h2><p class="muted">approvals unavailable: ${esc(pending.error)}</p></section>`;
  }
  if (pending.length === 0) {
    return `<section class="panel pending" id="pending"><h2>Pending approvals</h2><p class="muted">none waiting</p></section>`;
  }
  const items = pending
    .map((a) => {
      const grant = a.grantMaxMs
        ? `<label>grant identical calls for <select name="for"><option value="">this call only</option>${grantChoices(a.grantMaxMs)}</select></label>`
        : '';
      return `<li class="approval" data-approval="${esc(a.id)}">
  <div class="approval-head"><code class="id">${esc(a.id)}</code> <strong>${esc(a.team)}</strong> · ${esc(a.server)}.<strong>${esc(a.tool)}</strong> <span class="muted">requested ${esc(time(a.requestedAt))} · expires ${esc(time(a.expiresAt))}</span></div>
  <pre class="args">${esc(JSON.stringify(a.args, null, 2))}</pre>
  <div class="digest muted">digest <code>${esc(a.digest)}</code> · <a href="/call/${encodeURIComponent(a.call)}">call</a></div>
  <div class="actions">
    <form method="post" action="/approvals/${encodeURIComponent(a.id)}/approve" class="approve-form">
      <input type="hidden" name="csrf" value="${esc(csrf)}">${grant}
      <button type="submit" class="btn btn-approve">Approve</button>
    </form>
    <form method="post" action="/approvals/${encodeURIComponent(a.id)}/deny" class="deny-form">
      <input type="hidden" name="csrf" value="${esc(csrf)}">
      <input type="text" name="reason" maxlength="500" placeholder="reason (optional)" aria-label="reason">
      <button type="submit" class="btn btn-deny">Deny</button>
    </form>
  </div>
</li>`;
    })
    .join('\n');
  return `<section class="panel pending has-pending" id="pending"><h2>Pending approvals <span class="count">${pending.length}</span></h2><ul class="approvals">${items}</ul></section>`;
}

function grantChoices(maxMs: number): string {
  const choices = [5 * 60_000, 15 * 60_000, 30 * 60_000, 3_600_000, 4 * 3_600_000, 86_400_000].filter(
    (c) => c <= maxMs,
  );
  if (!choices.includes(maxMs)) choices.push(maxMs);
  return choices.map((c) => `<option value="${formatDuration(c)}">${formatDuration(c)}</option>`).join('');
}

export const FILTER_FIELDS = [
  'team',
  'server',
  'tool',
  'decision',
  'outcome',
  'session',
  'from',
  'to',
] as const;
export type FilterQuery = Partial<Record<(typeof FILTER_FIELDS)[number], string>>;

export function filtersForm(q: FilterQuery): string {
  const text = (name: keyof FilterQuery, label: string, placeholder = '') =>
    `<label>${label}<input type="text" name="${name}" value="${esc(q[name] ?? '')}" placeholder="${esc(placeholder)}"></label>`;
  const select = (name: keyof FilterQuery, label: string, options: string[]) =>
    `<label>${label}<select name="${name}"><option value="">any</option>${options
      .map((o) => `<option value="${o}"${q[name] === o ? ' selected' : ''}>${o}</option>`)
      .join('')}</select></label>`;
  return `<form class="filters" method="get" action="/" id="filters">
${text('team', 'team')}
${select('server', 'server', ['git', 'github', 'postgres', 'http'])}
${text('tool', 'tool')}
${select('decision', 'decision', ['allow', 'deny'])}
${select('outcome', 'outcome', ['ok', 'error', 'denied', 'pending', 'running'])}
${text('session', 'session', 'id or prefix')}
${text('from', 'from', '2026-12-02T10:00Z')}
${text('to', 'to', '2026-12-02T18:00Z')}
<button type="submit" class="btn">Filter</button> <a class="btn btn-plain" href="/">Clear</a>
</form>`;
}

export function callRow(s: CallSummary): string {
  const args = clip(JSON.stringify(s.args ?? null), MAX_ARGS_IN_ROW);
  const cls = [
    'call',
    s.decision === 'deny' ? 'row-deny' : '',
    s.outcome === 'error' ? 'row-error' : '',
    s.outcome === 'pending' ? 'row-pending' : '',
  ]
    .filter(Boolean)
    .join(' ');
  const approval = s.approval
    ? `<span class="badge badge-${esc(s.approval.state)}">${esc(s.approval.state)}</span>${s.approval.decidedBy?.user ? ` <span class="muted">by ${esc(s.approval.decidedBy.user)}${s.approval.decidedBy.via ? ` (${esc(s.approval.decidedBy.via)})` : ''}</span>` : ''}`
    : '';
  const detail = s.reason !== undefined ? `<div class="reason">${esc(clip(s.reason, 300))}</div>` : '';
  return `<tr class="${cls}" data-call="${esc(s.call)}">
<td class="ts"><a href="/call/${encodeURIComponent(s.call)}">${esc(time(s.ts))}</a></td>
<td>${esc(s.team)}</td>
<td>${esc(s.server)}</td>
<td class="tool">${esc(s.tool)}</td>
<td class="args"><code>${esc(args)}</code>${detail}</td>
<td><span class="badge badge-${s.decision}">${s.decision}</span></td>
<td><span class="badge outcome outcome-${s.outcome}">${s.outcome}</span></td>
<td>${approval}</td>
<td class="num">${esc(ms(s.durationMs))}</td>
<td class="session"><code title="${esc(s.session)}">${esc(s.session.slice(0, 8))}</code></td>
</tr>`;
}

export function callsTable(page: Page, q: FilterQuery): string {
  const rows = page.calls.map(callRow).join('\n');
  const params = new URLSearchParams(Object.entries(q).filter(([, v]) => v) as [string, string][]);
  let older = '';
  if (page.next !== undefined) {
    params.set('before', String(page.next));
    older = `<a class="btn btn-plain" id="older" href="/?${esc(params.toString())}">Older →</a>`;
  }
  const budget = page.budgetHit
    ? `<span class="muted">scanned ${(page.scanned / 1048576).toFixed(0)} MiB without filling the page;</span> `
    : '';
  return `<section class="panel calls">
<h2>Calls <span class="muted small">newest first · log ${(page.size / 1048576).toFixed(1)} MiB</span></h2>
<table class="calls-table">
<thead><tr><th>time (UTC)</th><th>team</th><th>server</th><th>tool</th><th>arguments</th><th>decision</th><th>outcome</th><th>approval</th><th>duration</th><th>session</th></tr></thead>
<tbody id="calls" data-offset="${page.size}">
${rows || '<tr class="empty"><td colspan="10" class="muted">no calls match</td></tr>'}
</tbody>
</table>
<nav class="pager">${budget}${older}</nav>
</section>`;
}

export function callDetail(call: string, records: AuditRecord[]): string {
  if (records.length === 0) {
    return `<section class="panel wide"><h2>Call <code>${esc(call)}</code></h2><p class="muted">no records of this call were found</p></section>`;
  }
  const items = records
    .map(
      (r) => `<article class="record record-${esc(r.phase)}${r.decision === 'deny' ? ' row-deny' : ''}">
<h3><span class="badge">${esc(r.phase)}</span> seq ${esc(r.seq)} · ${esc(time(r.ts))}${r.approval ? ` · approval <span class="badge badge-${esc((r.approval as { state?: string }).state)}">${esc((r.approval as { state?: string }).state)}</span>` : ''}</h3>
<pre>${esc(JSON.stringify(r, null, 2))}</pre>
</article>`,
    )
    .join('\n');
  const s = summarize({ call, records });
  const facts = `<p class="facts">${esc(s.team)} · ${esc(s.server)}.<strong>${esc(s.tool)}</strong> · session <code>${esc(s.session)}</code> · <span class="badge badge-${s.decision}">${s.decision}</span> <span class="badge outcome outcome-${s.outcome}">${s.outcome}</span>${s.approval ? ` approval <span class="badge badge-${esc(s.approval.state)}">${esc(s.approval.state)}</span>` : ''}${s.durationMs !== undefined ? ` · ${esc(ms(s.durationMs))}` : ''}</p>`;
  return `<section class="panel wide"><h2>Call <code>${esc(call)}</code> <a class="btn btn-plain" href="/">← all calls</a></h2>${facts}${items}</section>`;
}

/** The filter as the query string gave it (strings), parsed; a string saying what is wrong otherwise. */
export function parseFilter(q: FilterQuery): CallFilter | string {
  const f: CallFilter = {};
  for (const key of ['team', 'server', 'tool', 'session'] as const) if (q[key]) f[key] = q[key];
  if (q.decision) {
    if (q.decision !== 'allow' && q.decision !== 'deny') return 'decision must be allow or deny';
    f.decision = q.decision;
  }
  if (q.outcome) {
    if (!['ok', 'error', 'denied', 'pending', 'running'].includes(q.outcome)) return 'unknown outcome';
    f.outcome = q.outcome as CallFilter['outcome'];
  }
  for (const key of ['from', 'to'] as const) {
    if (!q[key]) continue;
    const t = Date.parse(q[key]!);
    if (Number.isNaN(t)) return `${key} is not a time (e.g. 2026-12-02T10:00Z)`;
    f[key] = t;
  }
  return f;
}
