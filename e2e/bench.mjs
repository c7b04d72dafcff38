// The dashboard's browser benchmark. It reports, and asserts nothing.
//
// For a finished job of a million lines (CHARON_JOB_ID, "line 1".."line 1000000"):
//   tail_ms     navigation to #/jobs/<id> until "line 1000000" is visible
//   line1_ms    the address #/jobs/<id>/L1 until "line 1" is visible
//   end_ms      "Jump to end" from there until the last line is visible again
//   search_ms   Enter in "Search log" with "line 424242" until that line is visible, highlighted
//   rows_*      rows in the log view's DOM at the tail, at line 1 and at the hit
//   nodes       DOM nodes of the page at the end (CDP Performance.getMetrics)
//   heap_mb     the page's JS heap after a garbage collection (CDP Runtime.getHeapUsage)
// For a live job printing ~1,000 lines a second (the fake runner's "lines", count 30000,
// interval_ms 10, burst 10, a steady 1,000 lines/s; CHARON_BENCH_LIVE_DOC is another job document to submit instead), followed
// on its page for CHARON_BENCH_LIVE_SECONDS (20):
//   rate        the job's real rate, lines/s, from its lines' timestamps
//   lag_*       the job's newest line (GET /api/v1/jobs/{id} log_lines) minus the page's
//               newest rendered line, sampled every 250 ms: mean, p95, max
//   lag_ms_mean the mean lag in ms, at the job's rate
//   lag_slope   the lag's trend by least squares, lines per second (about 0: it keeps up)
//   busy_pct    main-thread busy time (CDP TaskDuration) over wall time, in %; script_pct
//               and layout_pct the parts of it in script and in style and layout
//   longtasks   long tasks (over 50 ms) and their total ms (PerformanceObserver 'longtask')
//   live_heap_mb the heap after the live part, after a garbage collection
// CHARON_BENCH_RUNS runs (default 3), each in a new browser; it prints each run, the medians,
// a table, and one line "json: {...}".
//
// Run it through Go, which starts charond with the fake runner and makes the big job:
//   CHARON_BENCH=1 go test -count=1 -run TestDashboardBenchmark -v .
// or by hand against a charond that has such a job:
//   CHARON_URL=http://127.0.0.1:8080 CHARON_JOB_ID=<id> node e2e/bench.mjs

import { chromium } from 'playwright-core';
import { CHROMIUM, api, check, getJob, log, newSession, sleep, submitFake, waitJob } from './lib.mjs';

const bigId = process.env.CHARON_JOB_ID;
const RUNS = Number(process.env.CHARON_BENCH_RUNS) || 3;
const LIVE_SECONDS = Number(process.env.CHARON_BENCH_LIVE_SECONDS) || 20;
const SAMPLE_MS = 250;

/** newestRendered answers the newest line the log view shows with its text, without layout. */
function newestRendered(el) {
  const links = el.querySelectorAll('a[href]');
  for (let i = links.length - 1; i >= 0; i--) {
    const m = /\/L(\d+)$/.exec(links[i].getAttribute('href') || '');
    if (!m) continue;
    const row = links[i].parentElement;
    if ((row.textContent || '').length > links[i].textContent.length) return Number(m[1]);
  }
  return 0;
}

const visibleAt = (rows, n) => rows.some((r) => r.n === n && r.visible && r.text === `line ${n}`) && performance.now();
const sinceMark = (rows, n) => rows.some((r) => r.n === n && r.visible && r.text === `line ${n}`) && performance.now() - window.__benchT0;
const hitSinceMark = (rows, n) => rows.some((r) => r.n === n && r.visible && r.text === `line ${n}` && r.hit) && performance.now() - window.__benchT0;

async function metrics(cdp) {
  const { metrics: list } = await cdp.send('Performance.getMetrics');
  return Object.fromEntries(list.map((m) => [m.name, m.value]));
}

async function heapMB(cdp) {
  await cdp.send('HeapProfiler.collectGarbage');
  const { usedSize } = await cdp.send('Runtime.getHeapUsage');
  return usedSize / 1e6;
}

const mark = (page) =>
  page.evaluate(() => {
    window.__benchT0 = performance.now();
  });

async function bigJob(s, cdp, total) {
  const { page } = s;
  const r = {};
  await s.open(`#/jobs/${bigId}`);
  r.tail_ms = await s.waitRows('the tail', visibleAt, total, 60000);
  r.rows_tail = (await s.rows()).length;

  await mark(page);
  await page.evaluate((h) => {
    location.hash = h;
  }, `#/jobs/${bigId}/L1`);
  r.line1_ms = await s.waitRows('line 1', sinceMark, 1, 60000);
  r.rows_line1 = (await s.rows()).length;

  const jump = page.getByRole('button', { name: 'Jump to end', exact: true });
  await jump.waitFor();
  await mark(page);
  await jump.click();
  r.end_ms = await s.waitRows('the tail again', sinceMark, total, 60000);

  const box = page.getByLabel('Search log', { exact: true });
  await box.fill('line 424242');
  await mark(page);
  await box.press('Enter');
  r.search_ms = await s.waitRows('the hit', hitSinceMark, 424242, 60000);
  r.rows_hit = (await s.rows()).length;
  r.nodes = (await metrics(cdp)).Nodes;
  r.heap_mb = await heapMB(cdp);
  return r;
}

async function liveJob(s, cdp) {
  const { page } = s;
  let job;
  if (process.env.CHARON_BENCH_LIVE_DOC) {
    const res = await api('POST', '/api/v1/jobs', process.env.CHARON_BENCH_LIVE_DOC, { type: 'application/x-yaml' });
    check(res.status === 201, `submit the live job: ${res.status} ${res.text}`);
    job = res.json;
  } else {
    job = await submitFake('bench: 1000 lines a second', { fake: 'lines', count: 30000, interval_ms: 10, burst: 10 });
  }
  try {
    await waitJob(job.id, 'some lines', (j) => j.log_lines >= 100, 30000);
    await page.evaluate((h) => {
      location.hash = h;
    }, `#/jobs/${job.id}`);
    const region = s.logRegion();
    await s.waitRows('the live tail', (rows) => rows.some((r) => r.visible && r.text !== ''));
    const handle = await region.elementHandle();
    // Compiled here: the page's CSP forbids eval, and Playwright sends it over DevTools.
    const probe = new Function('el', `return (${newestRendered.toString()})(el);`);
    const sample = async () => {
      const [j, n] = await Promise.all([getJob(job.id), page.evaluate(probe, handle)]);
      return { t: Date.now(), job: j.log_lines, page: n, running: j.status === 'running' };
    };
    const m0 = await metrics(cdp);
    const lt0 = await page.evaluate(() => window.__bench.longtasks.length);
    const t0 = Date.now();
    const samples = [];
    while (Date.now() - t0 < LIVE_SECONDS * 1000) {
      const x = await sample();
      samples.push(x);
      if (!x.running) break;
      await sleep(Math.max(0, t0 + samples.length * SAMPLE_MS - Date.now()));
    }
    const m1 = await metrics(cdp);
    const wall = (Date.now() - t0) / 1000;
    const longtasks = await page.evaluate((from) => window.__bench.longtasks.slice(from), lt0);
    await handle.dispose();

    const first = samples[0];
    const last = samples[samples.length - 1];
    const stamp = async (n) => {
      const res = await api('GET', `/api/v1/jobs/${job.id}/logs/lines?from=${n}&limit=1`);
      return Date.parse(res.json.lines[0].timestamp);
    };
    const rate = (last.job - first.job) / ((await stamp(last.job)) - (await stamp(first.job))) * 1000;
    const lags = samples.map((x) => x.job - x.page);
    const ts = samples.map((x) => (x.t - t0) / 1000);
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const mt = mean(ts);
    const ml = mean(lags);
    const slope = ts.reduce((a, t, i) => a + (t - mt) * (lags[i] - ml), 0) / ts.reduce((a, t) => a + (t - mt) ** 2, 0);
    const sorted = [...lags].sort((a, b) => a - b);
    return {
      seconds: wall,
      samples: samples.length,
      still_running: last.running,
      rate,
      lag_mean: ml,
      lag_p95: sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.95))],
      lag_max: sorted[sorted.length - 1],
      lag_slope: slope,
      lag_ms_mean: (ml / rate) * 1000,
      busy_pct: ((m1.TaskDuration - m0.TaskDuration) / wall) * 100,
      script_pct: ((m1.ScriptDuration - m0.ScriptDuration) / wall) * 100,
      layout_pct: ((m1.LayoutDuration - m0.LayoutDuration + m1.RecalcStyleDuration - m0.RecalcStyleDuration) / wall) * 100,
      longtasks: longtasks.length,
      longtask_ms: longtasks.reduce((a, x) => a + x, 0),
      live_heap_mb: await heapMB(cdp),
    };
  } finally {
    await api('POST', `/api/v1/jobs/${job.id}/cancel`);
    await waitJob(job.id, 'ended', (j) => j.status !== 'queued' && j.status !== 'running', 30000);
  }
}

async function oneRun(i, total) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    const s = await newSession(browser);
    await s.context.addInitScript(() => {
      window.__bench = { longtasks: [] };
      try {
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) window.__bench.longtasks.push(e.duration);
        }).observe({ type: 'longtask', buffered: true });
      } catch {
        // no long task timing in this browser
      }
    });
    const cdp = await s.context.newCDPSession(s.page);
    await cdp.send('Performance.enable');
    const big = await bigJob(s, cdp, total);
    log(`run ${i}, big job: ${JSON.stringify(big)}`);
    const live = await liveJob(s, cdp);
    log(`run ${i}, live job: ${JSON.stringify(live)}`);
    await s.finalChecks();
    return { ...big, ...live };
  } finally {
    await browser.close();
  }
}

const median = (xs) => {
  const a = [...xs].sort((x, y) => x - y);
  const m = Math.floor(a.length / 2);
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
};

const ROWS = [
  ['tail_ms', 'open at the tail (ms)', 0],
  ['line1_ms', 'to line 1 by its address (ms)', 0],
  ['end_ms', '"Jump to end" from line 1 (ms)', 0],
  ['search_ms', 'search "line 424242" (ms)', 0],
  ['rows_tail', 'rows in the DOM at the tail', 0],
  ['rows_line1', 'rows in the DOM at line 1', 0],
  ['rows_hit', 'rows in the DOM at the hit', 0],
  ['nodes', 'DOM nodes of the page', 0],
  ['heap_mb', 'JS heap after GC, big job (MB)', 1],
  ['rate', 'live job: real rate (lines/s)', 0],
  ['lag_mean', 'live: lag, mean (lines)', 1],
  ['lag_p95', 'live: lag, p95 (lines)', 0],
  ['lag_max', 'live: lag, max (lines)', 0],
  ['lag_ms_mean', 'live: lag, mean (ms at that rate)', 0],
  ['lag_slope', 'live: lag trend (lines/s)', 2],
  ['busy_pct', 'live: main thread busy (%)', 1],
  ['script_pct', 'live: of which script (%)', 1],
  ['layout_pct', 'live: of which style+layout (%)', 1],
  ['longtasks', 'live: long tasks (>50 ms)', 0],
  ['longtask_ms', 'live: long tasks, total (ms)', 0],
  ['live_heap_mb', 'JS heap after GC, live (MB)', 1],
];

try {
  check(bigId, 'CHARON_JOB_ID is not set: the finished million-line job');
  const total = (await getJob(bigId)).log_lines;
  check(total === 1000000, `the job ${bigId} has ${total} lines, want 1000000`);
  const runs = [];
  for (let i = 1; i <= RUNS; i++) runs.push(await oneRun(i, total));
  const medians = Object.fromEntries(ROWS.map(([k]) => [k, median(runs.map((r) => r[k]))]));
  const w = 34;
  const cols = runs.map((_, i) => `run ${i + 1}`.padStart(10));
  console.log(`\n${'metric'.padEnd(w)}${cols.join('')}${'median'.padStart(10)}`);
  for (const [k, label, digits] of ROWS) {
    const cells = runs.map((r) => (typeof r[k] === 'number' ? r[k].toFixed(digits) : String(r[k])).padStart(10));
    console.log(`${label.padEnd(w)}${cells.join('')}${medians[k].toFixed(digits).padStart(10)}`);
  }
  console.log(`\njson: ${JSON.stringify({ runs, medians })}`);
} catch (err) {
  console.error(`FAIL: ${err && err.stack ? err.stack : err}`);
  process.exitCode = 1;
}
