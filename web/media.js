// Camera and microphone, and keeping the SFU connection alive (shared by the host and the player).

export async function cameraAndMicrophone() {
  return navigator.mediaDevices.getUserMedia({
    audio: true,
    video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
  });
}

export function stopStream(stream) {
  if (stream) for (const track of stream.getTracks()) track.stop();
}

// Delays for reconnection attempts: 0.5 s, 1 s, 2 s, 4 s, then 8 s (with a little jitter).
export function backoffDelay(attempt) {
  const base = Math.min(8000, 500 * 2 ** attempt);
  return base + Math.floor(Math.random() * 250);
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Errors after which trying again cannot help.
export const GIVE_UP = ['call_ended', 'forbidden', 'unauthenticated', 'token_expired', 'not_found', 'invalid_request'];

// Keeps a screen's SFU session alive. `state` holds `sfu`, `reconnecting`, `switching` and
// `destroyed`; `connect()` joins through the coordinator and sets `state.sfu`.
// - switchNode(): on `goaway` the node is draining but still forwarding: connect through
//   another node first, then `retire` the old session.
// - reconnect(reason): drop the session and retry with backoff, saying so with `showNotice`,
//   until connected or an error in GIVE_UP (handed to `onGiveUp`). `onChange` runs when the
//   connection state changes; `debug` counts switches and reconnects for tests.
export function keepConnected({ state, connect, showNotice, onGiveUp, retire = (old) => old.close(), onChange = () => {}, debug = {} }) {
  async function reconnect(reason) {
    if (state.reconnecting || state.destroyed) return;
    state.reconnecting = true;
    const old = state.sfu;
    state.sfu = null;
    if (old) old.close();
    onChange();
    for (let attempt = 0; !state.destroyed; attempt++) {
      showNotice(`${reason}. Reconnecting${attempt ? ` (attempt ${attempt + 1})` : ''}…`);
      debug.reconnects = (debug.reconnects || 0) + 1;
      await sleep(backoffDelay(attempt));
      if (state.destroyed) break;
      try {
        await connect();
        showNotice('');
        break;
      } catch (error) {
        if (GIVE_UP.includes(error.code)) {
          showNotice('');
          onGiveUp(error);
          break;
        }
        if (state.sfu) state.sfu.close();
        state.sfu = null;
      }
    }
    state.reconnecting = false;
    onChange();
  }

  async function switchNode() {
    if (state.reconnecting || state.switching || state.destroyed) return;
    state.switching = true;
    debug.switches = (debug.switches || 0) + 1;
    const old = state.sfu;
    try {
      await connect();
      if (old && old !== state.sfu) await retire(old);
    } catch {
      if (old && old !== state.sfu) old.close();
      state.switching = false;
      reconnect('The media server is restarting');
      return;
    }
    state.switching = false;
  }

  return { reconnect, switchNode };
}
