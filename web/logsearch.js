// The log's search: charond searches the whole log (/logs/search), the page shows one hit at
// a time. Enter goes to the next hit after the current one, Shift+Enter to the one before;
// past either end the search goes on from the other end, once.

import { api, errorText } from './api.js';
import { h } from './dom.js';

export class LogSearch {
  /** view is the LogView it searches: its lines, its cache and its scrolling. */
  constructor(view) {
    this.view = view;
    this.query = ''; // the text the current hit was found for
    this.hit = 0; // the current hit's line; 0: none
    this.ordinal = 0; // which hit it is, counting from line 1; 0: not known
    this.seq = 0; // bumped by every search and edit, so a stale answer is dropped
    this.input = h('input', {
      type: 'search',
      'aria-label': 'Search log',
      placeholder: 'Search log — Enter: next, Shift+Enter: previous',
      autocomplete: 'off',
      spellcheck: 'false',
      on: { keydown: (e) => this.onKey(e), input: () => this.reset() },
    });
    this.status = h('span', { class: 'search-status', 'aria-live': 'polite' });
  }

  onKey(e) {
    if (e.key !== 'Enter') return;
    e.preventDefault();
    this.find(e.shiftKey);
  }

  /** reset forgets the hit: the text to search for changed. */
  reset() {
    this.seq++;
    const old = this.hit;
    this.hit = 0;
    this.ordinal = 0;
    this.query = '';
    this.say('', '');
    this.view.refill(old);
  }

  async find(backward) {
    const view = this.view;
    const q = this.input.value;
    if (q === '') return;
    if (q !== this.query) {
      this.reset();
      this.query = q;
    }
    const seq = ++this.seq;
    const total = Math.max(view.total, 1);
    let from = backward ? (this.hit ? this.hit - 1 : total) : this.hit ? this.hit + 1 : 1;
    let edge = backward ? from >= total : from <= 1; // started at an end: no need to wrap
    let wrapped = false;
    this.say('searching…', '');
    for (;;) {
      let r = { matches: [], next: 0 };
      if (from >= 1 && from <= total) {
        try {
          const args = `q=${encodeURIComponent(q)}&from=${from}&limit=1${backward ? '&backward=1' : ''}`;
          r = await api(`${view.base}/logs/search?${args}`, { signal: view.ctrl.signal });
        } catch (err) {
          if (seq === this.seq && err.name !== 'AbortError') this.say(`search failed: ${errorText(err)}`, 'error');
          return;
        }
      }
      if (seq !== this.seq) return; // typed on, or searched again meanwhile
      const matches = Array.isArray(r.matches) ? r.matches : [];
      if (matches.length > 0) {
        const m = matches.reduce((best, x) => (backward ? (x.n > best.n ? x : best) : x.n < best.n ? x : best));
        this.show(m, backward, wrapped);
        return;
      }
      if (r.next > 0 && r.next !== from) {
        from = r.next; // the server stopped before an end: go on from where it did
        continue;
      }
      if (edge || wrapped) {
        this.hit = 0;
        this.ordinal = 0;
        this.say('no match', 'none');
        return;
      }
      wrapped = true;
      edge = true;
      from = backward ? total : 1;
    }
  }

  /** show makes match m the hit: counted, marked, and scrolled into view. */
  show(m, backward, wrapped) {
    const view = this.view;
    const old = this.hit;
    if (!backward) this.ordinal = this.hit === 0 || wrapped ? 1 : this.ordinal ? this.ordinal + 1 : 0;
    else this.ordinal = this.hit === 0 || wrapped || this.ordinal <= 1 ? 0 : this.ordinal - 1;
    this.hit = m.n;
    const which = this.ordinal ? `hit ${this.ordinal}` : 'hit';
    this.say(`${which} · line ${m.n.toLocaleString('en-US')}${wrapped ? ' (wrapped)' : ''}`, 'found');
    if (typeof m.line === 'string') view.cache.hint(m.n, m.line);
    view.grow(m.n);
    view.flush();
    view.setFollow(false);
    view.refill(old);
    view.refill(m.n);
    view.reveal(m.n);
  }

  /** say shows what the search did; kind: '', found, none or error. */
  say(text, kind) {
    this.status.textContent = text;
    this.status.className = `search-status${kind ? ` search-${kind}` : ''}`;
  }
}

/** highlight splits text around case-insensitive occurrences of q, the matches in <mark>. */
export function highlight(text, q) {
  const lower = text.toLowerCase();
  const lq = q.toLowerCase();
  if (!lq || lower.length !== text.length) return [text]; // case folding moved the offsets
  const out = [];
  let at = 0;
  for (let i = lower.indexOf(lq); i >= 0 && out.length < 200; i = lower.indexOf(lq, i + lq.length)) {
    if (i > at) out.push(text.slice(at, i));
    out.push(h('mark', { text: text.slice(i, i + lq.length) }));
    at = i + lq.length;
  }
  out.push(text.slice(at));
  return out;
}
