// One job's page, #/jobs/<id>[/L<n>]: its status, spec, command and summary, the actions
// that apply to it, and two tabs: the live Log and the Tasks tree. The job is read again
// whenever the all-jobs stream says it changed.

import { api, errorText } from './api.js';
import {
  COUNTS,
  fmtDuration,
  fmtTime,
  h,
  isFinal,
  jobDuration,
  jobHref,
  shellQuote,
  statusBadge,
} from './dom.js';
import { forget, onJobEvent, upsert } from './jobs.js';
import { LogView } from './logview.js';
import { TasksView } from './tasks.js';

/** A job that could not be read (charond restarting) is read again after this long. */
const LOAD_RETRY_MS = 2000;

/** The recap's counts, abbreviated to fit the side column. */
const SHORT = { ok: 'ok', changed: 'chg', unreachable: 'unr', failed: 'fail', skipped: 'skip', rescued: 'resc', ignored: 'ign' };

/** A change the stream announces is read after this long, so a burst costs one request. */
const REFETCH_MS = 150;

export class JobPage {
  constructor(route) {
    this.id = route.id;
    this.line = route.line || 0;
    this.job = null;
    this.log = null;
    this.tasks = null;
    this.destroyed = false;
    this.refetchTimer = 0;
    this.retryTimer = 0;
    this.ticker = 0;
    this.ctrl = new AbortController();
    this.el = h('section', { class: 'view job-view' }, h('p', { class: 'muted' }, 'Loading job…'));
    this.off = onJobEvent((ev) => {
      if (ev.job_id === this.id) this.refetchSoon();
    });
    this.load();
  }

  /** update follows a new address for the same job: a line to show. */
  update(route) {
    this.line = route.line || 0;
    if (this.log && this.line) {
      this.selectTab('log');
      this.log.show(this.line);
    }
  }

  destroy() {
    this.destroyed = true;
    this.off();
    this.ctrl.abort();
    clearTimeout(this.refetchTimer);
    clearTimeout(this.retryTimer);
    clearInterval(this.ticker);
    if (this.log) this.log.destroy();
    if (this.tasks) this.tasks.destroy();
  }

  async load() {
    let job;
    try {
      job = await api(`/api/v1/jobs/${encodeURIComponent(this.id)}`, { signal: this.ctrl.signal });
    } catch (err) {
      if (this.destroyed || err.name === 'AbortError') return;
      const what = err.status === 404 ? `Job not found: ${this.id}` : `Cannot read the job: ${errorText(err)}`;
      this.el.replaceChildren(h('p', { class: 'error', role: 'alert' }, what));
      if (err.status !== 404 && err.status !== 401) this.retryTimer = setTimeout(() => this.load(), LOAD_RETRY_MS);
      return;
    }
    if (this.destroyed) return;
    // The log view starts from this answer as it is: its status and its line count belong
    // together (the list's copy may already hold a newer status from the stream).
    this.build(upsert(job), job);
  }

  refetchSoon() {
    clearTimeout(this.refetchTimer);
    this.refetchTimer = setTimeout(() => this.refetch(), REFETCH_MS);
  }

  async refetch() {
    try {
      const job = await api(`/api/v1/jobs/${encodeURIComponent(this.id)}`, { signal: this.ctrl.signal });
      if (!this.destroyed) this.render(upsert(job));
    } catch (err) {
      if (this.destroyed || err.name === 'AbortError') return;
      if (err.status === 404) this.showError('This job has been deleted.');
    }
  }

  // ---- building ------------------------------------------------------------------------

  /** build lays out the page for job (as the list knows it); fresh is charond's answer. */
  build(job, fresh) {
    this.title = h('h1', {});
    this.badge = h('span', {});
    this.message = h('p', { class: 'job-message' });
    this.error = h('p', { class: 'error', role: 'alert', hidden: true });

    this.cancelBtn = h('button', { type: 'button', class: 'btn', on: { click: () => this.cancel() } }, 'Cancel');
    this.failedOnly = h('input', { type: 'checkbox', id: `failed-only-${this.id}` });
    this.relaunchBtn = h('button', { type: 'button', class: 'btn', on: { click: () => this.relaunch() } }, 'Relaunch');
    this.relaunchBox = h(
      'span',
      { class: 'relaunch' },
      this.relaunchBtn,
      h('label', { class: 'check', for: `failed-only-${this.id}` }, this.failedOnly, 'Failed hosts only'),
    );
    // Delete asks once more by becoming "Confirm delete" (Escape or leaving it disarms it).
    this.deleteBtn = h(
      'button',
      {
        type: 'button',
        class: 'btn danger',
        on: {
          click: () => this.deleteClicked(),
          keydown: (e) => e.key === 'Escape' && this.armDelete(false),
          blur: () => setTimeout(() => this.deleteBtn && document.activeElement !== this.deleteBtn && this.armDelete(false), 200),
        },
      },
      'Delete',
    );
    this.actions = h('div', { class: 'actions' }, this.cancelBtn, this.relaunchBox, this.deleteBtn);

    this.runCard = h('dl', { class: 'facts' });
    this.specCard = h('dl', { class: 'facts' });
    this.summaryCard = h('section', { class: 'card summary', hidden: true });

    this.log = new LogView(fresh, { onEnded: () => this.refetchSoon() });
    this.tasks = new TasksView(fresh);
    const tab = (name, label) =>
      h(
        'button',
        {
          type: 'button',
          role: 'tab',
          id: `tab-${name}`,
          'aria-controls': `panel-${name}`,
          class: 'tab',
          on: { click: () => this.selectTab(name), keydown: (e) => this.tabKey(e) },
        },
        label,
      );
    this.tabs = { log: tab('log', 'Log'), tasks: tab('tasks', 'Tasks') };
    this.panels = {
      log: h('div', { role: 'tabpanel', id: 'panel-log', 'aria-labelledby': 'tab-log', class: 'panel' }, this.log.el),
      tasks: h('div', { role: 'tabpanel', id: 'panel-tasks', 'aria-labelledby': 'tab-tasks', class: 'panel', hidden: true }, this.tasks.el),
    };

    this.el.replaceChildren(
      h('p', { class: 'crumbs muted mono', text: `job ${job.id}` }),
      h('header', { class: 'job-head' }, this.title, this.badge, h('span', { class: 'spring' }), this.actions),
      this.message,
      this.error,
      h(
        'div',
        { class: 'job-body' },
        h(
          'div',
          { class: 'job-main' },
          h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Views' }, this.tabs.log, this.tabs.tasks),
          this.panels.log,
          this.panels.tasks,
        ),
        h(
          'div',
          { class: 'job-side' },
          this.summaryCard,
          h('section', { class: 'card' }, h('h2', {}, 'Run'), this.runCard),
          h('section', { class: 'card' }, h('h2', {}, 'Spec'), this.specCard),
        ),
      ),
    );
    this.selectTab('log');
    this.render(job);
    this.log.start(this.line);
    this.ticker = setInterval(() => {
      const dd = this.runFacts && this.runFacts.get('Duration');
      if (dd && this.job && this.job.status === 'running') dd.textContent = fmtDuration(jobDuration(this.job));
    }, 1000);
  }

  render(job) {
    this.job = job;
    document.title = `${job.name || job.id} · charond`;
    this.title.textContent = job.name || job.id;
    this.badge.replaceChildren(statusBadge(job.status));
    this.message.textContent = job.message || '';
    const ended = isFinal(job.status);
    this.cancelBtn.hidden = ended;
    this.relaunchBox.hidden = !ended;
    this.deleteBtn.hidden = !ended;
    if (!ended) this.armDelete(false);
    this.renderRun(job);
    this.renderSpec(job);
    this.renderSummary(job.summary);
    this.log.grow(job.log_lines || 0);
    this.log.fit();
  }

  renderRun(job) {
    const rows = [
      ['Status', h('span', {}, statusBadge(job.status), job.message ? ` ${job.message}` : '')],
      ['Exit code', job.exit_code === null || job.exit_code === undefined ? null : String(job.exit_code)],
      ['Queue position', job.status === 'queued' && job.queue_position ? String(job.queue_position) : null],
      ['Waiting for', job.waiting_for ? h('a', { href: jobHref(job.waiting_for), class: 'mono', text: job.waiting_for }) : null],
      ['Created', fmtTime(job.created_at)],
      ['Started', job.started_at ? fmtTime(job.started_at) : null],
      ['Finished', job.finished_at ? fmtTime(job.finished_at) : null],
      ['Duration', job.started_at ? fmtDuration(jobDuration(job)) : null],
      ['Relaunch of', job.relaunch_of ? h('a', { href: jobHref(job.relaunch_of), class: 'mono', text: job.relaunch_of }) : null],
      ['Command', job.command && job.command.length ? h('pre', { class: 'code', text: shellQuote(job.command) }) : null],
      ['Artifacts', job.artifacts ? h('pre', { class: 'code', text: JSON.stringify(job.artifacts, null, 2) }) : null],
    ];
    this.runFacts = fillFacts(this.runCard, rows);
  }

  renderSpec(job) {
    const embedded = typeof job.playbook === 'string' && job.playbook.includes('\n');
    const list = (xs) => (Array.isArray(xs) && xs.length ? xs.join(', ') : null);
    const secs = (s) => (s ? fmtDuration(s) : null);
    let inventory = null;
    if (Array.isArray(job.inventory)) inventory = job.inventory.join(', ');
    else if (typeof job.inventory === 'string') inventory = job.inventory;
    else if (job.inventory) inventory = h('pre', { class: 'code', text: JSON.stringify(job.inventory, null, 2) });
    const rows = [
      ['Description', job.description || null],
      [
        'Playbook',
        embedded
          ? h('details', {}, h('summary', {}, 'embedded playbook'), h('pre', { class: 'code', text: job.playbook }))
          : job.playbook || null,
      ],
      ['Inventory', inventory],
      [
        'Variables',
        job.variables && Object.keys(job.variables).length ? h('pre', { class: 'code', text: JSON.stringify(job.variables, null, 2) }) : null,
      ],
      ['Priority', job.priority === undefined ? null : String(job.priority)],
      ['Timeout', secs(job.timeout)],
      ['Idle timeout', secs(job.idle_timeout)],
      ['Concurrency', job.concurrency || null],
      ['Limit', job.limit || null],
      ['Tags', list(job.tags)],
      ['Skip tags', list(job.skip_tags)],
      ['Check', job.check ? 'yes' : null],
      ['Diff', job.diff ? 'yes' : null],
      ['Verbosity', job.verbosity ? String(job.verbosity) : null],
      ['Forks', job.forks ? String(job.forks) : null],
      ['Start at task', job.start_at_task || null],
    ];
    fillFacts(this.specCard, rows);
  }

  renderSummary(summary) {
    const hosts = summary && summary.hosts ? Object.keys(summary.hosts).sort() : [];
    const failed = summary && Array.isArray(summary.failed_tasks) ? summary.failed_tasks : [];
    this.summaryCard.hidden = hosts.length === 0 && failed.length === 0;
    if (this.summaryCard.hidden) return;
    const table = h(
      'table',
      { class: 'recap', 'aria-label': 'Host summary' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Host'), COUNTS.map((k) => h('th', { scope: 'col' }, h('abbr', { title: k, text: SHORT[k] }))))),
      h(
        'tbody',
        {},
        hosts.map((name) =>
          h(
            'tr',
            {},
            h('th', { scope: 'row', text: name }),
            COUNTS.map((k) => {
              const n = Number(summary.hosts[name][k]) || 0;
              return h('td', { class: n > 0 ? `num count-${k}` : 'num zero', text: String(n) });
            }),
          ),
        ),
      ),
    );
    const failures = failed.length
      ? h(
          'div',
          {},
          h('h3', {}, 'Failed tasks'),
          h(
            'ul',
            { class: 'failed-tasks' },
            failed.map((t) =>
              h(
                'li',
                {},
                h('span', { class: 'mark mark-failed', text: t.host || '' }),
                ' ',
                t.play ? h('span', { class: 'muted', text: `${t.play} › ` }) : null,
                h('b', { text: t.task || '' }),
                t.message ? h('div', { class: 'mono failed-msg', text: t.message }) : null,
              ),
            ),
          ),
        )
      : null;
    this.summaryCard.replaceChildren(h('h2', {}, 'Summary'), ...(hosts.length ? [h('div', { class: 'table-wrap' }, table)] : []), ...(failures ? [failures] : []));
  }

  // ---- tabs ----------------------------------------------------------------------------

  selectTab(name) {
    for (const [k, tab] of Object.entries(this.tabs)) {
      const on = k === name;
      tab.setAttribute('aria-selected', String(on));
      tab.tabIndex = on ? 0 : -1;
      this.panels[k].hidden = !on;
    }
    if (name === 'tasks') this.tasks.start(this.job ? !isFinal(this.job.status) : false);
    else this.log.fit();
  }

  tabKey(e) {
    if (e.key !== 'ArrowLeft' && e.key !== 'ArrowRight') return;
    e.preventDefault();
    const next = this.tabs.log.getAttribute('aria-selected') === 'true' ? 'tasks' : 'log';
    this.selectTab(next);
    this.tabs[next].focus();
  }

  // ---- actions -------------------------------------------------------------------------

  showError(text) {
    this.error.textContent = text;
    this.error.hidden = !text;
  }

  async act(button, fn) {
    this.showError('');
    button.disabled = true;
    try {
      await fn();
    } catch (err) {
      if (!this.destroyed && err.name !== 'AbortError') this.showError(errorText(err));
    } finally {
      button.disabled = false;
    }
  }

  cancel() {
    return this.act(this.cancelBtn, async () => {
      const job = await api(`/api/v1/jobs/${encodeURIComponent(this.id)}/cancel`, { method: 'POST' });
      if (!this.destroyed) this.render(upsert(job));
    });
  }

  relaunch() {
    const hosts = this.failedOnly.checked ? 'failed' : 'all';
    return this.act(this.relaunchBtn, async () => {
      const job = await api(`/api/v1/jobs/${encodeURIComponent(this.id)}/relaunch`, {
        method: 'POST',
        type: 'application/json',
        body: JSON.stringify({ hosts }),
      });
      upsert(job);
      location.hash = jobHref(job.id);
    });
  }

  armDelete(on) {
    this.deleteArmed = on;
    this.deleteBtn.textContent = on ? 'Confirm delete' : 'Delete';
    this.deleteBtn.classList.toggle('solid', on);
  }

  deleteClicked() {
    if (!this.deleteArmed) {
      this.armDelete(true);
      this.deleteBtn.focus();
      return;
    }
    this.armDelete(false);
    return this.act(this.deleteBtn, async () => {
      await api(`/api/v1/jobs/${encodeURIComponent(this.id)}`, { method: 'DELETE' });
      forget(this.id);
      location.hash = '#/';
    });
  }
}

/** fillFacts writes [label, value] pairs into a <dl>, leaving out null values; it answers
 * the <dd> of each label. */
function fillFacts(dl, rows) {
  const items = [];
  const dds = new Map();
  for (const [label, value] of rows) {
    if (value === null || value === undefined || value === '') continue;
    const dd = h('dd', {}, value);
    dds.set(label, dd);
    items.push(h('div', { class: 'fact' }, h('dt', {}, label), dd));
  }
  dl.replaceChildren(...items);
  return dds;
}
