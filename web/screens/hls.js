// The HLS player for a call's playlist_url (hls.js from /vendor/hls.js, or native HLS).

import { h, button, errorBox } from '../ui.js';

let hlsLoading = null;
function loadHlsJs() {
  if (window.Hls) return Promise.resolve(window.Hls);
  hlsLoading =
    hlsLoading ||
    new Promise((resolve, reject) => {
      const script = h('script', { src: '/vendor/hls.js' });
      script.onload = () => resolve(window.Hls);
      script.onerror = () => {
        hlsLoading = null;
        reject(Object.assign(new Error('hls.js is not installed on this server (run scripts/setup).'), { code: 'not_found' }));
      };
      document.head.append(script);
    });
  return hlsLoading;
}

export function hlsScreen(ctx) {
  const { type, id } = ctx.params;
  const errors = errorBox();
  const video = h('video', { playsInline: true, muted: true, class: 'video', 'aria-label': 'The livestream (HLS)' });
  const message = h('div', { class: 'player-overlay', 'aria-live': 'polite' }, h('p', {}, 'Loading…'));
  let hls = null;

  const el = h(
    'section',
    { class: 'player', dataset: { view: 'loading' } },
    h('div', { class: 'player-head' }, button('← Back', () => ctx.navigate('#/'), { class: 'secondary small', 'aria-label': 'Back to home' }), h('h1', { tabindex: -1, class: 'player-title' }, 'HLS ', h('span', { class: 'mono' }, id))),
    errors,
    h('div', { class: 'video-wrap' }, video, message),
    h('p', { class: 'muted small' }, 'HLS plays with a few seconds of delay. For sub-second latency use the ', h('a', { href: `#/watch/${type}/${id}` }, 'WebRTC player'), '.'),
  );

  function say(text, view) {
    message.replaceChildren(h('p', { class: 'big' }, text));
    message.hidden = !text;
    el.dataset.view = view;
  }

  async function start() {
    let call;
    try {
      call = (await ctx.api.getCall(type, id)).call;
    } catch (error) {
      errors.show(error, 'Could not load the livestream');
      say('', 'error');
      return;
    }
    const egress = (call.egress && call.egress.hls) || {};
    if (call.ended_at) return say('Livestream has ended', 'ended');
    if (egress.status !== 'running' || !egress.playlist_url) return say('HLS is not running for this call', 'not-running');
    const url = new URL(egress.playlist_url, location.href).toString();
    // hls.js first (Media Source Extensions), native HLS only without it: Chromium answers
    // canPlayType('application/vnd.apple.mpegurl') with "maybe" and then cannot play the stream.
    const native = !!video.canPlayType('application/vnd.apple.mpegurl');
    try {
      let Hls = null;
      try {
        Hls = await loadHlsJs();
      } catch (error) {
        if (!native) throw error;
      }
      if (Hls && Hls.isSupported()) {
        hls = new Hls({ lowLatencyMode: true });
        hls.on(Hls.Events.ERROR, (_event, data) => {
          if (data.fatal) errors.show(`The HLS stream failed: ${data.details || data.type}.`);
        });
        hls.loadSource(url);
        hls.attachMedia(video);
      } else if (native) {
        video.addEventListener('error', () => errors.show('This browser could not play the HLS stream.'), { once: true });
        video.src = url;
      } else {
        throw Object.assign(new Error('This browser cannot play HLS.'), { code: 'not_supported' });
      }
      video.controls = true;
      say('', 'playing');
      await video.play().catch(() => {});
    } catch (error) {
      errors.show(error, 'Could not play HLS');
      say('', 'error');
    }
  }

  start();
  return {
    name: 'hls',
    title: `HLS ${id}`,
    el,
    destroy() {
      if (hls) hls.destroy();
      video.removeAttribute('src');
    },
  };
}
