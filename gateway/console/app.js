// The console's entry: the session, the navigation and the router.
// Routes live in the URL's fragment (#/repository/acme/app/tags), so the
// node serves one page at `/` and the back button works.

import { h, api, attempt, notice, form, session } from './ui.js';
import { reposPage, repoPage, orgsPage, orgPage, accountPage } from './pages.js';
import { clusterPage } from './cluster.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');

function renderNav() {
  if (!session.user) return nav.replaceChildren();
  const here = location.hash || '#/repositories';
  const link = (href, label) => h('a', { href, 'aria-current': here.startsWith(href) ? 'page' : null }, label);
  const err = notice();
  nav.replaceChildren(
    h('a.brand', { href: '#/repositories' }, 'berth'),
    link('#/repositories', 'Repositories'),
    link('#/organizations', 'Organizations'),
    session.superUser ? link('#/cluster', 'Cluster') : null,
    link('#/account', 'Account'),
    h('span.spacer'),
    h('span.who', { 'data-user': session.user }, session.user),
    h('button', { type: 'button', 'data-action': 'sign-out', onclick: () => attempt(err, async () => {
      await api('DELETE', '/api/v1/session');
      session.user = null;
      session.csrf = null;
      location.hash = '#/signin';
    }) }, 'Sign out'), err);
}

function signInPage() {
  document.title = 'Sign in · berth';
  const f = form([
    { name: 'username', label: 'User name', required: true, autocomplete: 'username' },
    { name: 'password', label: 'Password', type: 'password', required: true, autocomplete: 'current-password' },
  ], 'Sign in', async (v) => {
    const s = await api('POST', '/api/v1/session', { username: v.username, password: v.password });
    session.user = s.username;
    session.superUser = s.super_user;
    session.csrf = s.csrf_token;
    location.hash = '#/repositories';
  }, { action: 'sign-in' });
  main.append(h('div.signin', h('h1', 'Sign in to berth'), h('p', `Node ${location.host}`), f));
  f.inputs.username.focus();
}

async function route() {
  main.replaceChildren();
  const parts = (location.hash.replace(/^#\/?/, '') || 'repositories').split('/').map(decodeURIComponent);
  if (!session.user && parts[0] !== 'signin') {
    location.hash = '#/signin';
    return;
  }
  renderNav();
  const err = notice();
  main.append(err);
  await attempt(err, async () => {
    switch (parts[0]) {
      case 'signin': return session.user ? (location.hash = '#/repositories') : signInPage();
      case 'repositories': return reposPage(main);
      case 'repository': return repoPage(main, parts[1], parts[2], parts[3], parts[4]);
      case 'organizations': return orgsPage(main);
      case 'organization': return orgPage(main, parts[1], parts[2]);
      case 'account': return accountPage(main);
      case 'cluster': return clusterPage(main);
      default: throw new Error(`no page ${location.hash}`);
    }
  });
  main.focus({ preventScroll: true });
}

async function start() {
  try {
    const s = await api('GET', '/api/v1/session');
    session.user = s.username;
    session.superUser = s.super_user;
    session.csrf = s.csrf_token;
  } catch (_) {
    session.user = null;
  }
  window.addEventListener('hashchange', route);
  await route();
  document.body.dataset.ready = 'true';
}

// The skip link moves focus to the page's content; followed as a link it
// would change the fragment, which is the router's.
document.querySelector('a.skip').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});

start();
