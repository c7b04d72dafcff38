// The dashboard's entry point: the hash router, sign-in, and starting the list and its stream.
//
// Routes:  #/                  the jobs list
//          #/submit            the editor
//          #/jobs/<id>         a job
//          #/jobs/<id>/L<n>    a job, its log at line n (marked)

import { AuthRequired, api, errorText, setAuthHandler, setToken } from './api.js';
import { h } from './dom.js';
import { JobPage } from './job.js';
import { jobsView, loadJobs, showListError, startFeed, stopFeed } from './jobs.js';
import { state } from './state.js';
import { SubmitPage } from './submit.js';

const main = document.getElementById('main');
const conn = document.getElementById('conn');

/** Reading the list again after a failure waits 1 s, doubling, at most 10 s. */
let bootDelay = 1000;
let bootTimer = 0;

export function parseRoute(hash) {
  const path = hash.replace(/^#/, '') || '/';
  const m = /^\/jobs\/([A-Za-z0-9._~-]+)(?:\/L(\d+))?\/?$/.exec(path);
  if (m) return { name: 'job', id: m[1], line: m[2] ? Number(m[2]) : 0 };
  if (path === '/submit') return { name: 'submit' };
  return { name: 'jobs' };
}

function closeView() {
  if (!state.view) return;
  state.view.destroy();
  state.view.el.remove();
  state.view = null;
}

/** render shows what the address names; the same job at another line only moves its log. */
function render() {
  if (state.signingIn) return;
  const route = parseRoute(location.hash);
  state.route = route;
  if (route.name === 'job' && state.view instanceof JobPage && state.view.id === route.id) {
    state.view.update(route);
    return;
  }
  closeView();
  // The list stays up to date while it is out of the document: it is taken out rather than
  // hidden, so that the page holds one set of names at a time.
  const list = jobsView();
  if (route.name === 'jobs') {
    if (!list.isConnected) main.append(list);
    document.title = 'Jobs · charond';
    return;
  }
  list.remove();
  state.view = route.name === 'job' ? new JobPage(route) : new SubmitPage();
  if (route.name === 'submit') document.title = 'New job · charond';
  main.append(state.view.el);
  window.scrollTo(0, 0);
}

function setConn(s) {
  const text = { open: 'live', retrying: 'reconnecting…' }[s] || '';
  conn.textContent = text;
  conn.className = `conn conn-${s}`;
  conn.title = s === 'open' ? 'Following every job’s changes' : 'The all-jobs stream is down: reconnecting';
}

/** boot shows the route and starts the list. */
function boot() {
  render();
  startList();
}

/** startList reads the list, then follows the all-jobs stream; it tries again until it can. */
async function startList() {
  clearTimeout(bootTimer);
  let lastEventId;
  try {
    lastEventId = await loadJobs();
  } catch (err) {
    if (err instanceof AuthRequired) return; // the sign-in form is up
    showListError(err);
    setConn('retrying');
    bootTimer = setTimeout(startList, bootDelay);
    bootDelay = Math.min(bootDelay * 2, 10000);
    return;
  }
  bootDelay = 1000;
  startFeed(lastEventId, setConn);
}

// ---- sign-in -----------------------------------------------------------------------------

/** askToken replaces the page by the sign-in form, once, until a token is accepted. */
function askToken() {
  if (state.signingIn) return;
  state.signingIn = true;
  clearTimeout(bootTimer);
  stopFeed();
  closeView();
  setConn('');
  jobsView().remove();

  const input = h('input', { type: 'password', 'aria-label': 'Token', placeholder: 'Token', autocomplete: 'current-password', required: true });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const button = h('button', { type: 'submit', class: 'btn primary' }, 'Sign in');
  const form = h(
    'form',
    { class: 'card signin', on: { submit: (e) => signIn(e, input, error, button, form) } },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'This charond needs its bearer token. The page keeps it for this tab only and sends it with every request.'),
    input,
    button,
    error,
  );
  main.append(form);
  input.focus();
}

async function signIn(e, input, error, button, form) {
  e.preventDefault();
  const token = input.value.trim();
  if (!token) return;
  button.disabled = true;
  error.hidden = true;
  try {
    await api('/api/v1/jobs?limit=1', { token });
  } catch (err) {
    error.textContent = err instanceof AuthRequired ? 'charond refused this token.' : `Cannot sign in: ${errorText(err)}`;
    error.hidden = false;
    button.disabled = false;
    input.select();
    return;
  }
  setToken(token);
  state.signingIn = false;
  form.remove();
  boot();
}

setAuthHandler(askToken);
window.addEventListener('hashchange', render);
boot();
