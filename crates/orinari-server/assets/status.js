// Live updates for the status page: follows /status/events (server-sent
// events carrying the Statuspage summary) and updates the banner, the
// components and the active incidents in place. Builds every node with the
// DOM API (Trusted Types allow no HTML strings). Without JavaScript the page
// is complete as served; reloading shows the same state.

const LABELS = {
  operational: ['✓', 'Operational'],
  degraded_performance: ['▲', 'Degraded performance'],
  partial_outage: ['◆', 'Partial outage'],
  major_outage: ['✕', 'Major outage'],
  under_maintenance: ['⚙', 'Under maintenance'],
};
const BANNER = { none: '✓', minor: '▲', major: '◆', critical: '✕', maintenance: '⚙' };
const IMPACT = { critical: 'Critical impact', major: 'Major impact', minor: 'Minor impact', none: 'No impact' };

function el(tag, props = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') n.className = v; else n.setAttribute(k, v);
  }
  for (const c of children) n.append(c);
  return n;
}

function when(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

function words(s) {
  const t = String(s).replace(/_/g, ' ');
  return t.charAt(0).toUpperCase() + t.slice(1);
}

function banner(summary) {
  const b = document.getElementById('banner');
  const maint = summary.scheduled_maintenances.some((m) => m.status === 'in_progress' || m.status === 'verifying');
  let kind = summary.status.indicator;
  if (kind === 'none' && maint) kind = 'maintenance';
  b.className = `banner b-${kind}`;
  b.replaceChildren(el('span', { class: 'sym', 'aria-hidden': 'true' }, BANNER[kind] || '✓'), ' ', el('strong', {}, summary.status.description));
  const u = document.getElementById('updated');
  u.setAttribute('datetime', summary.page.updated_at);
  u.textContent = when(summary.page.updated_at);
}

function components(summary) {
  for (const c of summary.components) {
    const li = document.getElementById(`c-${c.id}`);
    const state = li && li.querySelector('.state');
    if (!state) continue;
    const [sym, label] = LABELS[c.status] || ['?', c.status];
    state.className = `state s-${c.status}`;
    state.replaceChildren(el('span', { class: 'sym', 'aria-hidden': 'true' }, sym), ' ', el('span', { class: 'label' }, label));
  }
}

function article(i, line) {
  const updates = el('ol', { class: 'updates' }, ...i.incident_updates.map((u) => el('li', {},
    el('strong', {}, words(u.status)), ` — ${u.body} `, el('time', { datetime: u.created_at }, when(u.created_at)))));
  return el('article', { class: 'incident', id: i.id }, el('h3', {}, i.name), el('p', { class: 'impact' }, line), updates);
}

function incidents(summary) {
  const section = document.getElementById('active');
  const list = summary.incidents.map((i) => article(i, `${IMPACT[i.impact] || 'No impact'} · began ${when(i.started_at)}`));
  section.replaceChildren(el('h2', { id: 'h-active' }, 'Active incidents'), ...list);
  section.hidden = list.length === 0;
  const maint = document.getElementById('maintenance');
  const mlist = summary.scheduled_maintenances.map((m) => article(m, `${when(m.scheduled_for)} – ${when(m.scheduled_until)}`));
  maint.replaceChildren(el('h2', { id: 'h-maint' }, 'Scheduled maintenance'), ...mlist);
  maint.hidden = mlist.length === 0;
}

if ('EventSource' in window) {
  const source = new EventSource('/status/events');
  const live = document.getElementById('live');
  source.addEventListener('open', () => { live.hidden = false; });
  source.addEventListener('error', () => { live.hidden = true; });
  source.addEventListener('summary', (e) => {
    let summary;
    try { summary = JSON.parse(e.data); } catch { return; }
    banner(summary);
    components(summary);
    incidents(summary);
    document.documentElement.dataset.version = e.lastEventId;
  });
}

// Web vitals for the operator's aggregate analytics: first byte, first
// contentful paint, largest contentful paint and layout shift of this load,
// sent once when the page is hidden. No identifiers; the server keeps only
// counts per good / needs-improvement / poor bucket.
const vitals = { page: '/status' };
try {
  const nav = performance.getEntriesByType('navigation')[0];
  if (nav) vitals.ttfb_ms = nav.responseStart;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (e.name === 'first-contentful-paint') vitals.fcp_ms = e.startTime;
  }).observe({ type: 'paint', buffered: true });
  new PerformanceObserver((list) => {
    const all = list.getEntries();
    if (all.length) vitals.lcp_ms = all[all.length - 1].startTime;
  }).observe({ type: 'largest-contentful-paint', buffered: true });
  vitals.cls = 0;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (!e.hadRecentInput) vitals.cls += e.value;
  }).observe({ type: 'layout-shift', buffered: true });
} catch { /* older browsers: send what there is */ }
let sent = false;
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState !== 'hidden' || sent || !navigator.sendBeacon) return;
  sent = true;
  navigator.sendBeacon('/status/vitals', new Blob([JSON.stringify(vitals)], { type: 'application/json' }));
});
