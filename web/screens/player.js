// The viewer's player: WebRTC from the SFU (join → subscribe → answer), backstage / live /
// host away / ended states, the live viewer count, and reconnection with backoff.

import { viewerCount } from '../api.js';
import { EventsSocket } from '../events.js';
import { keepConnected } from '../media.js';
import { SfuSession, FINAL_CLOSE_CODES } from '../signalling.js';
import { h, button, errorBox, clockTime, badge, describeError } from '../ui.js';
import { endedView } from './ended.js';


export function playerScreen(ctx) {
  const { type, id } = ctx.params;
  const cid = `${type}:${id}`;
  const state = {
    call: null,
    capabilities: [],
    live: false,
    ended: false,
    tracks: new Map(),
    sfu: null,
    events: null,
    destroyed: false,
    reconnecting: false,
    retryTimer: null,
    startedAt: performance.now(),
    firstFrameAt: null,
  };
  const debug = (ctx.debug.player = { state, pc: null, firstFrameAt: null, startedAt: state.startedAt, view: 'connecting' });

  const errors = errorBox();
  const notice = h('div', { class: 'notice warn', role: 'status', hidden: true });
  const video = h('video', { autoplay: true, playsInline: true, muted: true, class: 'video', 'aria-label': 'The livestream' });
  const overlay = h('div', { class: 'player-overlay', 'aria-live': 'polite' });
  const stageBadge = h('span', { class: 'stage-badge' });
  const viewers = h('span', { class: 'viewers', 'aria-live': 'polite' });
  const unmuteBtn = button('Unmute', unmute, { class: 'secondary small unmute', 'aria-label': 'Unmute the livestream', hidden: true });
  const backBtn = button('← Back', () => ctx.navigate('#/'), { class: 'secondary small', 'aria-label': 'Back to home' });
  const info = h('p', { class: 'player-info muted' });
  const title = h('h1', { tabindex: -1, class: 'player-title' }, 'Livestream ', h('span', { class: 'mono' }, id));

  const el = h(
    'section',
    { class: 'player', dataset: { view: 'connecting' } },
    h('div', { class: 'player-head' }, backBtn, title),
    errors,
    notice,
    h('div', { class: 'video-wrap' }, video, overlay, h('div', { class: 'video-overlay' }, stageBadge, viewers), unmuteBtn),
    info,
  );

  function setOverlay(...items) {
    const children = items.filter(Boolean);
    overlay.replaceChildren(...children);
    overlay.hidden = children.length === 0;
  }

  function hostVideo() {
    for (const track of state.tracks.values()) if (track.kind === 'video') return track;
    return null;
  }

  function render() {
    if (state.destroyed) return;
    if (state.ended) {
      showEnded();
      return;
    }
    if (state.error) return;
    const session = (state.call && state.call.session) || {};
    let view = 'connecting';
    if (state.reconnecting) {
      view = 'reconnecting';
    } else if (state.live) {
      const track = hostVideo();
      view = track && !track.muted ? 'live' : 'away';
    } else if (state.call && state.sfu) {
      view = 'waiting';
    }
    el.dataset.view = view;
    debug.view = view;
    const known = Boolean(state.call);
    stageBadge.replaceChildren(!known ? '' : state.live ? badge('● LIVE', 'live') : badge('BACKSTAGE', 'backstage'));
    const count = state.live ? viewerCount(session) : session.waiting_count || 0;
    viewers.textContent = !known ? '' : state.live ? `Viewers: ${count}` : `${count} waiting`;
    viewers.hidden = !known;
    const host = state.call && state.call.created_by;
    const hostName = !host ? '' : typeof host === 'string' ? host : host.name || host.id;
    info.textContent = [
      hostName ? `Hosted by ${hostName}` : '',
      state.live && state.call.live_started_at ? `live since ${clockTime(state.call.live_started_at)}` : '',
      'WebRTC, sub-second latency',
    ].filter(Boolean).join(' · ');
    const hls = state.call && state.call.egress && state.call.egress.hls;
    if (hls && hls.status === 'running') info.append(' · ', h('a', { href: `#/hls/${type}/${id}` }, 'Watch with HLS'));
    if (view === 'waiting') {
      const starts = state.call && state.call.starts_at;
      setOverlay(
        h('p', { class: 'big' }, 'Waiting for the livestream to start'),
        h('p', {}, starts && new Date(starts) > new Date() ? `Starting at ${clockTime(starts)}` : 'Starting soon'),
        h('p', { class: 'muted small' }, 'You will see the host as soon as they go live; stay on this page.'),
      );
    } else if (view === 'away') {
      const track = hostVideo();
      setOverlay(
        h('p', { class: 'big' }, track ? 'The host turned their camera off' : 'The host is away'),
        h('p', { class: 'muted small' }, 'The livestream is live; the picture comes back when the host does.'),
      );
    } else if (view === 'connecting' || view === 'reconnecting') {
      setOverlay(h('span', { class: 'spinner big-spinner', 'aria-hidden': 'true' }), h('p', {}, view === 'connecting' ? 'Connecting…' : 'Reconnecting…'));
    } else {
      setOverlay();
    }
  }

  function showError(error, action) {
    state.error = true;
    el.dataset.view = 'error';
    debug.view = 'error';
    errors.show(error, action);
    stageBadge.replaceChildren();
    viewers.textContent = '';
    viewers.hidden = true;
    info.textContent = '';
    const early = error.code === 'call_in_backstage';
    setOverlay(
      h('p', { class: 'big' }, early ? 'This livestream has not started yet' : 'Cannot play this livestream'),
      early && error.details && error.details.starts_at ? h('p', {}, `Starting at ${clockTime(error.details.starts_at)}`) : null,
      button('Try again', () => { errors.clear(); start(); }),
    );
  }

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  function updateCounts(counts) {
    if (!state.call) return;
    state.call.session = { ...(state.call.session || {}), ...counts };
    render();
  }

  function startEvents() {
    state.events = new EventsSocket(ctx.session.token, {
      onEvent: (event) => {
        if (event.cid !== cid) return;
        if (event.type === 'call.participant_count_updated') updateCounts(event);
        else if (event.call) {
          state.call = { ...state.call, ...event.call, session: state.call && state.call.session };
          if (event.call.ended_at) state.ended = true;
          render();
        }
      },
      onError: (error) => errors.show(error, 'Live updates'),
    });
    state.events.watch(cid);
  }

  function onMessage(message) {
    switch (message.type) {
      case 'call_state':
        state.live = message.live;
        state.ended = message.ended;
        if (state.call) state.call.backstage = !message.live;
        if (message.live) keyframeSoon();
        break;
      case 'track_published':
        state.tracks.set(message.track_id, { kind: message.kind, muted: message.muted, participant_id: message.participant_id });
        if (message.kind === 'video') keyframeSoon();
        break;
      case 'track_unpublished':
        state.tracks.delete(message.track_id);
        break;
      case 'mute_changed': {
        const track = state.tracks.get(message.track_id);
        if (track) track.muted = message.muted;
        break;
      }
      case 'goaway':
        switchNode();
        return;
      case 'error':
        errors.show(message, 'Media server');
        return;
      default:
        return;
    }
    render();
  }

  function keyframeSoon() {
    const sfu = state.sfu;
    setTimeout(() => sfu && sfu === state.sfu && sfu.requestKeyframe(), 300);
  }

  async function connect() {
    const answer = await ctx.api.join(type, id);
    if (state.destroyed) return;
    state.call = answer.call;
    state.capabilities = answer.own_capabilities || [];
    if (answer.call.ended_at) {
      state.ended = true;
      render();
      return;
    }
    const sfu = new SfuSession(answer.credentials, {
      onMessage: (message) => state.sfu === sfu && onMessage(message),
      onClose: (info) => {
        if (state.sfu !== sfu || state.destroyed) return;
        if (info.code === 4009 || (info.goodbye && info.goodbye.reason === 'call_ended')) {
          state.ended = true;
          render();
        } else if (info.code === 4010) {
          state.sfu = null;
          showNotice('You opened this livestream in another window; this one stopped playing.');
        } else if (!info.byUs && !FINAL_CLOSE_CODES.has(info.code)) {
          reconnect(`Connection lost (${info.code})`);
        }
      },
      onMediaFailed: () => reconnect('The media connection failed'),
    });
    state.sfu = sfu;
    const joined = await sfu.connect();
    state.live = joined.call.live;
    state.ended = joined.call.ended;
    state.call.backstage = !joined.call.live;
    state.tracks.clear();
    for (const track of joined.tracks || []) state.tracks.set(track.track_id, { kind: track.kind, muted: track.muted, participant_id: track.participant_id });
    const pc = await sfu.subscribe(onTrack);
    debug.pc = pc;
    window.stagecast.viewerPc = pc;
    pc.addEventListener('connectionstatechange', () => {
      if (state.sfu !== sfu) return;
      if (pc.connectionState === 'disconnected') showNotice('The connection is unstable…');
      else if (pc.connectionState === 'connected' && !state.reconnecting) showNotice('');
    });
    render();
  }

  function onTrack(event) {
    const stream = video.srcObject instanceof MediaStream ? video.srcObject : new MediaStream();
    for (const old of stream.getTracks()) if (old.kind === event.track.kind && old !== event.track) stream.removeTrack(old);
    if (!stream.getTracks().includes(event.track)) stream.addTrack(event.track);
    if (video.srcObject !== stream) {
      video.srcObject = stream;
      play();
    }
  }

  async function play() {
    try {
      video.muted = false;
      await video.play();
      unmuteBtn.hidden = true;
    } catch {
      // Autoplay with sound needs a user gesture: play muted and offer Unmute.
      video.muted = true;
      unmuteBtn.hidden = false;
      video.play().catch(() => {});
    }
  }

  function unmute() {
    video.muted = false;
    video.play().catch(() => {});
    unmuteBtn.hidden = true;
  }

  function watchFrames() {
    if (!video.requestVideoFrameCallback) return;
    video.requestVideoFrameCallback(() => {
      if (state.firstFrameAt === null) {
        state.firstFrameAt = performance.now();
        debug.firstFrameAt = state.firstFrameAt;
        console.info(`first frame ${Math.round(state.firstFrameAt - state.startedAt)} ms after opening the player`);
      }
    });
  }

  const { reconnect, switchNode } = keepConnected({
    state,
    connect,
    showNotice,
    onGiveUp: (error) => {
      if (error.code === 'call_ended') {
        state.ended = true;
        render();
      } else showError(error, 'Could not reconnect');
    },
    onChange: render,
    debug,
  });

  async function start() {
    clearTimeout(state.retryTimer);
    state.error = false;
    render();
    try {
      await connect();
    } catch (error) {
      if (state.sfu) state.sfu.close();
      state.sfu = null;
      showError(error, 'Could not join the livestream');
      if (error.code === 'call_in_backstage' && error.details && error.details.starts_at) {
        // Try again when the join-ahead window opens.
        const opens = new Date(error.details.starts_at).getTime() - 1000 * (error.details.join_ahead_time_seconds || 0);
        const wait = opens - Date.now() + 500;
        // (setTimeout overflows past 24.8 days; a viewer coming back that much later reloads)
        if (wait < 2 ** 31 - 1) state.retryTimer = setTimeout(() => { errors.clear(); start(); }, Math.max(1000, wait));
      }
      if (['network_error', 'capacity_exhausted', 'connection_failed', 'timeout', 'internal_error'].includes(error.code)) {
        state.retryTimer = setTimeout(() => { errors.clear(); start(); }, 3000);
      }
    }
  }

  function showEnded() {
    if (el.dataset.view === 'ended') return;
    el.dataset.view = 'ended';
    debug.view = 'ended';
    const sfu = state.sfu;
    state.sfu = null;
    if (sfu) sfu.close();
    el.replaceChildren(endedView(ctx, { type, id, canListRecordings: state.capabilities.includes('list-recordings'), onBack: () => ctx.navigate('#/') }));
  }

  watchFrames();
  startEvents();
  start().catch((error) => errors.show(describeError(error, 'The player failed')));

  return {
    name: 'player',
    title: `Livestream ${id}`,
    el,
    async destroy() {
      state.destroyed = true;
      clearTimeout(state.retryTimer);
      if (state.events) state.events.close();
      const sfu = state.sfu;
      state.sfu = null;
      if (sfu) await sfu.leave();
      video.srcObject = null;
      delete ctx.debug.player;
    },
  };
}
