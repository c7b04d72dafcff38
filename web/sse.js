// Server-Sent Events over fetch: EventSource cannot send the Authorization header, and the
// token must never go into a URL. SSEParser implements the format (the HTML standard's
// "event stream interpretation"); follow keeps one stream open, reconnecting with back-off
// and Last-Event-ID as EventSource would.

import { headers, unauthorized, url } from './api.js';

/**
 * SSEParser turns decoded text, fed in chunks of any size, into events
 * {type, data, id}. Lines end with CRLF, LF or CR (a CRLF may be split across chunks);
 * a line starting with ':' is a comment; `data:` lines are joined with '\n'; a blank line
 * dispatches. lastEventId persists across events, as the standard says, and starts at the id
 * the stream was resumed from, so an event without an id (`connected`) keeps it.
 */
export class SSEParser {
  constructor(onEvent, lastEventId = '') {
    this.onEvent = onEvent;
    this.buf = '';
    this.skipLF = false; // the last chunk ended in CR: a LF starting the next one belongs to it
    this.type = '';
    this.data = [];
    this.lastEventId = lastEventId;
    this.idBuf = lastEventId;
    this.retry = null;
  }

  feed(text) {
    if (this.skipLF && text.length > 0) {
      if (text[0] === '\n') text = text.slice(1);
      this.skipLF = false;
    }
    const buf = this.buf + text;
    const eol = /[\r\n]/g;
    let start = 0;
    let m;
    while ((m = eol.exec(buf)) !== null) {
      let end = m.index;
      const line = buf.slice(start, end);
      if (buf[end] === '\r') {
        if (end + 1 < buf.length) {
          if (buf[end + 1] === '\n') end++;
        } else {
          this.skipLF = true;
        }
      }
      start = end + 1;
      eol.lastIndex = start;
      this.line(line);
    }
    this.buf = buf.slice(start);
  }

  line(line) {
    if (line === '') {
      this.dispatch();
      return;
    }
    if (line[0] === ':') return; // a comment: charond's `: ping` heartbeat
    const colon = line.indexOf(':');
    let field = line;
    let value = '';
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
    }
    switch (field) {
      case 'event':
        this.type = value;
        break;
      case 'data':
        this.data.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.idBuf = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default: // unknown fields are ignored
    }
  }

  dispatch() {
    this.lastEventId = this.idBuf;
    if (this.data.length === 0) {
      this.type = '';
      return;
    }
    const ev = { type: this.type || 'message', data: this.data.join('\n'), id: this.lastEventId };
    this.type = '';
    this.data = [];
    this.onEvent(ev);
  }
}

/** Reconnection delays: 1 s, doubling, at most 10 s; back to 1 s once a stream has answered. */
const FIRST_DELAY = 1000;
const MAX_DELAY = 10000;

/**
 * follow reads the stream at path until it ends or close() is called. opts:
 *   lastEventId  where to resume from (sent as Last-Event-ID; '' for the start)
 *   onEvent(ev)  each event, {type, data, id}
 *   onState(s)   'open', 'retrying', 'ended' (204, or done() said so), 'gone' (404 or
 *                another refusal that retrying will not fix)
 *   done()       asked when a stream closes: true stops (the job's `completed` was seen)
 * A 401 asks for sign-in and stops. The caller owns the follower and closes it.
 */
export function follow(path, opts) {
  let lastId = opts.lastEventId === undefined || opts.lastEventId === null ? '' : String(opts.lastEventId);
  let closed = false;
  let ctrl = null;
  let timer = 0;
  let delay = FIRST_DELAY;
  const setState = (s) => opts.onState && opts.onState(s);

  const retry = (wait) => {
    if (closed) return;
    setState('retrying');
    timer = setTimeout(connect, wait ?? delay);
    delay = Math.min(delay * 2, MAX_DELAY);
  };

  async function connect() {
    if (closed) return;
    ctrl = new AbortController();
    const hs = headers({ Accept: 'text/event-stream' });
    if (lastId !== '') hs['Last-Event-ID'] = lastId;
    let res;
    try {
      res = await fetch(url(path), { headers: hs, signal: ctrl.signal, cache: 'no-store' });
    } catch {
      retry(); // charond is down or restarting; an abort sets closed first
      return;
    }
    if (closed) return;
    if (res.status === 204) {
      closed = true;
      setState('ended');
      return;
    }
    if (res.status === 401) {
      closed = true;
      unauthorized();
      return;
    }
    if (!res.ok || !res.body) {
      res.body?.cancel().catch(() => {});
      if (res.status === 429 || res.status === 503 || res.status >= 500 || res.status === 0) {
        const after = Number(res.headers.get('Retry-After'));
        retry(after > 0 ? Math.min(after * 1000, MAX_DELAY) : undefined);
      } else {
        closed = true;
        setState('gone');
      }
      return;
    }
    setState('open');
    const parser = new SSEParser((ev) => {
      lastId = ev.id;
      try {
        opts.onEvent(ev);
      } catch (err) {
        console.error(`${path}: handling a ${ev.type} event failed`, err); // eslint-disable-line no-console
      }
    }, lastId);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        delay = FIRST_DELAY;
        parser.feed(decoder.decode(value, { stream: true }));
        if (closed) return;
      }
    } catch {
      if (closed) return; // aborted by close()
    }
    if (closed) return;
    if (opts.done && opts.done()) {
      closed = true;
      setState('ended');
      return;
    }
    retry();
  }

  connect();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      if (ctrl) ctrl.abort();
    },
    get lastEventId() {
      return lastId;
    },
  };
}
