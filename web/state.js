// The page's one module-level state. Every other module reads and changes it through the
// functions that own each part (api.js the token, jobs.js the list, app.js the route and the
// view); nothing else keeps state that outlives a view.

/** sessionStorage key of the bearer token: kept for this tab only, never in a URL. */
export const TOKEN_KEY = 'charond.token';

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return ''; // storage disabled: ask again on every load
  }
}

export const state = {
  /** The bearer token, or '' while charond has asked for none. */
  token: storedToken(),
  /** True while the sign-in form is shown: requests wait for a token. */
  signingIn: false,
  /** Jobs by id, as the list knows them (GET /api/v1/jobs, patched by the all-jobs stream). */
  jobs: new Map(),
  /** The all-jobs stream: its follower, and whether it is connected. */
  feed: { follower: null, connected: false },
  /** The current route: {name: 'jobs'|'job'|'submit', id, line}. */
  route: { name: 'jobs' },
  /** The view on screen: an object with el, destroy() and, for a job, update(route). */
  view: null,
  /** The submit editor's text, kept while the user goes elsewhere in the tab. */
  draft: null,
};
