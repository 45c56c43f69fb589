// "Livestream has ended", with the call's recordings when the caller may list them.

import { h } from '../ui.js';

export function endedView(ctx, { type, id, canListRecordings, onBack }) {
  const list = h('div', { class: 'recordings', 'aria-live': 'polite' }, h('p', { class: 'muted' }, canListRecordings ? 'Looking for recordings…' : ''));
  if (canListRecordings) {
    ctx.api
      .recordings(type, id)
      .then((answer) => {
        const items = (answer && answer.recordings) || [];
        if (!items.length) {
          list.replaceChildren(h('p', { class: 'muted' }, 'No recordings found'));
          return;
        }
        list.replaceChildren(
          h('h2', {}, 'Recordings'),
          h(
            'ul',
            { class: 'call-list' },
            items.map((r) =>
              h(
                'li',
                {},
                h('a', { href: r.url, download: r.filename || true }, r.filename || r.id),
                r.duration_seconds != null ? h('span', { class: 'muted' }, `${Math.round(r.duration_seconds)} s`) : null,
                r.size_bytes != null ? h('span', { class: 'muted' }, `${(r.size_bytes / 1e6).toFixed(1)} MB`) : null,
              ),
            ),
          ),
        );
      })
      .catch((error) => {
        if (error.code === 'not_implemented') {
          // Recording is not available on this server yet: there is nothing to list.
          list.replaceChildren(h('p', { class: 'muted' }, 'No recordings found'), h('p', { class: 'small muted' }, 'Recording is not available on this server yet.'));
        } else {
          list.replaceChildren(h('p', { class: 'error', role: 'alert' }, `Could not list the recordings: ${error.message} [${error.code}]`));
        }
      });
  } else {
    list.replaceChildren();
  }
  return h(
    'section',
    { class: 'card narrow ended', dataset: { view: 'ended' } },
    h('div', { class: 'ended-icon', 'aria-hidden': 'true' }, '■'),
    h('h1', { tabindex: -1 }, 'Livestream has ended'),
    h('p', { class: 'muted mono' }, `${type}:${id}`),
    list,
    h('div', { class: 'actions center' }, h('button', { type: 'button', onclick: onBack }, 'Back to home')),
  );
}
