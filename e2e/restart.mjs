// Scenario 2: a job's log streams live on its page and survives a restart of charond without a
// gap or a repeat. The Go test runs a job printing some 400 lines a second and gives this
// script a control channel: POST CHARON_CONTROL_URL/restart cuts every connection of charond
// at once, lets the job print more, stops charond (the job ends cancelled, its log kept) and
// starts a new one on the same address and data dir, and answers once it listens.
//
// The page must follow the tail while it is at the bottom, stay put with "Jump to end" offered
// when scrolled up, and after the restart reconnect and end with lines 1..N, each once, N the
// job's log_lines. Two checks: what its log streams delivered (each connection resuming with
// Last-Event-ID where the one before stopped, every line once), and what it rendered (the
// whole log walked from the top).

import { readFileSync } from 'node:fs';
import { api, check, checkLines, getJob, log, nextFrames, required, session, waitJob, walkLog } from './lib.mjs';

const id = required('CHARON_JOB_ID');
const control = required('CHARON_CONTROL_URL');

/** following is a waitRows predicate: the newest line drawn is visible, and is above arg. */
const following = (rows, above) => {
  const filled = rows.filter((r) => r.text !== '');
  const last = filled[filled.length - 1];
  return Boolean(last && last.visible && last.n > above) && last.n;
};

await session(async (s) => {
  const { page } = s;
  await s.open(`#/jobs/${id}`);
  const jump = page.getByRole('button', { name: 'Jump to end', exact: true });

  // Following: the newest line is visible at the bottom, and moves on as lines come.
  let newest = await s.waitRows('the page to follow the tail', following, 0);
  for (let i = 0; i < 5; i++) {
    const next = await s.waitRows(`the tail to move on from line ${newest}`, following, newest);
    const rows = await s.rows();
    const ns = rows.map((r) => r.n);
    check(new Set(ns).size === ns.length, `the DOM holds a line twice: ${ns.join(',')}`);
    check(!(await jump.isVisible()), '"Jump to end" is offered while the page follows the tail');
    newest = next;
  }
  log(`the page follows the tail, at line ${newest}`);

  // Scrolled up, it stays where it is while lines come, and offers "Jump to end".
  const region = s.logRegion();
  await region.hover();
  await page.mouse.wheel(0, -2000);
  await jump.waitFor();
  await s.waitRows('the view to stop at the top', (rows) => rows.some((r) => r.visible && r.text !== ''));
  const topOf = async () => (await s.rows()).find((r) => r.visible).n;
  const top = await topOf();
  const grown = (await getJob(id)).log_lines + 100;
  await waitJob(id, `${grown} lines`, (j) => j.log_lines >= grown);
  await page.waitForFunction((n) => window.__e2e.streams.some((c) => c.ids.at(-1) >= n), grown);
  await nextFrames(page);
  check((await topOf()) === top, `scrolled up at line ${top}, the view moved to line ${await topOf()} as lines came`);
  log(`scrolled up, the view stays at line ${top}`);
  await jump.click();
  newest = await s.waitRows('"Jump to end" to bring back the tail', following, grown - 1);
  await jump.waitFor({ state: 'hidden' });
  log(`back at the tail, line ${newest}`);

  // The restart.
  const res = await fetch(`${control}/restart`, { method: 'POST' });
  check(res.ok, `restart: ${res.status} ${await res.text()}`);
  log('charond restarted');
  await page.waitForFunction(() => window.__e2e.streams.some((c) => c.completed), null, { timeout: 25000 });
  const job = await waitJob(id, 'ended', (j) => j.status !== 'queued' && j.status !== 'running');
  const total = job.log_lines;
  log(`the stream completed; the job ended ${job.status} with ${total} lines`);

  // What the streams delivered.
  const streams = await page.evaluate(() => window.__e2e.streams);
  const shown = streams.map((c) => `from ${c.lastEventId}: ${c.ids.length ? `${c.ids[0]}..${c.ids[c.ids.length - 1]}` : 'nothing'}${c.completed ? ', completed' : ''}`);
  log(`log streams: ${shown.join('; ')}`);
  check(streams.length >= 2 && !streams[0].completed, `the stream should have been cut and reopened: ${shown.join('; ')}`);
  let last = Number(streams[0].lastEventId || 0);
  const start = last;
  const ids = [];
  for (const [i, c] of streams.entries()) {
    check(Number(c.lastEventId || 0) === last, `stream ${i + 1} resumed from ${c.lastEventId}, but the line before it was ${last}: ${shown.join('; ')}`);
    ids.push(...c.ids);
    if (c.ids.length) last = c.ids[c.ids.length - 1];
  }
  for (let i = 0; i < ids.length; i++) {
    check(ids[i] === start + i + 1, `the streams delivered line ${ids[i]} where line ${start + i + 1} was due (a gap or a repeat)`);
  }
  check(start + ids.length === total, `the streams delivered lines up to ${start + ids.length}, the job has ${total}`);

  // What the page shows: the job ended, and its last line at the bottom.
  await s.waitRows(`line ${total} to be visible`, (rows, n) => rows.some((r) => r.n === n && r.visible && r.text === `line ${n}`), total);
  await page.getByText(job.status, { exact: true }).first().waitFor();
  await s.shot('job');
  const seen = await walkLog(s);
  checkLines(seen, total);
  log(`the page shows lines 1..${total}, each once`);

  // Download gives the raw log.
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download', exact: true }).click()]);
  const got = readFileSync(await download.path(), 'utf8');
  const want = (await api('GET', `/api/v1/jobs/${id}/logs`)).text;
  check(got === want, `the download (${got.length} bytes) is not the log (${want.length} bytes)`);
  log(`Download saved the log: ${download.suggestedFilename()}`);
});
