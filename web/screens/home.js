// Home: create a livestream (you host it) or view one by its id.

import { h, button, busy, errorBox, randomId, clockTime, badge } from '../ui.js';

export const CALL_TYPE = 'livestream';
export const STARTS_IN_SECONDS = 120;
export const JOIN_AHEAD_SECONDS = 120;

// A call id from what the user typed: an id, or a viewer link (…#/watch/livestream/abc).
export function parseCallId(text) {
  const value = text.trim();
  const link = value.match(/#\/(?:watch|host|hls)\/([\w-]+)\/([\w-]+)/);
  if (link) return { type: link[1], id: link[2] };
  const cid = value.match(/^([\w-]+):([\w-]+)$/);
  if (cid) return { type: cid[1], id: cid[2] };
  if (/^[\w-]{1,64}$/.test(value)) return { type: CALL_TYPE, id: value };
  return null;
}

export function homeScreen(ctx) {
  const errors = errorBox();

  async function create(event) {
    errors.clear();
    const btn = event.currentTarget;
    await busy(btn, 'Creating…', async () => {
      const id = randomId();
      const startsAt = new Date(Date.now() + STARTS_IN_SECONDS * 1000).toISOString();
      try {
        await ctx.api.createCall(CALL_TYPE, id, {
          starts_at: startsAt,
          settings_override: { backstage: { join_ahead_time_seconds: JOIN_AHEAD_SECONDS } },
        });
      } catch (error) {
        errors.show(error, 'Could not create the livestream');
        return;
      }
      ctx.navigate(`#/host/${CALL_TYPE}/${id}`);
    });
  }

  // "View a livestream": an inline dialog asking for the call id.
  const idInput = h('input', { id: 'watch-id', type: 'text', required: true, autocomplete: 'off', placeholder: 'e.g. k3x9q2mz', class: 'mono' });
  const idError = h('p', { class: 'field-error', id: 'watch-id-error', role: 'alert' });
  const dialog = h(
    'dialog',
    { class: 'dialog', 'aria-labelledby': 'watch-title' },
    h(
      'form',
      {
        method: 'dialog',
        onsubmit: (event) => {
          event.preventDefault();
          const target = parseCallId(idInput.value);
          if (!target) {
            idError.textContent = 'Enter a call id (letters, digits, - and _) or a viewer link.';
            idInput.setAttribute('aria-invalid', 'true');
            return;
          }
          dialog.close();
          ctx.navigate(`#/watch/${target.type}/${target.id}`);
        },
      },
      h('h2', { id: 'watch-title' }, 'View a livestream'),
      h('label', { for: 'watch-id' }, 'Call id or viewer link'),
      idInput,
      idError,
      h(
        'div',
        { class: 'actions' },
        button('Cancel', () => dialog.close(), { class: 'secondary' }),
        h('button', { type: 'submit' }, 'Join'),
      ),
    ),
  );

  function openDialog() {
    idInput.value = '';
    idError.textContent = '';
    idInput.removeAttribute('aria-invalid');
    dialog.showModal();
    idInput.focus();
  }

  const mine = h('ul', { class: 'call-list', 'aria-label': 'Your livestreams' });
  const mineSection = h('section', { class: 'card', hidden: true }, h('h2', {}, 'Your livestreams'), mine);
  ctx.api
    .queryCalls({ type: CALL_TYPE, created_by: ctx.session.userId, limit: 5 })
    .then((answer) => {
      const calls = (answer.calls || []).map((c) => c.call).filter((c) => !c.ended_at);
      if (!calls.length) return;
      mine.replaceChildren(
        ...calls.map((call) =>
          h(
            'li',
            {},
            h('span', { class: 'mono' }, call.id),
            call.backstage ? badge('Backstage', 'backstage') : badge('Live', 'live'),
            call.starts_at ? h('span', { class: 'muted' }, `starts ${clockTime(call.starts_at)}`) : null,
            h('a', { href: `#/host/${call.type}/${call.id}`, class: 'button-link secondary small' }, 'Open'),
          ),
        ),
      );
      mineSection.hidden = false;
    })
    .catch((error) => errors.show(error, 'Could not list your livestreams'));

  const el = h(
    'div',
    { class: 'stack' },
    h(
      'section',
      { class: 'card hero' },
      h('h1', { tabindex: -1 }, `Hi ${ctx.session.userId}`),
      h('p', { class: 'muted' }, 'Host a livestream from this browser, or watch one with sub-second latency.'),
      errors,
      h(
        'div',
        { class: 'choices' },
        button([h('strong', {}, 'Create a livestream'), h('span', {}, 'Backstage first, then go live')], create, { class: 'choice primary', 'aria-label': 'Create a livestream' }),
        button([h('strong', {}, 'View a livestream'), h('span', {}, 'Enter a call id')], openDialog, { class: 'choice', 'aria-label': 'View a livestream' }),
      ),
    ),
    mineSection,
    dialog,
  );
  return { name: 'home', title: 'Home', el };
}
