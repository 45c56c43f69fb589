// The SFU signalling protocol (docs/signalling.md): one WebSocket, a publishing
// RTCPeerConnection (the browser offers) and a receiving one (the SFU offers).

export class SignallingError extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.name = 'SignallingError';
    this.code = code;
    this.details = details || {};
  }
}

// Close codes that end a session for good (no reconnection).
export const FINAL_CLOSE_CODES = new Set([1000, 4001, 4003, 4009, 4010]);

export class SfuSession {
  // credentials: {ws_url, token, ice_servers}; handlers: onMessage(msg), onClose({code, reason,
  // goodbye}), onMediaFailed(target)
  constructor(credentials, handlers = {}) {
    this.credentials = credentials;
    this.onMessage = handlers.onMessage || (() => {});
    this.onClose = handlers.onClose || (() => {});
    this.onMediaFailed = handlers.onMediaFailed || (() => {});
    this.ws = null;
    this.nextId = 1;
    this.waiters = new Map();
    this.joined = null;
    this.goodbye = null;
    this.publisher = null;
    this.subscriber = null;
    this.closedByUs = false;
  }

  rtcConfig() {
    const iceServers = (this.credentials.ice_servers || []).map((s) => ({
      urls: s.urls,
      username: s.username || undefined,
      credential: s.credential || undefined,
    }));
    return { iceServers, bundlePolicy: 'max-bundle' };
  }

  // Opens the socket and joins; resolves with the `joined` message.
  async connect(timeoutMs = 10000) {
    const url = new URL(this.credentials.ws_url, location.href);
    url.searchParams.set('token', this.credentials.token);
    const ws = new WebSocket(url.toString());
    this.ws = ws;
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new SignallingError('timeout', 'The media server did not answer.')), timeoutMs);
      ws.onopen = () => {
        clearTimeout(timer);
        resolve();
      };
      ws.onerror = () => {};
      ws.onclose = (event) => {
        clearTimeout(timer);
        reject(new SignallingError('connection_failed', `Could not connect to the media server (closed ${event.code}).`));
      };
    });
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = (event) => this.closed(event);
    this.joined = await this.request({ type: 'join' }, 'joined', timeoutMs);
    return this.joined;
  }

  receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.type === 'goodbye') this.goodbye = message;
    const waiter = message.id !== undefined ? this.waiters.get(message.id) : undefined;
    if (waiter) {
      this.waiters.delete(message.id);
      waiter(message);
      return;
    }
    if (message.type === 'joined' && this.waiters.has('joined')) {
      const w = this.waiters.get('joined');
      this.waiters.delete('joined');
      w(message);
      return;
    }
    if (message.type === 'error' && message.ref === 'join' && this.waiters.has('joined')) {
      const w = this.waiters.get('joined');
      this.waiters.delete('joined');
      w(message);
      return;
    }
    if (message.type === 'trickle') {
      this.remoteCandidate(message);
      return;
    }
    this.onMessage(message);
  }

  closed(event) {
    for (const [, waiter] of this.waiters) {
      waiter({ type: 'error', code: 'connection_closed', message: `The media connection closed (${event.code}).` });
    }
    this.waiters.clear();
    this.closePeers();
    this.onClose({ code: event.code, reason: event.reason, goodbye: this.goodbye, byUs: this.closedByUs });
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  // Sends `message` and waits for its reply: `replyType`, or an error (thrown).
  request(message, replyType, timeoutMs = 10000) {
    // `join` carries no id in the protocol examples; match its reply by type.
    const key = message.type === 'join' ? 'joined' : this.nextId++;
    const outgoing = message.type === 'join' ? message : { ...message, id: key };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(key);
        reject(new SignallingError('timeout', `No answer to ${message.type}.`));
      }, timeoutMs);
      this.waiters.set(key, (reply) => {
        clearTimeout(timer);
        if (reply.type === 'error') reject(new SignallingError(reply.code, reply.message, reply.details));
        else if (reply.type !== replyType) reject(new SignallingError('unexpected_reply', `Expected ${replyType}, got ${reply.type}.`));
        else resolve(reply);
      });
      this.send(outgoing);
    });
  }

  watchPeer(pc, target) {
    pc.onicecandidate = (event) => {
      const c = event.candidate;
      this.send({
        type: 'trickle',
        target,
        candidate: c ? c.candidate : null,
        sdp_mid: c ? c.sdpMid : undefined,
        sdp_mline_index: c ? c.sdpMLineIndex : undefined,
      });
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed') this.onMediaFailed(target);
    };
  }

  remoteCandidate(message) {
    const pc = message.target === 'publisher' ? this.publisher : this.subscriber;
    if (!pc || !message.candidate) return; // end-of-candidates: the SDP carried them all
    pc.addIceCandidate({
      candidate: message.candidate,
      sdpMid: message.sdp_mid ?? '0',
      sdpMLineIndex: message.sdp_mline_index ?? 0,
    }).catch(() => {});
  }

  // Publishes the stream's audio and video (sendonly), preferring `videoCodec`.
  async publish(stream, { videoCodec = 'VP8' } = {}) {
    const pc = new RTCPeerConnection(this.rtcConfig());
    this.publisher = pc;
    this.watchPeer(pc, 'publisher');
    for (const track of stream.getTracks()) {
      const transceiver = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      if (track.kind === 'video' && videoCodec && transceiver.setCodecPreferences) {
        const codecs = RTCRtpSender.getCapabilities('video').codecs;
        const wanted = codecs.filter((c) => c.mimeType.toLowerCase() === `video/${videoCodec.toLowerCase()}`);
        const rtx = codecs.filter((c) => c.mimeType.toLowerCase() === 'video/rtx');
        if (wanted.length) transceiver.setCodecPreferences([...wanted, ...rtx]);
      }
    }
    await pc.setLocalDescription(await pc.createOffer());
    const reply = await this.request({ type: 'publish_offer', sdp: pc.localDescription.sdp }, 'publish_answer');
    await pc.setRemoteDescription({ type: 'answer', sdp: reply.sdp });
    return pc;
  }

  // A receiving connection; `onTrack(event)` gets the remote audio and video tracks.
  async subscribe(onTrack) {
    const pc = new RTCPeerConnection(this.rtcConfig());
    this.subscriber = pc;
    this.watchPeer(pc, 'subscriber');
    pc.ontrack = onTrack;
    const offer = await this.request({ type: 'subscribe' }, 'subscribe_offer');
    await pc.setRemoteDescription({ type: 'offer', sdp: offer.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await this.request({ type: 'subscribe_answer', sdp: pc.localDescription.sdp }, 'ack');
    return pc;
  }

  mute(kind, muted) {
    return this.request({ type: 'mute', kind, muted }, 'ack', 5000);
  }

  requestKeyframe() {
    this.send({ type: 'keyframe_request' });
  }

  // Leaves politely (goodbye, close 1000), or just closes after a short wait.
  async leave() {
    this.closedByUs = true;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      const closed = new Promise((resolve) => this.ws.addEventListener('close', resolve, { once: true }));
      this.send({ type: 'leave' });
      await Promise.race([closed, new Promise((r) => setTimeout(r, 1500))]);
    }
    this.close();
  }

  close() {
    this.closedByUs = true;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    this.closePeers();
  }

  closePeers() {
    for (const pc of [this.publisher, this.subscriber]) {
      if (pc && pc.connectionState !== 'closed') pc.close();
    }
  }
}
