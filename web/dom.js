// Building DOM without HTML strings, and formatting what the API sends. Text from charond
// (job names, log lines, messages) only ever goes into textContent or attribute values.

/**
 * h creates an element. attrs: class, text, on (event name → handler), hidden, and any other
 * attribute (values set with setAttribute; false/null/undefined ones are left out). Children
 * are nodes or strings (made text nodes); null and false children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'hidden') el.hidden = Boolean(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** The statuses a job can have, in the order a job goes through them. */
export const STATUSES = ['queued', 'running', 'completed', 'failed', 'timed_out', 'cancelled'];

export function isFinal(status) {
  return status !== 'queued' && status !== 'running';
}

/** A status badge: its colour comes from style.css's .status-<name>. */
export function statusBadge(status) {
  const s = STATUSES.includes(status) ? status : 'unknown';
  return h('span', { class: `status status-${s}`, text: status || 'unknown' });
}

export function jobHref(id, line) {
  return `#/jobs/${encodeURIComponent(id)}${line ? `/L${line}` : ''}`;
}

/** parseTime gives milliseconds since the epoch, or NaN for null and the zero time. */
export function parseTime(iso) {
  if (!iso || iso.startsWith('0001-')) return NaN;
  return Date.parse(iso);
}

/** fmtTime shows a time briefly: the clock time today, else the date too. */
export function fmtTime(iso) {
  const t = parseTime(iso);
  if (Number.isNaN(t)) return '—';
  const d = new Date(t);
  const now = new Date();
  const pad = (n) => String(n).padStart(2, '0');
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === now.toDateString()) return clock;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock}`;
}

/** fmtDuration shows seconds as 4.2s, 3m 05s or 2h 03m. */
export function fmtDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '—';
  if (seconds < 10) return `${seconds.toFixed(1)}s`;
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  const pad = (n) => String(n).padStart(2, '0');
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
}

/** jobDuration is how long a job has run (so far, while it runs), in seconds, or NaN. */
export function jobDuration(job, now = Date.now()) {
  const start = parseTime(job.started_at);
  if (Number.isNaN(start)) return NaN;
  const end = parseTime(job.finished_at);
  return ((Number.isNaN(end) ? now : end) - start) / 1000;
}

/** The counts of a host in a job's summary, in the order Ansible's recap prints them. */
export const COUNTS = ['ok', 'changed', 'unreachable', 'failed', 'skipped', 'rescued', 'ignored'];

/** hostTotals adds up every host's counts of a summary; null if it has no hosts. */
export function hostTotals(summary) {
  const hosts = summary && summary.hosts ? Object.values(summary.hosts) : [];
  if (hosts.length === 0) return null;
  const totals = { hosts: hosts.length };
  for (const k of COUNTS) totals[k] = hosts.reduce((sum, c) => sum + (Number(c[k]) || 0), 0);
  return totals;
}

/** hostCounts renders a summary's totals compactly: "2 hosts ok 8 changed 2 failed 1". */
export function hostCounts(summary) {
  const t = hostTotals(summary);
  if (!t) return null;
  const parts = [h('span', { class: 'count-hosts', text: `${t.hosts} host${t.hosts === 1 ? '' : 's'}` })];
  for (const k of COUNTS) {
    if (k !== 'ok' && t[k] === 0) continue;
    parts.push(h('span', { class: `count count-${k}`, title: k }, `${k} `, h('b', { text: String(t[k]) })));
  }
  return h('span', { class: 'counts' }, parts);
}

/** shellQuote shows an argument list as one could paste it into a shell. */
export function shellQuote(args) {
  return args
    .map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`))
    .join(' ');
}
