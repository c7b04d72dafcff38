// Scenario 6: a job's actions. The Go test runs a sleeping job. From its page: Cancel (it
// ends cancelled); Relaunch (a new job's page opens, whose relaunch_of is the first); Cancel
// the new one; the Tasks and Log views; Delete the first job (it is gone, from the API too).

import { api, check, getJob, hashId, log, required, session, sleep, waitStatus } from './lib.mjs';

const id = required('CHARON_JOB_ID');

await session(async (s) => {
  const { page } = s;
  const button = (name) => page.getByRole('button', { name, exact: true });
  const status = (word) => page.getByText(word, { exact: true }).first();

  await s.open(`#/jobs/${id}`);
  await status('running').waitFor();
  await s.logRegion().getByText('started', { exact: true }).waitFor();
  await button('Cancel').click();
  await waitStatus(id, 'cancelled');
  await status('cancelled').waitFor();
  log('Cancel: the job is cancelled, and its page says so');
  await s.shot('cancelled');

  await button('Relaunch').click();
  await page.waitForFunction((old) => /^#\/jobs\/[^/]+$/.test(location.hash) && !location.hash.includes(old), id);
  const again = await hashId(page);
  const job = await getJob(again);
  check(job.relaunch_of === id, `the relaunch #/jobs/${again} has relaunch_of ${job.relaunch_of}, want ${id}`);
  await status('running').waitFor();
  log(`Relaunch: the page opened ${again}, relaunch_of ${id}`);

  // The Tasks view, and back to the Log.
  const tasks = page.getByRole('tab', { name: 'Tasks', exact: true });
  const logTab = page.getByRole('tab', { name: 'Log', exact: true });
  await tasks.click();
  await s.logRegion().waitFor({ state: 'hidden' });
  check((await tasks.getAttribute('aria-selected')) === 'true', 'the Tasks tab is not selected after a click');
  await page.getByRole('tabpanel').first().waitFor();
  await logTab.click();
  await s.logRegion().waitFor();
  log('the Tasks and Log views switch');

  await button('Cancel').click();
  await waitStatus(again, 'cancelled');
  await status('cancelled').waitFor();
  log('Cancel: the relaunch is cancelled');

  // Delete the first: one click, or a confirmation after it (a button or a dialog).
  await s.open(`#/jobs/${id}`);
  await status('cancelled').waitFor();
  page.once('dialog', (d) => d.accept());
  await button('Delete').click();
  const confirm = page.getByRole('button', { name: /^(confirm|delete|yes)/i }).filter({ hasNotText: /^Delete$/ });
  const gone = async () => (await api('GET', `/api/v1/jobs/${id}`)).status === 404;
  if (!(await gone())) {
    await confirm
      .first()
      .click({ timeout: 3000 })
      .catch(() => {});
  }
  const deadline = Date.now() + 10000;
  while (!(await gone())) {
    check(Date.now() < deadline, `the job ${id} still exists after Delete`);
    await sleep(25);
  }
  await page.waitForFunction((old) => !location.hash.includes(old), id);
  log(`Delete: the job is gone, and the page went to ${await page.evaluate(() => location.hash)}`);
});
