// The host's livestream screen: backstage (preview, waiting count, Go Live), live (viewer
// count, Stop Live, End, mute), ended. Publishes camera and microphone over the SFU.

import { viewerCount } from '../api.js';
import { EventsSocket } from '../events.js';
import { cameraAndMicrophone, stopStream, keepConnected } from '../media.js';
import { SfuSession, FINAL_CLOSE_CODES } from '../signalling.js';
import { h, button, busy, errorBox, copyField, startsText, badge, describeError } from '../ui.js';
import { endedView } from './ended.js';

export function hostScreen(ctx) {
  const { type, id } = ctx.params;
  const cid = `${type}:${id}`;
  const state = {
    call: null,
    capabilities: [],
    stream: null,
    sfu: null,
    events: null,
    poller: null,
    ticker: null,
    destroyed: false,
    reconnecting: false,
    muted: { audio: false, video: false },
  };
  const debug = (ctx.debug.host = { state });

  const errors = errorBox();
  const notice = h('div', { class: 'notice', role: 'status', hidden: true });
  const status = h('p', { class: 'status', role: 'status' }, 'Starting your camera and microphone…');
  const video = h('video', { autoplay: true, muted: true, playsInline: true, class: 'video mirror', 'aria-label': 'Your camera' });
  const stageBadge = h('span', { class: 'stage-badge' });
  const startsLine = h('p', { class: 'starts' });
  const waitingLine = h('p', { class: 'count', 'aria-live': 'polite' });
  const viewersLine = h('p', { class: 'count', 'aria-live': 'polite' });
  const callIdLine = h('p', { class: 'muted' }, 'Call id ', h('span', { class: 'mono' }, id));
  const viewerLink = `${location.origin}${location.pathname}#/watch/${type}/${id}`;

  const goLiveBtn = button('Go Live', goLive, { class: 'danger big' });
  const stopLiveBtn = button('Stop Live', stopLive, { class: 'secondary' });
  const endBtn = button('End', askEnd, { class: 'danger-outline' });
  const confirmEnd = h(
    'div',
    { class: 'confirm', hidden: true, role: 'group', 'aria-label': 'Confirm ending the livestream' },
    h('span', {}, 'End the livestream for everyone?'),
    button('End livestream', end, { class: 'danger' }),
    button('Cancel', () => showConfirm(false), { class: 'secondary' }),
  );
  const leaveBtn = button('Leave', leave, { class: 'secondary' });
  const camBtn = button('Camera on', () => toggle('video'), { class: 'toggle', 'aria-pressed': 'false', 'aria-label': 'Turn camera off' });
  const micBtn = button('Mic on', () => toggle('audio'), { class: 'toggle', 'aria-pressed': 'false', 'aria-label': 'Mute microphone' });

  const backstagePanel = h(
    'div',
    { class: 'panel', hidden: true },
    startsLine,
    waitingLine,
    copyField('Call id', id, 'host-call-id'),
    copyField('Viewer link', viewerLink, 'host-viewer-link'),
    h('div', { class: 'actions' }, goLiveBtn, leaveBtn),
  );
  const livePanel = h(
    'div',
    { class: 'panel', hidden: true },
    viewersLine,
    callIdLine,
    copyField('Viewer link', viewerLink, 'live-viewer-link'),
    h('div', { class: 'actions' }, stopLiveBtn, endBtn, button('Leave', leave, { class: 'secondary' })),
    confirmEnd,
  );
  const mediaControls = h('div', { class: 'media-controls', role: 'group', 'aria-label': 'Camera and microphone' }, camBtn, micBtn);

  const stage = h(
    'div',
    { class: 'stage-layout' },
    h('div', { class: 'video-wrap' }, video, h('div', { class: 'video-overlay' }, stageBadge), mediaControls),
    h('div', { class: 'side' }, backstagePanel, livePanel),
  );
  const title = h('h1', { tabindex: -1 }, 'Your livestream');
  const el = h('section', { class: 'host', dataset: { view: 'joining' } }, title, errors, notice, status, stage);

  function setView(view) {
    el.dataset.view = view;
    debug.view = view;
  }

  function render() {
    const call = state.call;
    if (!call) return;
    if (call.ended_at) {
      showEnded();
      return;
    }
    const live = !call.backstage;
    setView(live ? 'live' : 'backstage');
    title.textContent = live ? 'You are live' : 'Backstage';
    stageBadge.replaceChildren(live ? badge('● LIVE', 'live') : badge('BACKSTAGE', 'backstage'));
    backstagePanel.hidden = live;
    livePanel.hidden = !live;
    startsLine.textContent = startsText(call.starts_at);
    const session = call.session || {};
    const waiting = session.waiting_count || 0;
    waitingLine.textContent = `${waiting} ${waiting === 1 ? 'participant' : 'participants'} waiting`;
    viewersLine.textContent = `Viewers: ${viewerCount(session)}`;
    goLiveBtn.disabled = !state.capabilities.includes('go-live');
    stopLiveBtn.disabled = !state.capabilities.includes('go-live');
    endBtn.disabled = !state.capabilities.includes('end-call');
    if (!confirmEnd.hidden && !live) showConfirm(false);
  }

  function updateCall(call) {
    // Events carry the call without its session; keep the counts we had.
    state.call = { ...(state.call || {}), ...call, session: call.session !== undefined ? call.session : state.call && state.call.session };
    debug.call = state.call;
    render();
  }

  function updateCounts(counts) {
    if (!state.call) return;
    state.call.session = { ...(state.call.session || {}), ...counts };
    render();
  }

  async function refresh() {
    try {
      const answer = await ctx.api.getCall(type, id);
      if (!state.destroyed) updateCall(answer.call);
    } catch (error) {
      errors.show(error, 'Could not refresh the livestream');
    }
  }

  function startEvents() {
    state.events = new EventsSocket(ctx.session.token, {
      onEvent: (event) => {
        if (event.cid !== cid) return;
        if (event.type === 'call.participant_count_updated') updateCounts(event);
        else if (event.call) {
          updateCall(event.call);
          if (event.type === 'call.live_started' || event.type === 'call.live_stopped') refresh();
        }
      },
      // Polling while the events socket is down.
      onUp: () => {
        clearInterval(state.poller);
        state.poller = null;
        refresh();
      },
      onDown: () => {
        if (!state.poller && !state.destroyed) state.poller = setInterval(refresh, 3000);
      },
      onError: (error) => errors.show(error, 'Live updates'),
    });
    state.events.watch(cid);
  }

  async function connectMedia() {
    const answer = await ctx.api.join(type, id);
    state.capabilities = answer.own_capabilities || [];
    updateCall(answer.call);
    if (answer.call.ended_at) return;
    const sfu = new SfuSession(answer.credentials, {
      onMessage: (message) => {
        if (message.type === 'call_state') refresh();
        if (message.type === 'goaway') switchNode();
      },
      onClose: (info) => {
        if (state.sfu !== sfu || state.destroyed) return;
        if (info.code === 4009 || (info.goodbye && info.goodbye.reason === 'call_ended')) refresh();
        else if (info.code === 4010) showNotice('This livestream was opened in another window; this one stopped sending.');
        else if (!info.byUs && !FINAL_CLOSE_CODES.has(info.code)) reconnect(`The connection dropped (${info.code})`);
      },
      onMediaFailed: () => reconnect('The media connection failed'),
    });
    state.sfu = sfu;
    await sfu.connect();
    const canSend = state.capabilities.includes('send-video') || state.capabilities.includes('send-audio');
    if (!canSend) throw Object.assign(new Error('Only hosts can publish to this livestream. Watch it instead.'), { code: 'forbidden' });
    const pc = await sfu.publish(state.stream, { videoCodec: 'VP8' });
    debug.publisherPc = pc;
    for (const kind of ['audio', 'video']) if (state.muted[kind]) await sfu.mute(kind, true);
  }

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  // goaway: publish through another node first, then leave the draining one (viewers switch
  // to the new publication when the old one ends).
  const { reconnect, switchNode } = keepConnected({
    state,
    connect: connectMedia,
    showNotice,
    retire: (old) => old.leave(),
    onGiveUp: (error) => {
      errors.show(error, 'Could not reconnect');
      refresh();
    },
    debug,
  });

  async function start() {
    // Only hosts get here with rights to publish: tell anyone else before asking for a camera.
    try {
      const answer = await ctx.api.getCall(type, id);
      state.capabilities = answer.own_capabilities || [];
      updateCall(answer.call);
    } catch (error) {
      status.textContent = '';
      errors.show(error, 'Could not open the livestream');
      return;
    }
    if (state.call.ended_at) return;
    if (!state.capabilities.includes('send-video') && !state.capabilities.includes('send-audio')) {
      setView('not-host');
      stage.hidden = true;
      title.textContent = 'Livestream';
      errors.show(`You are not a host of this livestream (you may not publish to ${cid}).`);
      status.replaceChildren(h('a', { href: `#/watch/${type}/${id}`, class: 'button-link' }, 'Watch this livestream instead'));
      return;
    }
    try {
      state.stream = await cameraAndMicrophone();
    } catch (error) {
      status.textContent = '';
      errors.show(error, 'Could not start your camera and microphone');
      status.replaceChildren(button('Try again', () => { errors.clear(); status.textContent = 'Starting your camera and microphone…'; start(); }));
      return;
    }
    if (state.destroyed) return stopStream(state.stream);
    video.srcObject = state.stream;
    startEvents();
    await joinMedia();
    state.ticker = setInterval(render, 15000);
  }

  async function joinMedia() {
    status.hidden = false;
    status.textContent = 'Joining the livestream…';
    try {
      await connectMedia();
      status.textContent = '';
      status.hidden = true;
    } catch (error) {
      if (state.sfu) state.sfu.close();
      state.sfu = null;
      status.textContent = '';
      errors.show(error, 'Could not join the livestream');
      status.replaceChildren(button('Try again', () => { errors.clear(); joinMedia(); }));
    }
  }

  async function goLive(event) {
    errors.clear();
    await busy(event.currentTarget, 'Going live…', async () => {
      try {
        updateCall((await ctx.api.goLive(type, id)).call);
      } catch (error) {
        errors.show(error, 'Could not go live');
      }
    });
  }

  async function stopLive(event) {
    errors.clear();
    await busy(event.currentTarget, 'Stopping…', async () => {
      try {
        updateCall((await ctx.api.stopLive(type, id)).call);
      } catch (error) {
        errors.show(error, 'Could not stop the livestream');
      }
    });
  }

  function showConfirm(show) {
    confirmEnd.hidden = !show;
    endBtn.hidden = show;
    if (show) confirmEnd.querySelector('button').focus();
    else if (!endBtn.hidden) endBtn.focus();
  }

  function askEnd() {
    showConfirm(true);
  }

  async function end(event) {
    errors.clear();
    await busy(event.currentTarget, 'Ending…', async () => {
      try {
        updateCall((await ctx.api.end(type, id)).call);
      } catch (error) {
        errors.show(error, 'Could not end the livestream');
      }
    });
  }

  async function toggle(kind) {
    const muted = !state.muted[kind];
    state.muted[kind] = muted;
    for (const track of state.stream ? state.stream.getTracks() : []) if (track.kind === kind) track.enabled = !muted;
    const btn = kind === 'video' ? camBtn : micBtn;
    btn.setAttribute('aria-pressed', String(muted));
    btn.textContent = kind === 'video' ? (muted ? 'Camera off' : 'Camera on') : muted ? 'Mic off' : 'Mic on';
    btn.setAttribute('aria-label', kind === 'video' ? (muted ? 'Turn camera on' : 'Turn camera off') : muted ? 'Unmute microphone' : 'Mute microphone');
    video.classList.toggle('camera-off', kind === 'video' ? muted : state.muted.video);
    try {
      if (state.sfu) await state.sfu.mute(kind, muted);
    } catch (error) {
      errors.show(error, `Could not ${muted ? 'mute' : 'unmute'} the ${kind === 'video' ? 'camera' : 'microphone'}`);
    }
  }

  async function leave() {
    ctx.navigate('#/');
  }

  function showEnded() {
    if (el.dataset.view === 'ended') return;
    setView('ended');
    teardownMedia();
    el.replaceChildren(
      endedView(ctx, { type, id, canListRecordings: state.capabilities.includes('list-recordings'), onBack: () => ctx.navigate('#/') }),
    );
  }

  async function teardownMedia() {
    const sfu = state.sfu;
    state.sfu = null;
    stopStream(state.stream);
    state.stream = null;
    if (sfu) await sfu.leave();
  }

  start().catch((error) => errors.show(describeError(error, 'The livestream screen failed')));

  return {
    name: 'host',
    title: 'Your livestream',
    el,
    async destroy() {
      state.destroyed = true;
      clearInterval(state.poller);
      clearInterval(state.ticker);
      if (state.events) state.events.close();
      await teardownMedia();
      delete ctx.debug.host;
    },
  };
}
