// Scenario 1: the jobs list updates live. With the page open, jobs are submitted through the
// API; the new job's row appears first, and its status goes queued → running → completed
// without a reload. charond runs one job at a time: a sleeping job holds the worker until the
// script cancels it, so the new one stays queued; the new one then waits at a gate (a file the
// script creates), so it stays running. Then the Status select filters the rows.

import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { api, check, log, required, session, submitFake, waitStatus } from './lib.mjs';

const gateDir = required('CHARON_GATE_DIR');

await session(async (s) => {
  const { page } = s;
  await s.open();
  const table = page.getByRole('table', { name: 'Jobs', exact: true });
  await table.waitFor();
  await page.evaluate(() => {
    window.__e2eNotReloaded = true;
  });
  const rowOf = (name) => table.getByRole('row').filter({ hasText: name });

  const suffix = Math.random().toString(36).slice(2, 8);
  const blockerName = `holds the worker ${suffix}`;
  const blocker = await submitFake(blockerName, { fake: 'sleep', seconds: 60 });
  await waitStatus(blocker.id, 'running');
  await rowOf(blockerName).filter({ hasText: 'running' }).waitFor();
  log('the blocker runs, and its row says so');

  const name = `live row ${suffix}`;
  const gate = path.join(gateDir, 'open');
  const job = await submitFake(name, { fake: 'gate', count: 3, gate }, 7);
  const row = rowOf(name);
  await row.filter({ hasText: 'queued' }).waitFor();
  log('the new job appeared, queued');
  const bodyRows = table.locator('tbody tr:not([hidden])');
  const first = (await table.getByRole('row').nth(1).textContent()) || '';
  check(first.includes(name), `the newest job should be the first row, but the first is ${JSON.stringify(first)}`);
  check(((await row.textContent()) || '').includes('7'), `the row should show the priority 7: ${await row.textContent()}`);
  await s.shot('queued');

  check((await api('POST', `/api/v1/jobs/${blocker.id}/cancel`)).status === 202, 'cancel the blocker');
  await row.filter({ hasText: 'running' }).waitFor();
  await rowOf(blockerName).filter({ hasText: 'cancelled' }).waitFor();
  log('the new job runs; the blocker is cancelled');

  writeFileSync(gate, '');
  await row.filter({ hasText: 'completed' }).waitFor();
  log('the new job completed');
  check((await waitStatus(job.id, 'completed')).status === 'completed', 'the job completed');
  check(await page.evaluate(() => window.__e2eNotReloaded === true), 'the page was reloaded');
  const feeds = s.requests.filter((r) => new URL(r.url).pathname === '/api/v1/events/stream');
  check(feeds.length > 0 && feeds.every((r) => r.type === 'fetch'), `the list should follow /api/v1/events/stream with fetch: ${feeds.map((r) => r.type).join(', ') || 'no such request'}`);
  const docs = s.requests.filter((r) => r.type === 'document');
  check(docs.length === 1, `the page was loaded ${docs.length} times, want once`);
  await s.shot('list');

  // The Status select filters the rows.
  const status = page.getByLabel('Status', { exact: true });
  await status.selectOption('cancelled');
  await row.waitFor({ state: 'hidden' });
  await rowOf(blockerName).waitFor();
  check((await bodyRows.filter({ hasText: blockerName }).count()) === 1, 'the cancelled job shows under "cancelled"');
  await status.selectOption('completed');
  await rowOf(blockerName).waitFor({ state: 'hidden' });
  await row.waitFor();
  await status.selectOption('running');
  await row.waitFor({ state: 'hidden' });
  await status.selectOption({ index: 0 });
  await row.waitFor();
  await rowOf(blockerName).waitFor();
  log('the Status select filters');
});
