// Scenario 4: the search of a million-line log finds a line and scrolls to it. "line 424242"
// is one line, deep inside: Enter shows it, visible and highlighted. "line 42424" is in line
// 42424 and in lines 424240..424249: Enter goes to the next hit, Shift+Enter to the previous.

import { check, log, required, session, lineVisible } from './lib.mjs';

const id = required('CHARON_JOB_ID');

/** isHit is a waitRows predicate: line n is visible with its text, and the only row marked a hit. */
const isHit = (rows, n) => rows.some((r) => r.n === n && r.visible && r.text === `line ${n}` && r.hit) && rows.filter((r) => r.hit).length === 1;

await session(async (s) => {
  const { page } = s;
  await s.open(`#/jobs/${id}`);
  await s.waitRows('the tail to be visible', lineVisible, 1000000);
  const box = page.getByLabel('Search log', { exact: true });

  await box.fill('line 424242');
  let t0 = Date.now();
  await box.press('Enter');
  await s.waitRows('line 424242 to be visible and highlighted', isHit, 424242);
  log(`"line 424242": found, visible and highlighted after ${Date.now() - t0} ms`);
  await s.expectOnScreen(424242, 'the search hit');
  const rows = (await s.rows()).length;
  check(rows < 500, `${rows} rows in the DOM at the hit, want fewer than 500`);
  await s.shot('search');

  await box.fill('line 42424');
  const steps = [
    ['Enter', 42424],
    ['Enter', 424240],
    ['Enter', 424241],
    ['Shift+Enter', 424240],
    ['Shift+Enter', 42424],
  ];
  for (const [key, n] of steps) {
    t0 = Date.now();
    await box.press(key);
    await s.waitRows(`${key} to go to line ${n}, highlighted`, isHit, n);
    log(`"line 42424", ${key}: line ${n} after ${Date.now() - t0} ms`);
  }
});
