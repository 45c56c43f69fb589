// Stagecast web app: a hash-routed single page. Screens live in ./screens/.

import { Api, tokenClaims } from './api.js';
import { h, button } from './ui.js';
import { loginScreen } from './screens/login.js';
import { homeScreen } from './screens/home.js';
import { hostScreen } from './screens/host.js';
import { playerScreen } from './screens/player.js';
import { hlsScreen } from './screens/hls.js';

const STORAGE_KEY = 'stagecast.session';

const ROUTES = [
  { pattern: /^\/login$/, screen: loginScreen, public: true },
  { pattern: /^\/?$/, screen: homeScreen },
  { pattern: /^\/host\/([\w-]+)\/([\w-]+)$/, screen: hostScreen, params: ['type', 'id'] },
  { pattern: /^\/watch\/([\w-]+)\/([\w-]+)$/, screen: playerScreen, params: ['type', 'id'] },
  { pattern: /^\/hls\/([\w-]+)\/([\w-]+)$/, screen: hlsScreen, params: ['type', 'id'] },
];

// Test and debugging hooks: the current screen's state and peer connections.
const debug = (window.stagecast = { screen: null });

let session = loadSession();
let current = null;
const main = document.getElementById('screen');
const userBox = document.getElementById('user');

function loadSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null');
    if (saved && saved.token) {
      const claims = tokenClaims(saved.token);
      if (!claims || !claims.exp || claims.exp * 1000 > Date.now()) return saved;
    }
  } catch {
    /* a broken entry is the same as none */
  }
  return null;
}

function login(token, userId) {
  session = { token, userId };
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
  const next = sessionStorage.getItem('stagecast.next');
  sessionStorage.removeItem('stagecast.next');
  navigate(next || '#/');
}

async function logout() {
  await closeCurrent();
  session = null;
  sessionStorage.removeItem(STORAGE_KEY);
  navigate('#/login');
  render();
}

function navigate(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

async function closeCurrent() {
  const screen = current;
  current = null;
  if (screen && screen.destroy) {
    try {
      await screen.destroy();
    } catch (error) {
      console.warn('closing the screen failed', error);
    }
  }
}

function renderUser() {
  if (!session) {
    userBox.replaceChildren();
    return;
  }
  userBox.replaceChildren(
    h('span', { class: 'who', title: `Logged in as ${session.userId}` }, h('span', { class: 'avatar', 'aria-hidden': 'true' }, session.userId.slice(0, 1).toUpperCase()), session.userId),
    button('Log out', logout, { class: 'secondary small', 'aria-label': `Log out ${session.userId}` }),
  );
}

let rendering = Promise.resolve();
function render() {
  rendering = rendering.then(renderNow, renderNow);
}

async function renderNow() {
  await closeCurrent();
  const path = decodeURIComponent(location.hash.replace(/^#/, '')) || '/';
  let route = null;
  let match = null;
  for (const candidate of ROUTES) {
    match = path.match(candidate.pattern);
    if (match) {
      route = candidate;
      break;
    }
  }
  if (!route) {
    navigate('#/');
    return;
  }
  if (!route.public && !session) {
    sessionStorage.setItem('stagecast.next', location.hash || '#/');
    navigate('#/login');
    return;
  }
  const params = {};
  (route.params || []).forEach((name, i) => (params[name] = match[i + 1]));
  renderUser();
  const api = new Api(session ? session.token : null);
  const ctx = { api, session, params, navigate, login, logout, debug };
  const screen = route.screen(ctx);
  current = screen;
  debug.screen = screen.name;
  main.dataset.screen = screen.name;
  document.title = screen.title ? `${screen.title} · Stagecast` : 'Stagecast';
  main.replaceChildren(screen.el);
  const focus = screen.el.querySelector('[autofocus]') || screen.el.querySelector('h1');
  if (focus) focus.focus({ preventScroll: true });
}

window.addEventListener('hashchange', render);
window.addEventListener('pagehide', () => closeCurrent());
render();
