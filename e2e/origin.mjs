// Scenario 8: the page talks to its own origin only. Every view is visited (the list, a job's
// Log and Tasks, a line's address, the search, the editor, a download); the session's final
// check fails if any request went anywhere but charond (every other script checks the same
// of its own requests), and so does a violation of the page's Content-Security-Policy.

import { BASE, check, log, required, session, lineVisible } from './lib.mjs';

const id = required('CHARON_JOB_ID');

await session(async (s) => {
  const { page } = s;
  await s.open();
  await page.getByRole('table', { name: 'Jobs', exact: true }).getByRole('link').first().click();
  await s.waitRows('line 50 to be visible', lineVisible, 50);
  await page.getByRole('tab', { name: 'Tasks', exact: true }).click();
  await s.logRegion().waitFor({ state: 'hidden' });
  await page.getByRole('tab', { name: 'Log', exact: true }).click();
  await page.evaluate((h) => {
    location.hash = h;
  }, `#/jobs/${id}/L3`);
  await s.waitRows('line 3 to be visible', lineVisible, 3);
  const box = page.getByLabel('Search log', { exact: true });
  await box.fill('line 42');
  await box.press('Enter');
  await s.waitRows('the hit, line 42', (rows) => rows.some((r) => r.n === 42 && r.visible && r.hit));
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download', exact: true }).click()]);
  await download.path();
  await page.getByRole('link', { name: 'New job', exact: true }).or(page.getByRole('button', { name: 'New job', exact: true })).first().click();
  await page.getByRole('textbox', { name: 'Job', exact: true }).waitFor();
  await s.shot('editor');

  const origins = new Set(s.requests.map((r) => new URL(r.url).origin));
  check(s.requests.length > 5, `only ${s.requests.length} requests recorded`);
  log(`visited every view: ${s.requests.length} requests, origins ${[...origins].join(', ')} (charond is ${BASE})`);
});
