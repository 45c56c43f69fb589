// The events WebSocket (/v1/events): watch calls, get call.* events; reconnects with backoff.
// While it is down, `onDown` lets the screen fall back to polling.

export class EventsSocket {
  constructor(token, { onEvent, onUp = () => {}, onDown = () => {}, onError = () => {} }) {
    this.token = token;
    this.onEvent = onEvent;
    this.onUp = onUp;
    this.onDown = onDown;
    this.onError = onError;
    this.cids = new Set();
    this.ws = null;
    this.closed = false;
    this.attempt = 0;
    this.timer = null;
    this.up = false;
    this.connect();
  }

  connect() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/v1/events?token=${encodeURIComponent(this.token)}`);
    this.ws = ws;
    ws.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (event.type === 'connection.ok') {
        this.attempt = 0;
        this.up = true;
        if (this.cids.size) this.send({ type: 'watch', cids: [...this.cids] });
        this.onUp();
      } else if (event.type === 'error') {
        this.onError(event.error || {});
      } else if (event.type && event.type.startsWith('call.')) {
        this.onEvent(event);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      const wasUp = this.up;
      this.up = false;
      if (wasUp || this.attempt === 0) this.onDown();
      if (this.closed) return;
      const delay = Math.min(10000, 500 * 2 ** this.attempt++);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  watch(cid) {
    this.cids.add(cid);
    if (this.up) this.send({ type: 'watch', cids: [cid] });
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
  }
}
