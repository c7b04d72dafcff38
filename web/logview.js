// The log of one job: a virtual scroller over a log of any length, its live tail, and the
// toolbar (search, in logsearch.js, and download).
//
// Geometry. Every line is one row of ROW px. The log is `real` = total × ROW px tall, but the
// scrolled element holds a spacer of at most MAX_SPACER px (browsers cap an element's height:
// Firefox near 17.9 M px, a million lines at 18 px is 18 M). `top` is the position in the
// real log, in px, of the viewport's top edge; it maps to scrollTop linearly, so that the
// thumb stands where the lines are:
//     ratio = (real − H) / (spacer − H)        H: the viewport's height
//     top   = scrollTop × ratio,  scrollTop = top / ratio
// (ratio is 1 while the log fits under MAX_SPACER.) The first visible line is
// floor(top / ROW) + 1. Only lines a..b are in the DOM: the visible ones and MARGIN on each
// side, in one layer. Each row stands at (n − rowBase) × ROW inside it, and the layer at
// translateY(scrollTop + (rowBase − 1) × ROW − top) inside the spacer, so line n is
// (n − 1) × ROW − top below the viewport's top. With ratio 1 the layer stands still at
// (rowBase − 1) × ROW and the browser scrolls the rows natively between redraws.
// When the log is scaled, wheel and keys move `top` by real pixels themselves (a wheel notch
// would otherwise skip ratio × as many lines); dragging the thumb sets it from scrollTop.

import { api, errorText, saveFile } from './api.js';
import { h, jobHref } from './dom.js';
import { LineCache, pageOf, PAGE } from './linecache.js';
import { LogSearch, highlight } from './logsearch.js';
import { follow } from './sse.js';

/** Row height in px: must match .log-row's height in style.css. */
export const ROW = 18;
/** Tallest spacer: under every browser's element-height limit. */
const MAX_SPACER = 8_000_000;
/** Rows rendered above and below the visible ones. */
const MARGIN = 100;
/** Rows kept above the visible ones while a live tail is followed: new lines push the rows
 * up and out faster than anyone can scroll back to them. */
const FOLLOW_MARGIN = 4;
/** The rendered range is renewed once the visible rows come within this many of its edge. */
const SLACK = 30;
/** Rows stand at (n − rowBase) × ROW in the layer, so that rows added or removed never move
 * the others (the browser then lays out and paints only the new ones). Past this many lines
 * from rowBase, the range is rebuilt around a new one, to keep those offsets small. */
const REBASE = 50_000;
/** The log's height: what the window leaves below its top, less BOTTOM_GAP, at least MIN_HEIGHT. */
const MIN_HEIGHT = 240;
const BOTTOM_GAP = 16;
/** Page fetches in flight at once: HTTP/1.1 gives a host six connections, streams hold some. */
const MAX_FETCHES = 3;
/** A page is asked for again this long after its last fetch ended, at the soonest. */
const REFETCH_MS = 1000;
/** New lines from the stream are drawn at most this often (10 a second): a frame costs the
 * browser far more than the script that makes it, and a tail that moves ten times a second
 * reads as live. The user's own scrolling is drawn in the frame it happens in. */
const LIVE_FRAME_MS = 100;
/** Streamed lines waiting for a frame: beyond this (a hidden tab gets no frames) they are
 * stored at once, and drawn at the next frame. */
const MAX_PENDING = 4000;

export class LogView {
  /**
   * job: the job as GET /api/v1/jobs/{id} answered. onEnded(data) is called once when the
   * live stream says the job has ended (with the `completed` data, or null for a 204).
   */
  constructor(job, { onEnded } = {}) {
    this.id = job.id;
    this.name = job.name || 'job';
    this.base = `/api/v1/jobs/${encodeURIComponent(job.id)}`;
    this.total = job.log_lines || 0;
    this.onEnded = onEnded || (() => {});
    this.cache = new LineCache();
    this.live = job.status === 'queued' || job.status === 'running';
    this.seen = this.total; // the last line the stream delivered: where it resumes
    this.completed = false;

    this.top = 0; // px of the real log at the viewport's top
    this.expected = 0; // the scrollTop the page itself set last
    this.follow = true;
    this.hold = false; // a pointer is down in the log: do not move it under the user
    this.a = 0; // rendered lines a..b (a = 0: none)
    this.b = -1;
    this.rowBase = 1; // the line whose row stands at the layer's top; line n at (n − rowBase) × ROW
    this.layerY = NaN;
    this.shownTotal = -1;
    this.initialLine = 0; // a line to show once the view has a height
    this.fitted = 0;

    this.mark = 0; // the line the address names (#/jobs/<id>/L<n>)

    this.pendN = [];
    this.pendE = [];
    this.frame = 0;
    this.liveTimer = 0;
    this.lastTick = 0;
    this.wanted = [];
    this.inflight = new Set();
    this.fetchedAt = new Map(); // page → when its last fetch ended: none again within REFETCH_MS
    this.retryTimer = 0;
    this.ctrl = new AbortController();
    this.stream = null;
    this.destroyed = false;

    this.build();
  }

  build() {
    this.search = new LogSearch(this);
    this.info = h('span', { class: 'log-info' });
    this.download = h('button', { type: 'button', class: 'btn', on: { click: () => this.saveLog() } }, 'Download');
    this.rows = h('div', { class: 'log-rows' });
    this.spacer = h('div', { class: 'log-spacer' }, this.rows);
    this.empty = h('div', { class: 'log-empty', hidden: true });
    this.viewport = h('div', { class: 'log-viewport', role: 'region', 'aria-label': 'Log', tabindex: '0' }, this.spacer);
    this.jump = h('button', { type: 'button', class: 'btn jump', hidden: true, on: { click: () => this.jumpToEnd() } }, 'Jump to end');
    this.el = h(
      'div',
      { class: 'log-panel' },
      h('div', { class: 'log-toolbar' }, this.search.input, this.search.status, h('span', { class: 'spring' }), this.info, this.download),
      h('div', { class: 'log-wrap' }, this.viewport, this.empty, this.jump),
    );

    const opts = { signal: this.ctrl.signal };
    this.viewport.addEventListener('scroll', () => this.onScroll(), { ...opts, passive: true });
    this.viewport.addEventListener('wheel', (e) => this.onWheel(e), { ...opts, passive: false });
    this.viewport.addEventListener('keydown', (e) => this.onKey(e), opts);
    this.viewport.addEventListener('pointerdown', () => (this.hold = true), opts);
    window.addEventListener('pointerup', () => this.release(), opts);
    window.addEventListener('pointercancel', () => this.release(), opts);
    this.resize = new ResizeObserver(() => this.schedule());
    this.resize.observe(this.viewport);
    window.addEventListener('resize', () => this.fit(), opts);
  }

  /**
   * fit makes the log as tall as the window leaves below its top (at least MIN_HEIGHT), so
   * that the whole view, and the line it shows, is on screen without scrolling the page.
   */
  fit() {
    if (this.destroyed || !this.viewport.isConnected) return;
    if (this.viewport.getClientRects().length === 0) return; // hidden: fitted when shown
    const top = this.viewport.getBoundingClientRect().top + window.scrollY;
    const height = Math.max(MIN_HEIGHT, Math.floor(window.innerHeight - top - BOTTOM_GAP));
    if (height !== this.fitted) {
      this.fitted = height;
      this.viewport.style.height = `${height}px`;
    }
  }

  /** start shows line `line` (marked), or the tail when 0, and follows a live log. */
  start(line) {
    if (line) this.show(line);
    else this.schedule();
    if (this.live) this.openStream();
  }

  /** show scrolls to line n and marks it, as an address #/jobs/<id>/L<n> asks. */
  show(n) {
    const old = this.mark;
    this.mark = n;
    this.refill(old);
    this.refill(n);
    if (this.a === 0) {
      this.setFollow(false);
      this.initialLine = n; // placed by the first frame that has a height
      this.schedule();
    } else {
      this.flush();
      this.reveal(n); // where it is if it is in view (a click on its number), else centred
      if (n < this.total) this.setFollow(false);
    }
  }

  destroy() {
    this.destroyed = true;
    this.ctrl.abort();
    this.resize.disconnect();
    if (this.stream) this.stream.close();
    cancelAnimationFrame(this.frame);
    clearTimeout(this.liveTimer);
    clearTimeout(this.retryTimer);
  }

  // ---- the live tail -------------------------------------------------------------------

  openStream() {
    this.stream = follow(`${this.base}/logs/stream`, {
      lastEventId: this.seen,
      onEvent: (ev) => this.onStreamEvent(ev),
      onState: (s) => {
        if (s === 'ended' || s === 'gone') this.ended(null);
      },
      done: () => this.completed,
    });
  }

  onStreamEvent(ev) {
    if (ev.type === 'log') {
      const n = Number(ev.id);
      if (!(n > this.seen)) return; // seen already: never twice
      let e;
      try {
        e = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.seen = n;
      this.pendN.push(n);
      this.pendE.push(e);
      if (this.pendN.length > MAX_PENDING) this.flush();
      this.scheduleLive();
    } else if (ev.type === 'completed') {
      let data = null;
      try {
        data = JSON.parse(ev.data);
      } catch {
        // still the end
      }
      this.completed = true;
      this.ended(data);
    }
  }

  ended(data) {
    if (!this.live) return;
    this.live = false;
    this.schedule();
    this.onEnded(data);
  }

  /** flush stores the streamed lines waiting for a frame. */
  flush() {
    const ns = this.pendN;
    const es = this.pendE;
    if (ns.length === 0) return;
    for (let i = 0; i < ns.length; i++) this.cache.append(ns[i], es[i]);
    if (ns[ns.length - 1] > this.total) this.total = ns[ns.length - 1];
    this.pendN = [];
    this.pendE = [];
  }

  /** grow learns that the log has at least n lines (from a page's answer). */
  grow(n) {
    if (n > this.total) {
      this.total = n;
      this.schedule();
    }
  }

  // ---- geometry and drawing ------------------------------------------------------------

  geom() {
    const H = this.viewport.clientHeight;
    const real = this.total * ROW;
    const spacer = Math.min(real, MAX_SPACER);
    const maxTop = Math.max(0, real - H);
    const maxScroll = Math.max(0, spacer - H);
    const ratio = maxScroll > 0 && spacer < real ? maxTop / maxScroll : 1;
    return { H, spacer, maxTop, maxScroll, ratio };
  }

  /** sizeSpacer makes the spacer as tall as the geometry says, before any scrolling by it. */
  sizeSpacer(g) {
    if (this.total === this.shownTotal) return;
    this.shownTotal = this.total;
    this.spacer.style.height = `${g.spacer}px`;
    this.info.textContent = `${this.total.toLocaleString('en-US')} line${this.total === 1 ? '' : 's'}`;
  }

  /** scrollTo puts the real log's px `top` at the viewport's top (clamped). */
  scrollTo(top, g) {
    this.sizeSpacer(g);
    const t = Math.min(Math.max(0, top), g.maxTop);
    const st = g.ratio === 1 ? t : t / g.ratio;
    if (Math.abs(this.viewport.scrollTop - st) >= 0.5) this.viewport.scrollTop = st;
    this.expected = this.viewport.scrollTop;
    this.top = g.ratio === 1 ? this.expected : t;
  }

  schedule() {
    if (!this.frame && !this.destroyed) this.frame = requestAnimationFrame(() => this.tick());
  }

  /** scheduleLive draws streamed lines in a frame, LIVE_FRAME_MS after the last at the soonest. */
  scheduleLive() {
    if (this.frame || this.liveTimer || this.destroyed) return;
    const wait = this.lastTick + LIVE_FRAME_MS - performance.now();
    if (wait <= 0) {
      this.schedule();
      return;
    }
    this.liveTimer = setTimeout(() => {
      this.liveTimer = 0;
      this.schedule();
    }, wait);
  }

  /** tick runs at most once a frame: stores streamed lines, sizes, follows, draws. */
  tick() {
    this.frame = 0;
    if (this.destroyed) return;
    this.lastTick = performance.now();
    this.flush();
    const g = this.geom();
    this.sizeSpacer(g);
    this.empty.hidden = this.total > 0;
    if (this.total === 0) this.empty.textContent = this.live ? 'No output yet.' : 'No output.';
    if (g.H === 0) return; // the Log tab is hidden: place and draw once it is shown
    if (this.initialLine) {
      this.center(this.initialLine, g);
      this.initialLine = 0;
    } else if (this.follow && !this.hold) {
      this.scrollTo(Infinity, g);
    } else {
      this.scrollTo(this.top, g); // the ratio moves as the log grows; the lines must not
    }
    this.draw(g);
  }

  /** center scrolls line n to the middle of the viewport. */
  center(n, g) {
    this.scrollTo((Math.min(n, this.total) - 1) * ROW - (g.H - ROW) / 2, g);
    this.setFollow(this.top >= g.maxTop - 1);
  }

  /** reveal scrolls line n into view (to the middle) unless all of it is visible already. */
  reveal(n) {
    const g = this.geom();
    const y = (n - 1) * ROW;
    if (g.H > 0 && y >= this.top && y + ROW <= this.top + g.H) return;
    if (g.H === 0) this.initialLine = n;
    else this.center(n, g);
    this.draw(g);
  }

  draw(g) {
    const total = this.total;
    if (g.H === 0) return;
    if (total === 0) {
      this.setRange(0, -1);
      return;
    }
    const first = Math.min(total, Math.floor(this.top / ROW) + 1);
    const last = Math.min(total, Math.floor((this.top + g.H - 1) / ROW) + 1);
    // Following a fast tail, most new lines scroll past unseen: keep fewer rows above.
    const above = this.follow && this.live ? FOLLOW_MARGIN : MARGIN;
    const loFar = Math.max(1, first - above);
    const loNear = Math.max(1, first - Math.min(SLACK, above));
    const hiNear = Math.min(total, last + SLACK);
    const hiFar = Math.min(total, last + MARGIN);
    const a = this.a >= loFar && this.a <= loNear ? this.a : loFar;
    const b = this.b >= hiNear && this.b <= hiFar ? this.b : hiFar;
    this.setRange(a, b);
    const y = this.expected + (this.rowBase - 1) * ROW - this.top;
    if (y !== this.layerY) {
      this.layerY = y;
      this.rows.style.transform = `translateY(${y}px)`;
    }
    this.want(a, b);
  }

  /** setRange makes the DOM hold the rows of lines a..b, reusing those it has. */
  setRange(a, b) {
    const rows = this.rows;
    if (b < a) {
      rows.replaceChildren();
    } else if (this.a === 0 || this.b < this.a || a > this.b || b < this.a || Math.abs(a - this.rowBase) > REBASE) {
      this.rowBase = a;
      rows.replaceChildren(this.makeRows(a, b));
    } else {
      for (let n = this.a; n < a; n++) rows.firstChild.remove();
      for (let n = this.b; n > b; n--) rows.lastChild.remove();
      if (a < this.a) rows.prepend(this.makeRows(a, this.a - 1));
      if (b > this.b) rows.append(this.makeRows(this.b + 1, b));
    }
    this.a = b < a ? 0 : a;
    this.b = b < a ? -1 : b;
  }

  makeRows(a, b) {
    const frag = document.createDocumentFragment();
    for (let n = a; n <= b; n++) {
      const ln = document.createElement('a');
      ln.className = 'ln';
      ln.href = jobHref(this.id, n);
      ln.textContent = String(n);
      const row = document.createElement('div');
      row.append(ln, document.createElement('span'));
      row.style.top = `${(n - this.rowBase) * ROW}px`;
      this.fill(row, n);
      frag.append(row);
    }
    return frag;
  }

  /** fill writes line n's text and marks into its row. */
  fill(row, n) {
    const e = this.cache.get(n);
    const tx = row.lastChild;
    row.entry = e;
    let cls = 'log-row';
    if (!e) cls += ' pending';
    else if (e.stream === 'stderr') cls += ' stderr';
    if (n === this.mark) cls += ' marked';
    const hit = n === this.search.hit;
    if (hit) cls += ' hit';
    row.className = cls;
    tx.className = 'tx';
    const text = e ? e.line : '';
    if (hit && e) tx.replaceChildren(...highlight(text, this.search.query));
    else tx.textContent = text;
    if (e && e.timestamp) row.firstChild.title = e.timestamp;
  }

  /** refill redraws line n's row, if it is rendered. */
  refill(n) {
    if (n >= this.a && n <= this.b && n > 0) this.fill(this.rows.children[n - this.a], n);
  }

  /** refresh fills rows whose lines arrived (or changed) since they were drawn. */
  refresh() {
    const kids = this.rows.children;
    let missing = false;
    for (let i = 0; i < kids.length; i++) {
      const n = this.a + i;
      const e = this.cache.get(n);
      if (e !== kids[i].entry) this.fill(kids[i], n);
      if (!e) missing = true;
    }
    return missing;
  }

  // ---- fetching lines ------------------------------------------------------------------

  /** want asks for the pages of lines a..b that are not held, newest request first. */
  want(a, b) {
    if (b < a || a < 1) {
      this.wanted = [];
      return;
    }
    const pages = [];
    let last = -1;
    for (let n = a; n <= b; n++) {
      const p = pageOf(n);
      if (p !== last && !this.cache.get(n)) {
        pages.push(p);
        last = p;
      }
    }
    for (let p = pageOf(a); p <= pageOf(b); p++) this.cache.touch(p);
    // The visible lines' pages first: those around line `first` are in the middle.
    const mid = pageOf(Math.min(this.total, Math.floor(this.top / ROW) + 1));
    pages.sort((x, y) => Math.abs(x - mid) - Math.abs(y - mid));
    this.wanted = pages;
    this.pump();
  }

  pump() {
    const now = Date.now();
    for (const p of this.wanted) {
      if (this.inflight.size >= MAX_FETCHES) return;
      if (this.inflight.has(p) || now - (this.fetchedAt.get(p) || 0) < REFETCH_MS) continue;
      this.fetchPage(p);
    }
  }

  async fetchPage(p) {
    this.inflight.add(p);
    try {
      const r = await api(`${this.base}/logs/lines?from=${p * PAGE + 1}&limit=${PAGE}`, { signal: this.ctrl.signal });
      if (this.destroyed) return;
      const from = Number(r.from) || p * PAGE + 1;
      if (from === p * PAGE + 1 && Array.isArray(r.lines)) this.cache.put(p, r.lines);
      if (Number(r.total) > 0) this.grow(Number(r.total));
    } catch (err) {
      if (this.destroyed || err.name === 'AbortError') return;
      this.info.textContent = `cannot read the log: ${errorText(err)}`;
      this.shownTotal = -1;
    } finally {
      this.inflight.delete(p);
      this.fetchedAt.set(p, Date.now());
      if (this.fetchedAt.size > 1000) this.fetchedAt.clear();
    }
    if (this.destroyed) return;
    if (this.refresh() && !this.retryTimer) {
      // Lines are still missing (a failed fetch, a short answer): look again in a while,
      // not at once, so that a page that cannot be had is not asked for in a loop.
      this.retryTimer = setTimeout(() => {
        this.retryTimer = 0;
        this.schedule();
      }, REFETCH_MS);
    }
    this.want(this.a, this.b);
  }

  // ---- the user scrolling --------------------------------------------------------------

  setFollow(on) {
    this.follow = on;
    this.jump.hidden = on;
  }

  onScroll() {
    const st = this.viewport.scrollTop;
    if (Math.abs(st - this.expected) < 1) return; // the page's own scroll, or a sideways one
    const g = this.geom();
    this.expected = st;
    this.top = g.ratio === 1 ? st : Math.min(st * g.ratio, g.maxTop);
    this.setFollow(st >= g.maxScroll - 1);
    this.draw(g);
  }

  onWheel(e) {
    // Upward: stop following now, before the next frame can scroll the tail back down.
    if (e.deltaY < 0 && this.viewport.scrollTop > 0) this.setFollow(false);
    const g = this.geom();
    if (g.ratio === 1 || e.ctrlKey || e.deltaY === 0) return;
    e.preventDefault();
    const unit = e.deltaMode === 1 ? ROW : e.deltaMode === 2 ? g.H : 1;
    if (e.deltaX) this.viewport.scrollLeft += e.deltaX * unit;
    this.moveBy(e.deltaY * unit, g);
  }

  onKey(e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const g = this.geom();
    const page = Math.max(ROW, g.H - ROW);
    const moves = { ArrowDown: 3 * ROW, ArrowUp: -3 * ROW, PageDown: page, PageUp: -page, ' ': e.shiftKey ? -page : page };
    if (e.key === 'Home' || e.key === 'End' || e.key in moves) {
      if (e.key === 'End') {
        e.preventDefault();
        this.jumpToEnd();
        return;
      }
      if (e.key !== 'ArrowDown' && e.key !== 'PageDown' && !(e.key === ' ' && !e.shiftKey)) this.setFollow(false);
      if (g.ratio === 1) return; // the browser scrolls natively
      e.preventDefault();
      if (e.key === 'Home') this.moveBy(-Infinity, g);
      else this.moveBy(moves[e.key], g);
    }
  }

  moveBy(dy, g) {
    this.scrollTo(this.top + dy, g);
    this.setFollow(this.top >= g.maxTop - 1);
    this.draw(g);
  }

  release() {
    if (!this.hold) return;
    this.hold = false;
    this.schedule();
  }

  jumpToEnd() {
    this.setFollow(true);
    const g = this.geom();
    this.scrollTo(Infinity, g);
    this.draw(g);
  }

  // ---- download ------------------------------------------------------------------------

  async saveLog() {
    this.download.disabled = true;
    try {
      await saveFile(`${this.base}/logs`, `${fileName(this.name)}-${this.id.slice(0, 8)}.log`, this.ctrl.signal);
    } catch (err) {
      if (err.name !== 'AbortError') this.search.say(`download failed: ${errorText(err)}`, 'error');
    } finally {
      this.download.disabled = false;
    }
  }
}

/** fileName makes a job's name fit a file name. */
function fileName(name) {
  return name.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 60) || 'job';
}
