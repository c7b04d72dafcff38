// Scenario 3: a finished job of a million lines ("line 1".."line 1000000") opens at its tail:
// the last line visible, and fewer than 500 rows in the DOM. Then: a line's address
// (#/jobs/<id>/L<n>) shows that line, "Jump to end" brings back the tail, the line numbers are
// links to their addresses, and anywhere in the log (dragging the scrollbar, the wheel) the
// rows shown are the right lines.

import { check, getJob, log, required, session, lineVisible } from './lib.mjs';

const id = required('CHARON_JOB_ID');
const MAX_ROWS = 500;

/** rightRows is a waitRows predicate: rows are visible, with their text, each "line n". */
const rightRows = (rows) => {
  const vis = rows.filter((r) => r.visible);
  return vis.length > 0 && vis.every((r, i) => r.text === `line ${r.n}` && (i === 0 || r.n === vis[i - 1].n + 1)) && [vis[0].n, vis[vis.length - 1].n];
};

await session(async (s) => {
  const { page } = s;
  const job = await getJob(id);
  const total = job.log_lines;
  check(total === 1000000 && job.status === 'completed', `the job should have completed with a million lines: ${job.status}, ${total}`);
  const jump = page.getByRole('button', { name: 'Jump to end', exact: true });
  const countRows = async () => (await s.rows()).length;

  const t0 = Date.now();
  await s.open(`#/jobs/${id}`);
  await s.waitRows(`line ${total} to be visible`, lineVisible, total);
  log(`opened at the tail: line ${total} visible after ${Date.now() - t0} ms`);
  await s.expectOnScreen(total, 'opened at the tail');
  let rows = await countRows();
  check(rows < MAX_ROWS, `${rows} rows in the DOM at the tail, want fewer than ${MAX_ROWS}`);
  check(!(await jump.isVisible()), '"Jump to end" is offered at the tail');
  const heights = new Set((await s.rows()).map((r) => r.height));
  check(heights.size === 1, `the rows are not all of one height: ${[...heights].join(', ')} px`);
  const inWindow = await s.logRegion().evaluate((el) => {
    const r = el.getBoundingClientRect();
    return { top: Math.round(r.top), bottom: Math.round(r.bottom), window: window.innerHeight };
  });
  log(`${rows} rows in the DOM, each ${[...heights][0]} px high; the log view spans y ${inWindow.top}..${inWindow.bottom} of a ${inWindow.window} px window`);
  await s.shot('tail');
  await s.shot('tail-window', { fullPage: false });

  // A line's address shows it.
  for (const n of [1, 500000, 999999]) {
    await page.evaluate((h) => {
      location.hash = h;
    }, `#/jobs/${id}/L${n}`);
    await s.waitRows(`line ${n} to be visible at its address`, lineVisible, n);
    await s.expectOnScreen(n, `at its address #/jobs/${id}/L${n}`);
    rows = await countRows();
    check(rows < MAX_ROWS, `${rows} rows in the DOM at line ${n}, want fewer than ${MAX_ROWS}`);
    log(`#/jobs/${id}/L${n} shows line ${n}; ${rows} rows in the DOM`);
    if (n === 1) await s.shot('line1');
  }
  await page.evaluate((h) => {
    location.hash = h;
  }, `#/jobs/${id}/L1`);
  await s.waitRows('line 1 to be visible', lineVisible, 1);

  // Scrolled up, "Jump to end" brings back the tail.
  await jump.click();
  await s.waitRows(`line ${total} to be visible after "Jump to end"`, lineVisible, total);
  await jump.waitFor({ state: 'hidden' });
  log('"Jump to end" went back to the tail');

  // Line numbers link to their addresses.
  const link = s.logRegion().getByRole('link', { name: String(total - 5), exact: true });
  await link.click();
  await page.waitForFunction((want) => location.hash === want, `#/jobs/${id}/L${total - 5}`);
  await s.waitRows(`line ${total - 5} to stay visible after clicking its number`, lineVisible, total - 5);
  log(`clicking line ${total - 5}'s number went to its address`);

  // Anywhere in the log, the rows shown are the right lines: the scrollbar dragged to a
  // quarter, to the middle, then the wheel.
  for (const at of [0.25, 0.5]) {
    await s.logRegion().evaluate((el, f) => {
      el.scrollTop = (el.scrollHeight - el.clientHeight) * f;
    }, at);
    const [a, b] = await s.waitRows(`the rows at ${at * 100}% of the log to be right`, rightRows);
    const want = Math.round(total * at);
    check(Math.abs(a - want) < 1000, `at ${at * 100}% of the scrollbar the page shows lines ${a}..${b}, want near line ${want}`);
    log(`at ${at * 100}% of the scrollbar: lines ${a}..${b}`);
  }
  const [before] = await s.waitRows('the rows to be right', rightRows);
  await s.logRegion().hover();
  await page.mouse.wheel(0, 18 * 40);
  const [a, b] = await s.waitRows('the rows after a wheel to be right and moved down', (rows, before) => {
    const vis = rows.filter((r) => r.visible);
    return vis.length > 0 && vis[0].n > before && vis.every((r, i) => r.text === `line ${r.n}` && (i === 0 || r.n === vis[i - 1].n + 1)) && [vis[0].n, vis[vis.length - 1].n];
  }, before);
  check(a - before < 1000, `a wheel of 720 px moved the view from line ${before} to line ${a}: lines must not be skipped`);
  rows = await countRows();
  check(rows < MAX_ROWS, `${rows} rows in the DOM after scrolling, want fewer than ${MAX_ROWS}`);
  log(`the wheel moved the view from line ${before} to ${a}..${b}; ${rows} rows in the DOM`);
});
