// The lines of one job's log that the page holds: never the whole log. Three bounded parts:
//   pages   aligned runs of PAGE lines fetched with /logs/lines (or filled by the stream), in
//           an LRU of at most MAX_PAGES pages and MAX_CHARS characters;
//   recent  the newest lines the live stream delivered, at most RECENT_MAX of them, so a
//           followed tail never has to be fetched again;
//   hints   single lines a search hit carried, shown until their page arrives.
// An entry is what charond sends for a line: {line, timestamp, stream}.

/** Lines per page: one /logs/lines request. */
export const PAGE = 500;
/** Pages kept at most: 100,000 lines. */
const MAX_PAGES = 200;
/** Characters kept in pages at most (about 64 MB as UTF-16), however long the lines are. */
const MAX_CHARS = 32_000_000;
/** Streamed lines kept beside the pages: trimmed back to RECENT_KEEP once it holds this many. */
const RECENT_MAX = 10_000;
const RECENT_KEEP = 5_000;
/** Characters kept in recent lines at most. */
const RECENT_CHARS = 8_000_000;
/** Search hits remembered. */
const MAX_HINTS = 64;

export function pageOf(n) {
  return Math.floor((n - 1) / PAGE);
}

export class LineCache {
  constructor() {
    /** @type {Map<number, {lines: object[], chars: number}>} in LRU order, oldest first */
    this.pages = new Map();
    this.chars = 0;
    this.recent = [];
    this.recentStart = 1; // the line number of recent[0]
    this.recentChars = 0;
    this.hints = new Map();
  }

  /** get answers line n's entry, or undefined if the page does not hold it. */
  get(n) {
    const p = pageOf(n);
    const pg = this.pages.get(p);
    if (pg) {
      const e = pg.lines[n - 1 - p * PAGE];
      if (e) return e;
    }
    const r = n - this.recentStart;
    if (r >= 0 && r < this.recent.length) return this.recent[r];
    return this.hints.get(n);
  }

  /** touch marks page p as just used, so the LRU keeps it longest. */
  touch(p) {
    const pg = this.pages.get(p);
    if (pg) {
      this.pages.delete(p);
      this.pages.set(p, pg);
    }
  }

  /**
   * put stores the lines a fetch answered for page p (its first lines; fewer than PAGE at the
   * end of the log). Every page is a run from its first line without gaps, so whichever of
   * the old and new runs is longer holds the other: keep it, then let streamed lines that go
   * on from it extend it.
   */
  put(p, lines) {
    const old = this.pages.get(p);
    if (old && old.lines.length >= lines.length) {
      this.touch(p);
      return;
    }
    const run = lines.slice(0, PAGE);
    const first = p * PAGE + 1;
    for (let n = first + run.length; run.length < PAGE; n++) {
      const r = n - this.recentStart;
      if (r < 0 || r >= this.recent.length) break;
      run.push(this.recent[r]);
    }
    if (old) this.drop(p);
    const pg = { lines: run, chars: charsOf(run) };
    this.pages.set(p, pg);
    this.chars += pg.chars;
    for (let i = 0; i < run.length; i++) this.hints.delete(first + i);
    this.evict();
  }

  /** append stores line n from the live stream; lines come in order, each once. */
  append(n, e) {
    const len = e.line ? e.line.length : 0;
    const end = this.recentStart + this.recent.length;
    if (n < end) return; // already held
    if (n > end) {
      // A gap (lines that came by fetch meanwhile): start a new run here.
      this.recent = [];
      this.recentStart = n;
      this.recentChars = 0;
    }
    this.recent.push(e);
    this.recentChars += len;
    if (this.recent.length > RECENT_MAX || this.recentChars > RECENT_CHARS) this.trimRecent();

    const p = pageOf(n);
    const off = n - 1 - p * PAGE;
    const pg = this.pages.get(p);
    if (pg) {
      if (pg.lines.length === off) {
        pg.lines.push(e);
        pg.chars += len;
        this.chars += len;
      }
    } else if (off === 0) {
      this.pages.set(p, { lines: [e], chars: len });
      this.chars += len;
      this.evict();
    }
  }

  /** hint remembers a line a search hit carried, until its page arrives. */
  hint(n, line) {
    if (this.get(n)) return;
    this.hints.set(n, { line, stream: '', hint: true });
    while (this.hints.size > MAX_HINTS) this.hints.delete(this.hints.keys().next().value);
  }

  trimRecent() {
    let drop = Math.max(0, this.recent.length - RECENT_KEEP);
    let chars = this.recentChars;
    for (let i = 0; i < drop; i++) chars -= this.recent[i].line ? this.recent[i].line.length : 0;
    while (chars > RECENT_CHARS / 2 && drop < this.recent.length - 1) {
      chars -= this.recent[drop].line ? this.recent[drop].line.length : 0;
      drop++;
    }
    this.recent = this.recent.slice(drop);
    this.recentStart += drop;
    this.recentChars = chars;
  }

  drop(p) {
    const pg = this.pages.get(p);
    if (!pg) return;
    this.chars -= pg.chars;
    this.pages.delete(p);
  }

  /** evict forgets the least recently used pages while over either bound (keeping one). */
  evict() {
    while (this.pages.size > MAX_PAGES || (this.chars > MAX_CHARS && this.pages.size > 1)) {
      this.drop(this.pages.keys().next().value);
    }
  }
}

function charsOf(lines) {
  let n = 0;
  for (const e of lines) n += e.line ? e.line.length : 0;
  return n;
}
