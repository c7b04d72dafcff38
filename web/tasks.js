// The Tasks tab: a job's plays, tasks and per-host results as a compact tree, built from its
// events (GET /events for an ended job; /events/stream, resumable, while it runs). Events
// are queued and turned into DOM at most once a frame.

import { api, errorText } from './api.js';
import { COUNTS, fmtDuration, h } from './dom.js';
import { follow } from './sse.js';

/** Events turned into DOM in one frame at most: a long recorded run is built over a few. */
const PER_FRAME = 2000;

/** How each host result shows: the word Ansible's CLI uses, and its colour class. */
function resultMark(ev) {
  switch (ev.type) {
    case 'runner_on_ok':
      return ev.changed ? ['changed', 'changed'] : ['ok', 'ok'];
    case 'runner_on_failed':
      return ev.ignore_errors ? ['failed (ignored)', 'ignored'] : ['failed', 'failed'];
    case 'runner_on_skipped':
      return ['skipped', 'skipped'];
    case 'runner_on_unreachable':
      return ['unreachable', 'unreachable'];
    default:
      return ['…', 'pending'];
  }
}

export class TasksView {
  constructor(job) {
    this.base = `/api/v1/jobs/${encodeURIComponent(job.id)}`;
    this.queue = [];
    this.frame = 0;
    this.stream = null;
    this.ctrl = new AbortController();
    this.started = false;
    this.completed = false;
    this.seen = 0; // the last event id applied: an event is applied once
    this.play = null; // {ul}
    this.tasks = new Map(); // "play\0task" → the newest task node of that name
    this.task = null;
    this.tree = h('ul', { class: 'tree' });
    this.note = h('p', { class: 'muted tasks-note' }, 'Loading task events…');
    this.el = h('div', { class: 'tasks' }, this.note, this.tree);
  }

  /** start reads the job's events once: live ones over the stream, else the recorded list. */
  start(live) {
    if (this.started) return;
    this.started = true;
    if (live) this.openStream();
    else this.load();
  }

  destroy() {
    this.ctrl.abort();
    if (this.stream) this.stream.close();
    cancelAnimationFrame(this.frame);
  }

  async load() {
    try {
      const r = await api(`${this.base}/events`, { signal: this.ctrl.signal });
      for (const ev of r.events || []) this.push(ev, Number(ev.id));
      this.completed = true;
      this.schedule();
    } catch (err) {
      if (err.name !== 'AbortError') this.note.textContent = `Cannot read the task events: ${errorText(err)}`;
    }
  }

  openStream() {
    this.stream = follow(`${this.base}/events/stream`, {
      lastEventId: this.seen || '',
      onEvent: (ev) => {
        if (ev.type === 'job_event') {
          try {
            this.push(JSON.parse(ev.data), Number(ev.id));
          } catch {
            // not JSON: nothing to show
          }
        } else if (ev.type === 'completed') {
          this.completed = true;
          this.schedule();
        }
      },
      onState: (s) => {
        if (s === 'ended' || s === 'gone') {
          this.completed = true;
          this.schedule();
        }
      },
      done: () => this.completed,
    });
  }

  push(ev, id) {
    if (id && id <= this.seen) return;
    if (id) this.seen = id;
    this.queue.push(ev);
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.tick());
  }

  tick() {
    this.frame = 0;
    const batch = this.queue.splice(0, PER_FRAME);
    for (const ev of batch) this.apply(ev);
    if (this.queue.length > 0) this.schedule();
    const empty = this.tree.childElementCount === 0;
    this.note.hidden = !empty;
    if (empty) this.note.textContent = this.completed ? 'No task events.' : 'Waiting for task events…';
  }

  apply(ev) {
    switch (ev.type) {
      case 'playbook_on_start':
        this.tree.append(h('li', { class: 't-line t-playbook' }, 'PLAYBOOK ', h('b', { text: ev.playbook || '' })));
        break;
      case 'playbook_on_play_start':
        this.startPlay(ev.play || '');
        break;
      case 'playbook_on_task_start':
        this.startTask(ev);
        break;
      case 'runner_on_ok':
      case 'runner_on_failed':
      case 'runner_on_skipped':
      case 'runner_on_unreachable':
        this.result(ev);
        break;
      case 'runner_item_on_ok':
      case 'runner_item_on_failed':
      case 'runner_item_on_skipped':
        this.item(ev);
        break;
      case 'playbook_on_stats':
        this.recap(ev.hosts || {});
        break;
      case 'warning':
        this.tree.append(h('li', { class: 't-line t-warning' }, h('span', { class: 'mark mark-failed', text: 'warning' }), ' ', ev.message || ''));
        break;
      case 'status_changed':
        this.tree.append(
          h('li', { class: 't-line t-status' }, h('span', { class: `status status-${ev.status}`, text: ev.status || '' }), ' ', ev.message || ''),
        );
        break;
      default: // event types this page does not know are left out
    }
  }

  startPlay(name) {
    const ul = h('ul', { class: 't-tasks' });
    this.tree.append(h('li', { class: 't-play' }, h('details', { open: true }, h('summary', {}, 'PLAY ', h('b', { text: `[${name}]` })), ul)));
    this.play = { ul, name };
    this.task = null;
  }

  startTask(ev) {
    if (!this.play || this.play.name !== (ev.play || '')) this.startPlay(ev.play || '');
    const hosts = h('ul', { class: 't-hosts' });
    const summary = h(
      'summary',
      {},
      ev.handler ? 'RUNNING HANDLER ' : 'TASK ',
      h('b', { text: `[${ev.task || ''}]` }),
      ev.action ? h('span', { class: 'muted t-action', text: ev.action }) : null,
    );
    this.play.ul.append(h('li', { class: 't-task' }, h('details', { open: true }, summary, hosts)));
    this.task = { hosts, byHost: new Map() };
    this.tasks.set(`${ev.play || ''}\0${ev.task || ''}`, this.task);
  }

  /** taskOf finds the task a host event belongs to (with the free strategy, not always the newest). */
  taskOf(ev) {
    const t = this.tasks.get(`${ev.play || ''}\0${ev.task || ''}`);
    if (t) return t;
    this.startTask(ev);
    return this.task;
  }

  /** hostRow is the row of ev's host under its task, made on its first event. */
  hostRow(ev) {
    const task = this.taskOf(ev);
    const host = ev.host || '';
    let row = task.byHost.get(host);
    if (!row) {
      row = {
        mark: h('span', { class: 'mark mark-pending', text: '…' }),
        dur: h('span', { class: 'muted t-dur' }),
        msg: h('span', { class: 't-msg' }),
        itemsEl: h('span', { class: 'muted t-items' }),
        failures: null,
        items: { ok: 0, changed: 0, failed: 0, skipped: 0 },
      };
      row.li = h('li', { class: 't-host' }, row.mark, ' ', h('span', { class: 't-hostname', text: host }), ' ', row.dur, row.itemsEl, row.msg);
      task.hosts.append(row.li);
      task.byHost.set(host, row);
    }
    return row;
  }

  result(ev) {
    const row = this.hostRow(ev);
    const [word, cls] = resultMark(ev);
    row.mark.textContent = word;
    row.mark.className = `mark mark-${cls}`;
    row.dur.textContent = typeof ev.duration === 'number' ? fmtDuration(ev.duration) : '';
    const msg = ev.msg || (ev.type === 'runner_on_unreachable' || ev.type === 'runner_on_failed' ? ev.message || '' : '');
    row.msg.textContent = msg ? ` ${msg}` : '';
  }

  item(ev) {
    const row = this.hostRow(ev);
    const it = row.items;
    if (ev.type === 'runner_item_on_failed') it.failed++;
    else if (ev.type === 'runner_item_on_skipped') it.skipped++;
    else if (ev.changed) it.changed++;
    else it.ok++;
    const n = it.ok + it.changed + it.failed + it.skipped;
    const parts = ['ok', 'changed', 'failed', 'skipped'].filter((k) => it[k] > 0).map((k) => `${it[k]} ${k}`);
    row.itemsEl.textContent = ` ${n} item${n === 1 ? '' : 's'}: ${parts.join(', ')}`;
    if (ev.type === 'runner_item_on_failed') {
      if (!row.failures) {
        row.failures = h('ul', { class: 't-item-failures' });
        row.li.append(row.failures);
      }
      row.failures.append(
        h('li', {}, h('span', { class: 'mark mark-failed', text: 'failed' }), ' item ', h('code', { text: ev.item || '' }), ev.msg ? `: ${ev.msg}` : ''),
      );
    }
  }

  recap(hosts) {
    const names = Object.keys(hosts).sort();
    const body = names.map((name) =>
      h(
        'tr',
        {},
        h('th', { scope: 'row', text: name }),
        COUNTS.map((k) => h('td', { class: (hosts[name][k] || 0) > 0 ? `count-${k}` : 'zero', text: String(hosts[name][k] || 0) })),
      ),
    );
    const table = h(
      'table',
      { class: 'recap', 'aria-label': 'Play recap' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'host' }), COUNTS.map((k) => h('th', { scope: 'col', text: k })))),
      h('tbody', {}, body),
    );
    this.tree.append(h('li', { class: 't-recap' }, h('div', { class: 't-line' }, h('b', { text: 'PLAY RECAP' })), table));
  }
}
