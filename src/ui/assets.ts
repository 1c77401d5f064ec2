// The viewer's one stylesheet and one script, served from /assets/ (the CSP allows nothing
// else: no CDN, no inline code). The script only adds live updates; the page works without it.
export const APP_CSS = `
:root {
  --bg: #0f1419; --panel: #161d26; --line: #263040; --text: #d7dee8; --muted: #8594a8;
  --accent: #5fb3f9; --ok: #3fb97a; --deny: #f0686a; --deny-bg: #3a1c22; --err: #f5a45d;
  --err-bg: #3a2a18; --pending: #e9c46a; --pending-bg: #352f18;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
}
* { box-sizing: border-box; }
html, body { margin: 0; background: var(--bg); color: var(--text);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code, pre { font-family: var(--mono); font-size: 12.5px; }
.top { display: flex; align-items: center; justify-content: space-between; padding: 10px 20px;
  background: #0b1015; border-bottom: 1px solid var(--line); }
.brand { color: var(--text); font-weight: 600; font-size: 16px; }
.brand .mark { color: var(--accent); }
.brand .sub { color: var(--muted); font-weight: 400; font-size: 13px; margin-left: 6px; }
.live { font-size: 12px; padding: 2px 10px; border-radius: 10px; border: 1px solid var(--line); color: var(--muted); }
.live[data-state="on"] { color: var(--ok); border-color: var(--ok); }
.live[data-state="on"]::before { content: "● "; }
.live[data-state="off"] { color: var(--deny); border-color: var(--deny); }
main { padding: 16px 20px 40px; display: grid; gap: 16px; grid-template-columns: minmax(0, 2fr) minmax(0, 1fr); }
main > .calls, main > .filters-wrap, main > .wide { grid-column: 1 / -1; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
.panel h2 { margin: 0 0 10px; font-size: 13px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); }
.panel h2 .count { background: var(--pending); color: #1b1b1b; border-radius: 9px; padding: 0 7px; margin-left: 4px; }
.panel h2 code { text-transform: none; letter-spacing: 0; color: var(--text); }
.facts { margin: 0 0 8px; }
.small { font-size: 11px; text-transform: none; letter-spacing: 0; }
.muted { color: var(--muted); }
.notice { margin: 12px 20px 0; padding: 8px 12px; border-radius: 6px; background: #15324a; border: 1px solid var(--accent); }
.filters { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-end; }
.filters label { display: flex; flex-direction: column; font-size: 11px; color: var(--muted); gap: 3px; }
input, select { background: #0b1015; color: var(--text); border: 1px solid var(--line); border-radius: 5px;
  padding: 5px 8px; font: inherit; min-width: 0; }
.filters input { width: 150px; }
.btn { display: inline-block; background: #223247; color: var(--text); border: 1px solid #2f4560; border-radius: 5px;
  padding: 5px 14px; font: inherit; cursor: pointer; }
.btn:hover { background: #2a3d56; text-decoration: none; }
.btn-plain { background: transparent; }
.btn-approve { background: #1d4d35; border-color: var(--ok); }
.btn-approve:hover { background: #24613f; }
.btn-deny { background: #4d1d24; border-color: var(--deny); }
.btn-deny:hover { background: #61242d; }
.calls-table { width: 100%; border-collapse: collapse; }
.calls-table th { text-align: left; font-weight: 500; font-size: 11px; text-transform: uppercase; color: var(--muted);
  border-bottom: 1px solid var(--line); padding: 6px 8px; }
.calls-table td { border-bottom: 1px solid #1e2733; padding: 6px 8px; vertical-align: top; }
.calls-table td.args { max-width: 480px; overflow-wrap: anywhere; }
.calls-table td.num { text-align: right; white-space: nowrap; }
.calls-table td.ts { white-space: nowrap; font-family: var(--mono); font-size: 12px; }
.calls-table tr.row-deny { background: var(--deny-bg); }
.calls-table tr.row-deny td:first-child { box-shadow: inset 3px 0 var(--deny); }
.calls-table tr.row-error { background: var(--err-bg); }
.calls-table tr.row-error td:first-child { box-shadow: inset 3px 0 var(--err); }
.calls-table tr.row-pending { background: var(--pending-bg); }
.calls-table tr.row-pending td:first-child { box-shadow: inset 3px 0 var(--pending); }
.calls-table tr.flash { animation: flash 1.2s ease-out; }
@keyframes flash { from { background: #1f3a55; } }
.reason { color: var(--muted); font-size: 12px; margin-top: 3px; }
.badge { display: inline-block; font-size: 11px; padding: 1px 7px; border-radius: 9px; border: 1px solid var(--line);
  color: var(--muted); white-space: nowrap; }
.badge-allow, .outcome-ok, .badge-approved, .badge-intact { color: var(--ok); border-color: #2b6b4b; }
.badge-deny, .outcome-denied, .badge-denied, .badge-broken, .badge-expired, .badge-unreadable { color: var(--deny); border-color: #7a3036; }
.outcome-error { color: var(--err); border-color: #7a5330; }
.outcome-pending, .badge-pending, .badge-verifying, .outcome-running { color: var(--pending); border-color: #7a6a30; }
.chain-broken { border-color: var(--deny); }
.approvals { list-style: none; margin: 0; padding: 0; display: grid; gap: 10px; }
.approval { border: 1px solid #5a4e25; border-radius: 6px; padding: 10px; background: #1c1b14; }
.approval .args { background: #0b1015; border: 1px solid var(--line); border-radius: 5px; padding: 8px; margin: 8px 0;
  max-height: 220px; overflow: auto; white-space: pre-wrap; overflow-wrap: anywhere; }
.approval .id { color: var(--pending); }
.approval .digest { font-size: 11px; overflow-wrap: anywhere; }
.actions { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 8px; }
.actions form { display: flex; gap: 6px; align-items: center; }
.actions label { font-size: 12px; color: var(--muted); display: flex; gap: 6px; align-items: center; }
.pager { margin-top: 10px; text-align: right; }
.record { border: 1px solid var(--line); border-radius: 6px; margin: 10px 0; padding: 8px 12px; }
.record h3 { margin: 0 0 6px; font-size: 13px; font-weight: 500; }
.record pre { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; }
.record.row-deny { border-color: #7a3036; background: var(--deny-bg); }
@media (max-width: 1100px) { main { grid-template-columns: 1fr; } }
`;

export const APP_JS = `'use strict';
(function () {
  var live = document.getElementById('live');
  var tbody = document.getElementById('calls');
  function setLive(state, text) { if (live) { live.dataset.state = state; live.textContent = text; } }
  if (!tbody) { setLive('paused', 'static'); return; }
  var params = new URLSearchParams(location.search);
  if (params.has('before')) { setLive('paused', 'older page'); return; }
  params.delete('notice');
  // Records written between rendering this page and connecting are replayed from here.
  if (tbody.dataset.offset) params.set('since', tbody.dataset.offset);
  var source = new EventSource('/events?' + params.toString());
  source.addEventListener('open', function () { setLive('on', 'live'); });
  source.addEventListener('error', function () { setLive('off', 'reconnecting'); });
  function fragment(html) {
    var t = document.createElement('template');
    t.innerHTML = html;
    return t.content.firstElementChild;
  }
  source.addEventListener('call', function (e) {
    var msg = JSON.parse(e.data);
    var existing = tbody.querySelector('tr[data-call="' + CSS.escape(msg.call) + '"]');
    if (!msg.html) { if (existing) existing.remove(); return; }
    var row = fragment(msg.html);
    if (!row) return;
    row.classList.add('flash');
    if (existing) existing.replaceWith(row);
    else {
      var empty = tbody.querySelector('tr.empty');
      if (empty) empty.remove();
      tbody.prepend(row);
    }
  });
  ['pending', 'chain'].forEach(function (id) {
    source.addEventListener(id, function (e) {
      var el = document.getElementById(id);
      var next = fragment(JSON.parse(e.data).html);
      if (el && next) el.replaceWith(next);
    });
  });
})();
`;
