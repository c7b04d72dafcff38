// What every browser script of the dashboard shares: its settings from the environment,
// charond's API seen from Node, one browser session with the checks every script makes (no
// request to another origin, no uncaught error, no CSP violation), and readers of the log view.
//
// A script is run by dashboard_test.go (go test -run Dashboard), which starts charond with the
// fake runner and sets:
//   CHARON_URL             charond, e.g. http://127.0.0.1:41234 (required)
//   CHARON_TOKEN           its bearer token, when it has one
//   CHARON_JOB_ID          the job the scenario is about, when the Go test made it
//   CHARON_CHROMIUM        the browser (default /usr/bin/chromium)
//   CHARON_SCREENSHOT_DIR  where screenshots go (default: the temporary directory's charon-screenshots)
//   CHARON_TEST            the test's name, which starts every screenshot's name
// It prints what it did, "screenshot: PATH" for each picture, and exits 1 on the first failed
// check, after a screenshot of the page as it was.

import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const BASE = required('CHARON_URL').replace(/\/+$/, '');
export const TOKEN = process.env.CHARON_TOKEN || '';
export const CHROMIUM = process.env.CHARON_CHROMIUM || '/usr/bin/chromium';
const SHOT_DIR = process.env.CHARON_SCREENSHOT_DIR || path.join(tmpdir(), 'charon-screenshots');
const TEST = process.env.CHARON_TEST || path.basename(process.argv[1] || 'e2e', '.mjs');

/** TIMEOUT bounds every wait: what they wait for takes milliseconds to a few seconds. */
export const TIMEOUT = Number(process.env.CHARON_E2E_TIMEOUT_MS) || 15000;

export function required(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this script through go test -run Dashboard (see dashboard_test.go)`);
  return v;
}

/** log prints a step of the scenario, with the time since the script started. */
const started = Date.now();
export function log(...args) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(2)}s]`, ...args);
}

/** check throws (failing the script) unless cond holds. */
export function check(cond, message) {
  if (!cond) throw new Error(`check failed: ${message}`);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- charond's API, from Node ------------------------------------------------------------

/**
 * api sends one request to charond with the token (opts.token overrides it; '' for none) and
 * answers {status, json, text}. A body that is not a string goes as JSON.
 */
export async function api(method, p, body, opts = {}) {
  const token = opts.token ?? TOKEN;
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload = body;
  let type = opts.type;
  if (body !== undefined && typeof body !== 'string') {
    payload = JSON.stringify(body);
    type = type || 'application/json';
  }
  if (type) headers['Content-Type'] = type;
  const res = await fetch(BASE + p, { method, headers, body: payload });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: the caller looks at text
  }
  return { status: res.status, json, text };
}

/** getJob reads a job, which must exist. */
export async function getJob(id) {
  const r = await api('GET', `/api/v1/jobs/${id}`);
  check(r.status === 200, `GET job ${id}: status ${r.status}: ${r.text}`);
  return r.json;
}

/**
 * submitFake submits a job for the fake runner (the test binary acting as ansible-playbook);
 * vars choose its scenario, as in fakerunner_test.go. It answers the job.
 */
export async function submitFake(name, vars, priority = 5) {
  const doc = { name, playbook: '- hosts: localhost\n  tasks: []\n', priority, variables: vars };
  const r = await api('POST', '/api/v1/jobs', doc);
  check(r.status === 201, `submit ${name}: status ${r.status}: ${r.text}`);
  return r.json;
}

/** waitJob polls a job until cond(job) holds, and answers it then. */
export async function waitJob(id, what, cond, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const job = await getJob(id);
    if (cond(job)) return job;
    if (Date.now() > deadline) throw new Error(`gave up after ${timeout} ms waiting for job ${id}: ${what}; last seen ${JSON.stringify(job)}`);
    await sleep(25);
  }
}

export const waitStatus = (id, status, timeout) => waitJob(id, status, (j) => j.status === status, timeout);

// ---- in the page -------------------------------------------------------------------------

/**
 * readRows reads the rows of the log view `region` that are in the DOM, in DOM order: each
 * {n, text, height, visible, onScreen, hit}. A row is what holds a link to its line,
 * #/jobs/<id>/L<n>; its text is the row's text without that link's (the number); visible
 * means all of it is inside the region's viewport, onScreen that it is inside the window's
 * too; hit means it is marked as the search's current hit (a <mark> in it, or aria-current,
 * or a class naming a hit). It runs in the page, installed by session().
 */
function readRows(region) {
  const out = [];
  if (!region || !region.isConnected) return out;
  const box = region.getBoundingClientRect();
  const top = box.top + region.clientTop;
  const bottom = top + region.clientHeight;
  for (const a of region.querySelectorAll('a[href]')) {
    const m = /\/L(\d+)$/.exec(a.getAttribute('href') || '');
    if (!m) continue;
    const row = a.parentElement;
    let text = row.textContent || '';
    const num = a.textContent || '';
    if (text.startsWith(num)) text = text.slice(num.length);
    const r = row.getBoundingClientRect();
    out.push({
      n: Number(m[1]),
      text: text.trim(),
      height: r.height,
      visible: r.height > 0 && r.top >= top - 1 && r.bottom <= bottom + 1,
      onScreen: r.height > 0 && r.top >= top - 1 && r.bottom <= bottom + 1 && r.top >= -1 && r.bottom <= window.innerHeight + 1,
      hit: Boolean(row.querySelector('mark')) || row.matches('[aria-current]') || /(^|\s)(hit|match|current)(\s|$)/.test(row.className),
    });
  }
  return out;
}

/**
 * tapStreams wraps the page's fetch, before any script of the page runs, to see what its log
 * streams deliver: for each GET .../logs/stream that answers 200, it records the Last-Event-ID
 * sent and the id of every `log` event received, in window.__e2e.streams, and hands the page
 * the same bytes through one branch of a tee. It changes nothing the page sees.
 */
function tapStreams() {
  window.__e2e = { streams: [], csp: [] };
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__e2e.csp.push(`${e.violatedDirective}: ${e.blockedURI || '(inline)'} at ${e.sourceFile}:${e.lineNumber}`);
  });
  const orig = window.fetch;
  window.fetch = async function fetch(input, init) {
    const res = await orig.call(this, input, init);
    const u = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (!/\/logs\/stream(\?|$)/.test(u) || res.status !== 200 || !res.body) return res;
    let hs;
    try {
      hs = new Headers((init && init.headers) || (input instanceof Request ? input.headers : undefined));
    } catch {
      hs = new Headers();
    }
    const conn = { url: u, lastEventId: hs.get('Last-Event-ID'), ids: [], completed: false, ended: false, opened: performance.now() };
    window.__e2e.streams.push(conn);
    const [mine, theirs] = res.body.tee();
    (async () => {
      const reader = mine.getReader();
      const dec = new TextDecoder();
      let buf = '';
      let id = null;
      let type = '';
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          const lines = buf.split(/\r\n|\r|\n/);
          buf = lines.pop();
          for (const line of lines) {
            if (line === '') {
              if (type === 'log' && id !== null) conn.ids.push(Number(id));
              if (type === 'completed') conn.completed = true;
              type = '';
            } else if (line.startsWith('id:')) id = line.slice(3).trim();
            else if (line.startsWith('event:')) type = line.slice(6).trim();
          }
        }
      } catch {
        // the page aborted the stream, or charond went away
      }
      conn.ended = true;
    })();
    return new Response(theirs, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

// ---- the session -------------------------------------------------------------------------

/**
 * session runs fn({browser, context, page, requests, shot, ...}) in a new browser, and then
 * the checks every scenario makes. It prints the failure and exits 1 if fn throws or a check
 * fails.
 */
export async function session(fn, opts = {}) {
  let browser;
  let s;
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    s = await newSession(browser, opts);
    await fn(s);
    await s.finalChecks();
    log('ok');
  } catch (err) {
    console.error(`FAIL: ${err && err.stack ? err.stack : err}`);
    if (s) {
      await s.shot('failure').catch(() => {});
      s.report();
    }
    process.exitCode = 1;
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
}

export async function newSession(browser, opts = {}) {
  const context = await browser.newContext({ viewport: opts.viewport || { width: 1280, height: 900 }, acceptDownloads: true });
  await context.addInitScript({ content: `window.__e2eRows = ${readRows.toString()};\n(${tapStreams.toString()})();` });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const s = {
    browser,
    context,
    page,
    /** Every request the page made: {url, method, type, at, headers (a promise)}. */
    requests: [],
    pageErrors: [],
    console: [],
    /** Checks that failed without stopping the script: it fails at its end. */
    failures: [],
  };

  /** expect records a failed check unless cond holds, and lets the script go on. */
  s.expect = (cond, message) => {
    if (cond) return true;
    s.failures.push(message);
    log(`FAILED CHECK: ${message}`);
    return false;
  };
  page.on('request', (r) => {
    s.requests.push({ url: r.url(), method: r.method(), type: r.resourceType(), at: Date.now(), headers: r.allHeaders().catch(() => ({})) });
  });
  page.on('pageerror', (err) => s.pageErrors.push(String(err && err.stack ? err.stack : err)));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') s.console.push(`${m.type()}: ${m.text()}`);
  });

  /**
   * shot saves a screenshot of the whole page (or, with {fullPage: false}, of what the window
   * shows) as <test>-<name>.png and prints its path.
   */
  s.shot = async (name, { fullPage = true } = {}) => {
    mkdirSync(SHOT_DIR, { recursive: true });
    const file = path.join(SHOT_DIR, `${TEST}-${name}.png`);
    await page.screenshot({ path: file, fullPage });
    console.log(`screenshot: ${file}`);
    return file;
  };

  /** foreign lists the requests that left charond's origin. */
  s.foreign = () =>
    s.requests.filter((r) => !(r.url.startsWith(`${BASE}/`) || r.url.startsWith(`blob:${BASE}/`) || r.url.startsWith('data:')));

  s.finalChecks = async () => {
    check(s.failures.length === 0, `${s.failures.length} checks failed:\n  ${s.failures.join('\n  ')}`);
    const foreign = s.foreign();
    check(foreign.length === 0, `requests left charond's origin ${BASE}: ${foreign.map((r) => `${r.method} ${r.url}`).join(', ')}`);
    check(s.pageErrors.length === 0, `the page threw: ${s.pageErrors.join('\n')}`);
    const csp = await page.evaluate(() => (window.__e2e ? window.__e2e.csp : [])).catch(() => []);
    check(csp.length === 0, `the page broke its Content-Security-Policy: ${csp.join('; ')}`);
    log(`${s.requests.length} requests, all to ${BASE}`);
    if (s.console.length) log(`the console said (${s.console.length}):\n  ${s.console.slice(0, 10).join('\n  ')}`);
  };

  s.report = () => {
    if (s.pageErrors.length) console.error(`page errors:\n  ${s.pageErrors.join('\n  ')}`);
    if (s.console.length) console.error(`console errors and warnings:\n  ${s.console.slice(-30).join('\n  ')}`);
    const foreign = s.foreign();
    if (foreign.length) console.error(`requests to other origins:\n  ${foreign.map((r) => r.url).join('\n  ')}`);
    console.error(`last requests:\n  ${s.requests.slice(-15).map((r) => `${r.method} ${r.url}`).join('\n  ')}`);
  };

  /** open loads the page at charond's / with hash (e.g. '#/jobs/ID'). */
  s.open = async (hash = '') => {
    await page.goto(`${BASE}/${hash}`);
  };

  /** logRegion is the log view of the job page on screen. */
  s.logRegion = () => page.getByRole('region', { name: 'Log', exact: true });

  /**
   * expectOnScreen checks that line n, visible in the log view, is on screen too: a person
   * sees it without scrolling the page. A failure is recorded, and the script goes on.
   */
  s.expectOnScreen = async (n, what) => {
    const rows = await s.rows();
    const row = rows.find((r) => r.n === n);
    const view = await s.logRegion().evaluate((el) => {
      const r = el.getBoundingClientRect();
      return `the log view spans y ${Math.round(r.top)}..${Math.round(r.bottom)} of a ${window.innerHeight} px window, scrolled to ${Math.round(window.scrollY)}`;
    });
    return s.expect(row && row.onScreen, `${what}: line ${n} is ${row && row.visible ? 'in the log view but off screen' : 'not visible'} (${view}): a person does not see it without scrolling the page`);
  };

  /** rows reads the log view's rows (see readRows). */
  s.rows = async () => {
    const region = s.logRegion();
    await region.waitFor();
    return region.evaluate((el) => window.__e2eRows(el));
  };

  /**
   * waitRows waits until pred(rows, arg) holds in the page, polled every frame; pred runs in
   * the page with the rows of readRows. It answers what pred answered; on a timeout it throws
   * saying what was awaited and which rows were visible.
   */
  s.waitRows = async (what, pred, arg, timeout = TIMEOUT) => {
    const region = s.logRegion();
    await region.waitFor({ timeout });
    const handle = await region.elementHandle();
    // The page's Content-Security-Policy allows no eval, so pred cannot be compiled in the
    // page: it is compiled here, into a function Playwright sends through the DevTools
    // protocol (to which the policy does not apply), that reads the rows and calls it.
    const poll = new Function('a', `return (${pred.toString()})(window.__e2eRows(a.el), a.arg, a.el);`);
    try {
      const res = await page.waitForFunction(poll, { el: handle, arg }, { timeout, polling: 'raf' });
      return await res.jsonValue();
    } catch (err) {
      const rows = await s.rows().catch(() => []);
      throw new Error(`gave up waiting for ${what}: ${err.message.split('\n')[0]}; visible rows: ${summarize(rows.filter((r) => r.visible))}; rows in the DOM: ${rows.length}`);
    } finally {
      await handle.dispose().catch(() => {});
    }
  };

  return s;
}

/** summarize shows rows briefly: "12 rows, 1001..1012: line 1001 | ... | line 1012". */
export function summarize(rows) {
  if (rows.length === 0) return 'none';
  const a = rows[0];
  const b = rows[rows.length - 1];
  return `${rows.length} rows, ${a.n}..${b.n}: ${JSON.stringify(a.text)} … ${JSON.stringify(b.text)}`;
}

/** lineVisible is a waitRows predicate: line n is visible, its text "line n" (the fake runner's). */
export const lineVisible = (rows, n) => rows.some((r) => r.n === n && r.visible && r.text === `line ${n}`);

/**
 * walkLog scrolls the log view from its top to its bottom and reads the rows at each stop,
 * once the visible ones have their text; each stop moves on to the first line it has not read
 * yet. It checks on the way that the DOM never holds a line twice and holds consecutive lines
 * in order, and answers Map n → text of every line it read. It is for logs short enough to
 * scroll natively (a scroll pixel a pixel of the log).
 */
export async function walkLog(s) {
  const region = s.logRegion();
  const seen = new Map();
  await region.evaluate((el) => {
    el.scrollTop = 0;
  });
  for (let stop = 0; ; stop++) {
    check(stop < 100000, 'walking the log does not end');
    await s.waitRows('the visible rows to have their text', (rows) => {
      const vis = rows.filter((r) => r.visible);
      return vis.length > 0 && vis.every((r) => r.text !== '');
    });
    // Read, and scroll to the first row after the run of rows with text below the viewport.
    const { rows, atEnd } = await region.evaluate((el) => {
      const rows = window.__e2eRows(el);
      const atEnd = el.scrollTop + el.clientHeight >= el.scrollHeight - 1;
      if (!atEnd) {
        const links = [...el.querySelectorAll('a[href]')].filter((a) => /\/L\d+$/.test(a.getAttribute('href')));
        let i = rows.findIndex((r) => r.visible);
        while (i + 1 < rows.length && (rows[i + 1].visible || rows[i + 1].text !== '')) i++;
        const next = links[i + 1] ? links[i + 1].parentElement : null;
        const top = el.getBoundingClientRect().top + el.clientTop;
        const step = next ? next.getBoundingClientRect().top - top : el.clientHeight;
        el.scrollTop += Math.max(el.clientHeight / 2, step - 1);
      }
      return { rows, atEnd };
    });
    for (let i = 1; i < rows.length; i++) {
      check(rows[i].n === rows[i - 1].n + 1, `rows in the DOM are not consecutive lines: ${rows[i - 1].n} then ${rows[i].n}`);
    }
    for (const r of rows) {
      if (r.text === '') continue;
      const had = seen.get(r.n);
      check(had === undefined || had === r.text, `line ${r.n} read ${JSON.stringify(had)}, then ${JSON.stringify(r.text)}`);
      seen.set(r.n, r.text);
    }
    if (atEnd) {
      log(`walked the log in ${stop + 1} stops`);
      break;
    }
  }
  return seen;
}

/** checkLines checks that seen holds lines 1..total, each "line n", and nothing else. */
export function checkLines(seen, total) {
  const wrong = [];
  for (let n = 1; n <= total && wrong.length < 10; n++) {
    if (seen.get(n) !== `line ${n}`) wrong.push(`${n}: ${JSON.stringify(seen.get(n))}`);
  }
  check(wrong.length === 0, `the page's lines are not "line 1".."line ${total}": ${wrong.join(', ')}`);
  const extra = [...seen.keys()].filter((n) => n < 1 || n > total);
  check(extra.length === 0, `the page shows lines beyond 1..${total}: ${extra.slice(0, 10).join(', ')}`);
}

/** nextFrames waits until the page has drawn two more frames: what it was given is on screen. */
export async function nextFrames(page) {
  await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
}

/** hashId answers the job id in the page's address, #/jobs/<id>[/L<n>], or ''. */
export async function hashId(page) {
  const hash = await page.evaluate(() => location.hash);
  const m = /^#\/jobs\/([^/]+)/.exec(hash);
  return m ? decodeURIComponent(m[1]) : '';
}
