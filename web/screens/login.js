// Login: a demo user (dev mode mints the token) or a pasted token.

import { Api, tokenClaims } from '../api.js';
import { h, button, busy, errorBox } from '../ui.js';

export const DEMO_USERS = [
  { id: 'alice', about: 'hosts the show' },
  { id: 'bob', about: 'watches' },
  { id: 'carol', about: 'watches' },
  { id: 'dave', about: 'watches' },
];

export function loginScreen(ctx) {
  const errors = errorBox();
  const api = new Api();

  async function loginAs(userId, btn) {
    errors.clear();
    await busy(btn, `Logging in as ${userId}…`, async () => {
      try {
        const answer = await api.devToken(userId);
        ctx.login(answer.token, answer.user_id);
      } catch (error) {
        if (error.status === 404 || error.status === 405) {
          errors.show('Demo users need dev mode (STAGECAST_DEV_MODE) on the server. Paste a token instead.');
        } else {
          errors.show(error, `Could not log in as ${userId}`);
        }
      }
    });
  }

  const tokenInput = h('textarea', {
    id: 'token',
    rows: 3,
    class: 'mono',
    placeholder: 'eyJhbGciOiJIUzI1NiIs…',
    autocomplete: 'off',
    spellcheck: false,
  });

  async function loginWithToken(event) {
    event.preventDefault();
    errors.clear();
    const token = tokenInput.value.trim();
    const claims = tokenClaims(token);
    if (!claims || !claims.sub) {
      errors.show('That is not a Stagecast token (a JWT with a user id in "sub").');
      return;
    }
    const btn = event.submitter || form.querySelector('button[type=submit]');
    await busy(btn, 'Checking…', async () => {
      try {
        await new Api(token).queryCalls({ limit: 1 });
        ctx.login(token, claims.sub);
      } catch (error) {
        errors.show(error, 'That token does not work');
      }
    });
  }

  const form = h(
    'form',
    { class: 'token-form', onsubmit: loginWithToken },
    h('label', { for: 'token' }, 'Or paste a user token'),
    tokenInput,
    h('button', { type: 'submit', class: 'secondary' }, 'Log in with token'),
  );

  const el = h(
    'section',
    { class: 'card narrow login' },
    h('h1', { tabindex: -1 }, 'Log in'),
    h('p', { class: 'muted' }, 'Pick a demo user to try Stagecast, or paste a token your backend signed.'),
    errors,
    h(
      'ul',
      { class: 'demo-users', 'aria-label': 'Demo users' },
      DEMO_USERS.map((user) =>
        h(
          'li',
          {},
          button(
            [h('span', { class: 'avatar', 'aria-hidden': 'true' }, user.id[0].toUpperCase()), h('span', { class: 'name' }, user.id), h('span', { class: 'about' }, user.about)],
            (e) => loginAs(user.id, e.currentTarget),
            { class: 'user-button', 'aria-label': `Log in as ${user.id}` },
          ),
        ),
      ),
    ),
    form,
  );
  return { name: 'login', title: 'Log in', el };
}
