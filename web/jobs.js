// The jobs list: loaded once (GET /api/v1/jobs?limit=1000), then patched by the all-jobs
// stream, which it follows from the list's last_event_id so no change is missed. The table
// is built once and updated in place, row by row, keyed by job id; it stays in the DOM (hidden)
// while a job or the editor is shown, so it is always current.

import { api, errorText } from './api.js';
import { STATUSES, fmtDuration, fmtTime, h, hostCounts, isFinal, jobDuration, jobHref, parseTime, statusBadge } from './dom.js';
import { follow } from './sse.js';
import { state } from './state.js';

/** The list asks for this many jobs: the newest. */
const LIST_LIMIT = 1000;
/** Queue positions are read again this long after the last change that moves them. */
const QUEUE_REFRESH_MS = 300;

const listeners = new Set();
const rows = new Map(); // id → {tr, cells, shown: {...}}
let ui = null;
let queueTimer = 0;
let queueBusy = false;
let queueAgain = false;
const fetching = new Set(); // ids being read after the stream announced them

/** onJobEvent calls fn with every status change the all-jobs stream brings; returns an off(). */
export function onJobEvent(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** rank orders statuses as a job goes through them: a change never goes back. */
function rank(status) {
  if (status === 'queued') return 0;
  if (status === 'running') return 1;
  return 2;
}

// ---- the table ---------------------------------------------------------------------------

/** jobsView is the list's element, built on first use. */
export function jobsView() {
  if (ui) return ui.el;
  const select = h(
    'select',
    { id: 'status-filter', on: { change: () => applyFilter() } },
    h('option', { value: '' }, 'All'),
    STATUSES.map((s) => h('option', { value: s }, s)),
  );
  const tbody = h('tbody');
  const empty = h('tr', { class: 'empty' }, h('td', { colspan: '6', class: 'muted' }, 'No jobs yet.'));
  const count = h('span', { class: 'muted', 'aria-live': 'polite' });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const table = h(
    'table',
    { class: 'jobs', 'aria-label': 'Jobs' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ['Name', 'Status', 'Priority', 'Queue / duration', 'Started', 'Hosts'].map((t) => h('th', { scope: 'col', text: t })),
      ),
    ),
    tbody,
  );
  tbody.append(empty);
  const el = h(
    'section',
    { class: 'view jobs-view' },
    h(
      'div',
      { class: 'toolbar' },
      h('h1', {}, 'Jobs'),
      h('label', { class: 'filter', for: 'status-filter' }, 'Status'),
      select,
      count,
    ),
    error,
    h('div', { class: 'table-wrap' }, table),
  );
  ui = { el, select, tbody, empty, count, error };
  setInterval(tickDurations, 1000);
  return el;
}

function makeRow(job) {
  const link = h('a', { href: jobHref(job.id) });
  const cells = {
    name: h('td', { class: 'c-name' }, link),
    status: h('td', { class: 'c-status' }),
    priority: h('td', { class: 'c-priority num' }),
    place: h('td', { class: 'c-place num' }),
    started: h('td', { class: 'c-started' }),
    hosts: h('td', { class: 'c-hosts' }),
  };
  const tr = h('tr', { 'data-id': job.id }, Object.values(cells));
  return { tr, cells, link, shown: {}, created: parseTime(job.created_at) || Date.now() };
}

/** renderRow brings a job's row up to date, touching only the cells that changed. */
function renderRow(job) {
  if (!ui) jobsView();
  let r = rows.get(job.id);
  if (!r) {
    r = makeRow(job);
    rows.set(job.id, r);
    insertSorted(r);
  }
  const s = r.shown;
  if (s.name !== job.name) {
    s.name = job.name;
    r.link.textContent = job.name || job.id;
  }
  if (s.status !== job.status || s.message !== job.message) {
    s.status = job.status;
    s.message = job.message;
    r.cells.status.replaceChildren(statusBadge(job.status));
    r.cells.status.title = job.message || '';
    r.tr.dataset.status = job.status;
    r.tr.hidden = Boolean(ui.select.value) && ui.select.value !== job.status;
  }
  if (s.priority !== job.priority) {
    s.priority = job.priority;
    r.cells.priority.textContent = job.priority ?? '';
  }
  const place = placeText(job);
  if (s.place !== place) {
    s.place = place;
    r.cells.place.textContent = place;
  }
  if (s.started !== job.started_at) {
    s.started = job.started_at;
    r.cells.started.textContent = fmtTime(job.started_at);
    r.cells.started.title = job.started_at || '';
  }
  const hostsKey = isFinal(job.status) && job.summary ? JSON.stringify(job.summary.hosts || {}) : '';
  if (s.hosts !== hostsKey) {
    s.hosts = hostsKey;
    r.cells.hosts.replaceChildren(hostsKey ? hostCounts(job.summary) || '' : '');
  }
}

/** placeText is the queue place of a queued job, else how long it ran (or runs). */
function placeText(job) {
  if (job.status === 'queued') {
    const pos = job.queue_position ? `#${job.queue_position} in queue` : 'queued';
    return job.waiting_for ? `${pos}, waiting` : pos;
  }
  return fmtDuration(jobDuration(job));
}

/** insertSorted puts a new row in its place: newest first, by creation time. */
function insertSorted(r) {
  const tbody = ui.tbody;
  let before = null;
  for (let tr = tbody.firstElementChild; tr; tr = tr.nextElementSibling) {
    const other = rows.get(tr.dataset.id);
    if (other && other.created <= r.created) {
      before = tr;
      break;
    }
  }
  if (before) tbody.insertBefore(r.tr, before);
  else tbody.insertBefore(r.tr, ui.empty);
  updateCount();
}

function applyFilter() {
  const want = ui.select.value;
  for (const r of rows.values()) r.tr.hidden = Boolean(want) && r.tr.dataset.status !== want;
  updateCount();
}

function updateCount() {
  const want = ui.select.value;
  let n = 0;
  for (const r of rows.values()) if (!want || r.tr.dataset.status === want) n++;
  ui.empty.hidden = n > 0;
  ui.empty.firstChild.textContent = want ? `No ${want} jobs.` : 'No jobs yet.';
  ui.count.textContent = `${n} job${n === 1 ? '' : 's'}`;
}

function tickDurations() {
  if (!ui || !ui.el.isConnected || ui.el.hidden) return;
  for (const job of state.jobs.values()) if (job.status === 'running') renderRow(job);
}

function removeRow(id) {
  const r = rows.get(id);
  if (r) {
    r.tr.remove();
    rows.delete(id);
    updateCount();
  }
}

// ---- the data ----------------------------------------------------------------------------

/**
 * upsert stores what the page learnt of a job (a list entry, a full job, or the patch of an
 * event) and redraws its row. A status never goes back: an older answer cannot undo a newer
 * change the stream already brought.
 */
export function upsert(job) {
  const old = state.jobs.get(job.id);
  let merged = job;
  if (old) {
    merged = { ...old, ...job };
    if (rank(job.status) < rank(old.status)) {
      for (const k of ['status', 'message', 'started_at', 'finished_at', 'exit_code', 'summary', 'queue_position', 'waiting_for']) {
        merged[k] = old[k];
      }
    }
  }
  if (merged.status !== 'queued') merged.queue_position = 0;
  state.jobs.set(job.id, merged);
  renderRow(merged);
  return merged;
}

/** forget drops a deleted job from the list. */
export function forget(id) {
  state.jobs.delete(id);
  removeRow(id);
}

/** loadJobs reads the list and answers the all-jobs stream's id to follow it from. */
export async function loadJobs() {
  jobsView();
  const r = await api(`/api/v1/jobs?limit=${LIST_LIMIT}`);
  const ids = new Set();
  for (const job of r.jobs || []) {
    ids.add(job.id);
    upsert(job);
  }
  for (const id of [...state.jobs.keys()]) if (!ids.has(id)) forget(id); // gone while signed out
  ui.error.hidden = true;
  return r.last_event_id ?? 0;
}

/** showListError says why the list could not be read. */
export function showListError(err) {
  jobsView();
  ui.error.textContent = `Cannot list the jobs: ${errorText(err)}`;
  ui.error.hidden = false;
}

/** startFeed follows the all-jobs stream from lastEventId; it reconnects by itself. */
export function startFeed(lastEventId, onState) {
  stopFeed();
  state.feed.follower = follow('/api/v1/events/stream', {
    lastEventId,
    onEvent: (ev) => {
      if (ev.type !== 'job_event') return;
      try {
        applyEvent(JSON.parse(ev.data));
      } catch (err) {
        console.error('all-jobs stream: cannot apply an event', err); // eslint-disable-line no-console
      }
    },
    onState: (s) => {
      state.feed.connected = s === 'open';
      onState(s);
    },
  });
}

export function stopFeed() {
  if (state.feed.follower) state.feed.follower.close();
  state.feed.follower = null;
  state.feed.connected = false;
}

function applyEvent(ev) {
  if (ev.type !== 'status_changed' || !ev.job_id) return;
  const old = state.jobs.get(ev.job_id);
  if (old && rank(ev.status) < rank(old.status)) return; // a change seen already, again
  const patch = { id: ev.job_id, status: ev.status, message: ev.message || '' };
  if (ev.name !== undefined) patch.name = ev.name;
  if (ev.priority !== undefined) patch.priority = ev.priority;
  if (ev.status === 'running' && !(old && old.started_at)) patch.started_at = ev.timestamp;
  if (isFinal(ev.status)) {
    if (!(old && old.finished_at)) patch.finished_at = ev.timestamp;
    if ('exit_code' in ev) patch.exit_code = ev.exit_code;
    if ('summary' in ev) patch.summary = ev.summary;
  }
  if (!old) {
    patch.created_at = ev.timestamp;
    upsert({ started_at: null, finished_at: null, exit_code: null, summary: null, ...patch });
    fetchJob(ev.job_id);
  } else {
    upsert(patch);
  }
  for (const fn of listeners) fn(ev);
  scheduleQueueRefresh();
}

/** fetchJob reads a job the stream announced, for what its event does not carry. */
async function fetchJob(id) {
  if (fetching.has(id)) return;
  fetching.add(id);
  try {
    upsert(await api(`/api/v1/jobs/${encodeURIComponent(id)}`));
  } catch (err) {
    if (err.status === 404) forget(id);
  } finally {
    fetching.delete(id);
  }
}

/** scheduleQueueRefresh reads the queued jobs' places again soon: the stream does not say them. */
function scheduleQueueRefresh() {
  let queued = false;
  for (const job of state.jobs.values()) {
    if (job.status === 'queued') {
      queued = true;
      break;
    }
  }
  if (!queued) return;
  clearTimeout(queueTimer);
  queueTimer = setTimeout(refreshQueue, QUEUE_REFRESH_MS);
}

async function refreshQueue() {
  if (queueBusy) {
    queueAgain = true;
    return;
  }
  queueBusy = true;
  try {
    const r = await api(`/api/v1/jobs?status=queued&limit=${LIST_LIMIT}`);
    for (const job of r.jobs || []) {
      const old = state.jobs.get(job.id);
      if (!old || old.status === 'queued') upsert(job);
    }
  } catch {
    // the next change asks again
  } finally {
    queueBusy = false;
    if (queueAgain) {
      queueAgain = false;
      scheduleQueueRefresh();
    }
  }
}
