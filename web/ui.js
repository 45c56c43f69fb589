// Small DOM helpers shared by the screens.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function button(label, onclick, attrs = {}) {
  return h('button', { type: 'button', onclick, ...attrs }, label);
}

// Disables the button and shows `busyLabel` while `work` runs.
export async function busy(btn, busyLabel, work) {
  const saved = [...btn.childNodes];
  btn.disabled = true;
  btn.setAttribute('aria-busy', 'true');
  btn.replaceChildren(h('span', { class: 'spinner', 'aria-hidden': 'true' }), busyLabel);
  try {
    return await work();
  } finally {
    btn.disabled = false;
    btn.removeAttribute('aria-busy');
    btn.replaceChildren(...saved);
  }
}

// HH:MM (local time), with the date when it is not today.
export function clockTime(iso) {
  const date = new Date(iso);
  const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hour12: false });
  if (date.toDateString() === new Date().toDateString()) return time;
  return `${date.toLocaleDateString([], { day: 'numeric', month: 'short', year: 'numeric' })}, ${time}`;
}

// "Livestream starting at HH:MM" (local time), or "starting soon" once that time has passed.
export function startsText(startsAt) {
  if (!startsAt || new Date(startsAt).getTime() <= Date.now()) return 'Livestream starting soon';
  return `Livestream starting at ${clockTime(startsAt)}`;
}

const WORDS = {
  network_error: 'The server could not be reached.',
  unauthenticated: 'You are not signed in, or your token is not valid. Log in again.',
  token_expired: 'Your session has expired. Log in again.',
  forbidden: 'You are not allowed to do that.',
  not_found: 'There is no such livestream.',
  call_ended: 'This livestream has ended.',
  call_in_backstage: 'This livestream has not started yet.',
  capacity_exhausted: 'The livestream is full right now. Try again in a moment.',
  conflict: 'That cannot be done right now.',
  rate_limited: 'Too many requests. Wait a moment and try again.',
  invalid_request: 'The request was not valid.',
  no_compatible_codec: 'Your browser cannot send video in a format this livestream uses.',
  not_implemented: 'This server does not support that yet.',
  internal_error: 'Something went wrong on the server.',
  connection_failed: 'The media connection failed.',
  timeout: 'The server took too long to answer.',
  NotAllowedError: 'Camera and microphone access was denied. Allow them in your browser and try again.',
  NotFoundError: 'No camera or microphone was found.',
  NotReadableError: 'The camera or microphone is in use by another application.',
};

const SELF_EXPLAINED = new Set(['call_in_backstage', 'call_ended', 'not_found', 'token_expired', 'network_error', 'NotAllowedError', 'NotFoundError']);

// A sentence for any error: the API's code in words, the server's message, the code itself.
export function describeError(error, action = '') {
  const code = error.code || error.name || 'error';
  const words = WORDS[code];
  let extra = '';
  if (code === 'call_in_backstage' && error.details && error.details.starts_at) {
    const ahead = error.details.join_ahead_time_seconds || 0;
    const opens = new Date(new Date(error.details.starts_at).getTime() - 1000 * ahead);
    extra = ` It starts at ${clockTime(error.details.starts_at)}`;
    extra += ahead ? `; you can join from ${clockTime(opens.toISOString())}.` : '.';
  }
  if (code === 'capacity_exhausted' && error.details && error.details.reason) {
    extra = ` (${error.details.reason})`;
  }
  if (code === 'forbidden' && error.details && error.details.missing_capability) {
    extra = ` (missing permission: ${error.details.missing_capability})`;
  }
  // The server's own message, unless the words above already say all it says.
  const message = error.message && words && !SELF_EXPLAINED.has(code) ? ` ${error.message}` : !words && error.message ? ` ${error.message}` : '';
  const lead = action ? `${action}: ` : '';
  return `${lead}${words || 'Something went wrong.'}${extra}${message} [${code}]`;
}

// An alert region that shows one error at a time (never swallowed, always in words).
export function errorBox() {
  const box = h('div', { class: 'error', role: 'alert', hidden: true });
  box.show = (error, action) => {
    box.replaceChildren(
      h('span', { class: 'error-text' }, typeof error === 'string' ? error : describeError(error, action)),
      button('Dismiss', () => box.clear(), { class: 'link', 'aria-label': 'Dismiss the error' }),
    );
    box.hidden = false;
    if (error && typeof error !== 'string') console.warn(action, error);
  };
  box.clear = () => {
    box.hidden = true;
    box.replaceChildren();
  };
  return box;
}

export async function copyText(text, btn) {
  try {
    await navigator.clipboard.writeText(text);
    flash(btn, 'Copied');
  } catch {
    // No clipboard permission: select the text so the user can copy it by hand.
    const field = btn.parentElement.querySelector('input');
    if (field) {
      field.focus();
      field.select();
    }
    flash(btn, 'Press Ctrl+C');
  }
}

function flash(btn, text) {
  const label = btn.textContent;
  btn.textContent = text;
  setTimeout(() => (btn.textContent = label), 1500);
}

// A read-only field with a copy button, labelled.
export function copyField(label, value, id) {
  const input = h('input', { id, type: 'text', readOnly: true, value, class: 'mono' });
  const copy = button('Copy', (e) => copyText(value, e.currentTarget), { 'aria-label': `Copy the ${label.toLowerCase()}` });
  return h('div', { class: 'field' }, h('label', { for: id }, label), h('div', { class: 'copy-row' }, input, copy));
}

export function randomId(length = 8) {
  const alphabet = 'abcdefghijkmnpqrstuvwxyz23456789';
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
}

export function badge(text, kind) {
  return h('span', { class: `badge badge-${kind}` }, text);
}
