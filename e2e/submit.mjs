// Scenario 5: submitting through the editor. A document that is not YAML, and one that is but
// has no playbook, are refused: the page shows charond's own message (the one the API gives
// for the same body) in an alert. A valid one opens the new job's page, #/jobs/<id>.

import { api, check, hashId, log, session, waitStatus } from './lib.mjs';

const notYAML = 'name: [unclosed\nplaybook: "site.yml"\n';
const noPlaybook = 'name: "no playbook"\npriority: 5\n';

await session(async (s) => {
  const { page } = s;
  await s.open();
  await page.getByRole('table', { name: 'Jobs', exact: true }).waitFor();

  // The editor: reached from the list, by its "New job" link or button.
  await page.getByRole('link', { name: 'New job', exact: true }).or(page.getByRole('button', { name: 'New job', exact: true })).first().click();
  const editor = page.getByRole('textbox', { name: 'Job', exact: true });
  await editor.waitFor();
  const submit = page.getByRole('button', { name: 'Submit', exact: true });
  const alert = page.getByRole('alert');

  for (const [what, body] of [
    ['not YAML', notYAML],
    ['no playbook', noPlaybook],
  ]) {
    const want = await api('POST', '/api/v1/jobs', body, { type: 'application/x-yaml' });
    check(want.status === 400 && want.json && want.json.error, `charond should refuse the document (${what}): ${want.status} ${want.text}`);
    await editor.fill(body);
    await submit.click();
    const shown = alert.filter({ hasText: want.json.error });
    try {
      await shown.waitFor();
    } catch {
      const alerts = await alert.allTextContents();
      throw new Error(`${what}: no alert shows charond's message ${JSON.stringify(want.json.error)}; alerts: ${JSON.stringify(alerts)}`);
    }
    check(/#\/submit|^$/.test(await page.evaluate(() => location.hash)) || (await editor.isVisible()), `${what}: the editor should stay open after an error`);
    log(`${what}: the alert says ${JSON.stringify(await shown.first().textContent())}`);
    if (what === 'not YAML') await s.shot('error');
  }

  const name = `from the editor ${Math.random().toString(36).slice(2, 8)}`;
  const doc = `name: "${name}"\nplaybook: |\n  - hosts: localhost\n    tasks: []\nvariables:\n  fake: lines\n  count: 5\npriority: 9\n`;
  await editor.fill(doc);
  await submit.click();
  await page.waitForFunction(() => /^#\/jobs\/[^/]+$/.test(location.hash));
  const id = await hashId(page);
  const list = await api('GET', '/api/v1/jobs?limit=1');
  check(list.json.jobs[0].id === id && list.json.jobs[0].name === name, `the page opened #/jobs/${id}, but the newest job is ${JSON.stringify(list.json.jobs[0])}`);
  await page.getByRole('heading', { name, exact: true }).waitFor();
  await waitStatus(id, 'completed');
  await s.logRegion().getByText('line 5', { exact: true }).waitFor();
  log(`a valid job opened its page, #/jobs/${id}, and its log`);
  await s.shot('job');
});
