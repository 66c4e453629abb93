// One WebSocket to a live session or a screen: hello, resume with `since`,
// reconnect with jittered backoff, ops with refs answered by ack or error.

export class LiveSocket extends EventTarget {
  constructor(path, getToken) {
    super();
    this.path = path;
    this.getToken = getToken;
    this.since = null;          // {epoch, seq} of the last session event seen
    this.pending = new Map();   // ref -> {resolve, reject}
    this.nextRef = 1;
    this.attempt = 0;
    this.closedByUs = false;
    this.ws = null;
  }

  connect() {
    this.closedByUs = false;
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}${this.path}`, ["newretail.json"]);
    this.ws = ws;
    ws.onopen = async () => {
      const hello = { op: "hello", token: await this.getToken() };
      if (this.since) hello.since = this.since;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (e) => this.#receive(JSON.parse(e.data));
    ws.onclose = (e) => this.#closed(e);
  }

  close() { this.closedByUs = true; if (this.ws) this.ws.close(1000); }

  // Sends an op; resolves with the reply (ack or personal message), rejects on `error`.
  send(op, fields = {}) {
    const ref = String(this.nextRef++);
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(Object.assign(new Error("not connected"), { code: "not_connected" }));
        return;
      }
      this.pending.set(ref, { resolve, reject });
      this.ws.send(JSON.stringify({ op, ref, ...fields }));
      setTimeout(() => {
        if (this.pending.delete(ref)) reject(Object.assign(new Error("no answer"), { code: "timeout" }));
      }, 10000);
    });
  }

  #receive(msg) {
    if (msg.type === "welcome") {
      this.attempt = 0;
      this.since = { epoch: msg.epoch, seq: msg.seq };
      this.#emit("status", { state: "live" });
    } else if (typeof msg.seq === "number" && msg.type !== "welcome") {
      if (this.since) this.since.seq = Math.max(this.since.seq, msg.seq);
    }
    if (msg.ref !== undefined && this.pending.has(msg.ref)) {
      const { resolve, reject } = this.pending.get(msg.ref);
      this.pending.delete(msg.ref);
      if (msg.type === "error") reject(Object.assign(new Error(msg.message), { code: msg.code }));
      else resolve(msg);
      if (msg.type === "ack" || msg.type === "error") return;
    }
    this.#emit(msg.type, msg);
    this.#emit("message", msg);
  }

  #closed(e) {
    for (const { reject } of this.pending.values()) reject(Object.assign(new Error("disconnected"), { code: "disconnected" }));
    this.pending.clear();
    if (this.closedByUs) return;
    if (e.code === 4401 || e.code === 4403) { this.#emit("status", { state: "refused", code: e.code }); return; }
    this.#emit("status", { state: "reconnecting" });
    const base = Math.min(10000, 500 * 2 ** this.attempt++);
    setTimeout(() => this.connect(), base / 2 + Math.random() * base / 2);
  }

  #emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}
