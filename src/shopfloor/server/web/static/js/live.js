// The live channel: one websocket that reconnects with capped, jittered exponential backoff.
//
// Events (CustomEvent, payload in `detail`):
//   "status"   {state: "connecting" | "live" | "reconnecting", retryInMs?: number}
//   "snapshot" {values: [...]}   the server's first message after every (re)connect
//   "values"   {values: [...]}   changes since the previous message

export class LiveSocket extends EventTarget {
  constructor(url, { minDelayMs = 500, maxDelayMs = 15000 } = {}) {
    super();
    this.url = url;
    this.minDelayMs = minDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.attempt = 0;
    this.ws = null;
    this.timer = null;
    this.stopped = true;
    this.prefix = null;
    this.state = "connecting";
    this.onOnline = () => this.reconnectNow();
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "page closed");
    this.ws = null;
  }

  /** Ask the server for values under `prefix` only (null: everything). Kept across reconnects. */
  subscribe(prefix) {
    this.prefix = prefix || null;
    this.sendSubscribe();
  }

  sendSubscribe() {
    if (this.ws?.readyState === WebSocket.OPEN && this.prefix !== null) {
      this.ws.send(JSON.stringify({ type: "subscribe", prefix: this.prefix }));
    }
  }

  setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("status", { detail: { state, ...extra } }));
  }

  connect() {
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => this.sendSubscribe());
    ws.addEventListener("message", (event) => this.onMessage(event));
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (!this.stopped) this.scheduleReconnect();
    });
    // An "error" is always followed by "close", which schedules the retry.
  }

  onMessage(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return; // not ours to interpret; the server only sends JSON
    }
    if (message.type === "snapshot") {
      this.attempt = 0;
      this.setState("live");
      this.dispatchEvent(new CustomEvent("snapshot", { detail: { values: message.values || [] } }));
    } else if (message.type === "values") {
      if (this.state !== "live") this.setState("live");
      this.dispatchEvent(new CustomEvent("values", { detail: { values: message.values || [] } }));
    }
  }

  scheduleReconnect() {
    clearTimeout(this.timer);
    const cap = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** this.attempt);
    const delay = Math.round(cap / 2 + (Math.random() * cap) / 2);
    this.attempt += 1;
    this.setState("reconnecting", { retryInMs: delay });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timer);
    this.connect();
  }
}
