// Scenario 7: charond with a token (CHARON_TOKEN). The page asks for it with a password field
// labelled "Token"; a wrong one is refused and asked again; the right one works (the list, a
// job submitted meanwhile appearing live, its page and log), is kept in sessionStorage, so a
// reload does not ask again, and goes as "Authorization: Bearer" on every API request once
// entered. No request URL ever holds the token, nor the wrong one.

import { TOKEN, check, log, required, session, submitFake, waitStatus } from './lib.mjs';

required('CHARON_TOKEN');
const wrong = 'not-the-token-0123456789abcdef';

await session(async (s) => {
  const { page } = s;
  const field = page.getByLabel('Token', { exact: true });
  const table = page.getByRole('table', { name: 'Jobs', exact: true });

  await s.open();
  await field.waitFor();
  check((await field.getAttribute('type')) === 'password', `the Token field is a ${await field.getAttribute('type')} field, want password`);
  await s.shot('asked');

  await field.fill(wrong);
  const refused = page.waitForResponse((r) => r.url().includes('/api/') && r.status() === 401);
  await field.press('Enter');
  await refused;
  await field.waitFor();
  check(!(await table.isVisible()), 'the jobs list shows after a wrong token');
  log('a wrong token is refused, and the Token field asked again');

  await field.fill(TOKEN);
  const signedIn = s.requests.length;
  await field.press('Enter');
  await table.waitFor();
  await field.waitFor({ state: 'hidden' });
  const name = `behind the token ${Math.random().toString(36).slice(2, 8)}`;
  const job = await submitFake(name, { fake: 'lines', count: 20 });
  await table.getByRole('row').filter({ hasText: name }).waitFor();
  log('with the token, the list shows and a new job appears live');
  const stored = await page.evaluate(() => Object.keys(sessionStorage).map((k) => sessionStorage.getItem(k)));
  check(stored.includes(TOKEN), 'the token is not kept in sessionStorage');

  await page.reload();
  await table.waitFor();
  await table.getByRole('row').filter({ hasText: name }).waitFor();
  check(!(await field.isVisible()), 'the page asked for the token again after a reload');
  log('after a reload the page does not ask again');

  await waitStatus(job.id, 'completed');
  await table.getByRole('link', { name, exact: true }).click();
  await s.logRegion().getByText('line 20', { exact: true }).waitFor();
  log('the job page shows its log');
  await s.shot('job');

  // Every API request from the sign-in on carries the token; no URL holds one.
  const after = s.requests.slice(signedIn).filter((r) => new URL(r.url).pathname.startsWith('/api/'));
  check(after.length > 0, 'no API request after signing in');
  const missing = [];
  for (const r of after) {
    const auth = (await r.headers).authorization;
    if (auth !== `Bearer ${TOKEN}`) missing.push(`${r.method} ${r.url} (${auth ? 'another Authorization' : 'no Authorization'})`);
  }
  check(missing.length === 0, `API requests without "Authorization: Bearer <token>": ${missing.join(', ')}`);
  const leaky = s.requests.filter((r) => r.url.includes(TOKEN) || r.url.includes(wrong) || /access_token/i.test(r.url));
  check(leaky.length === 0, `request URLs hold a token: ${leaky.map((r) => r.url).join(', ')}`);
  log(`${after.length} API requests since signing in, each with the bearer header; no URL holds a token`);
});
