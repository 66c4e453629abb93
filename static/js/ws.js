// One WebSocket to a live session or a store screen: hello, resume with `since`,
// reconnect with jittered backoff, ops with refs answered by ack or error.
//
// Events: "status" {state: connecting | live | reconnecting | refused, code?, message?},
// "welcome", then one event per message type, and "message" for every message.

const MAX_BACKOFF_MS = 10000;
const FIRST_BACKOFF_MS = 500;
const OP_TIMEOUT_MS = 10000;

export class LiveSocket extends EventTarget {
  // getToken() gives the token for hello; onHelloError(err) may fix the cause (a new
  // token) and return true to retry, or false to give up (the page shows why).
  constructor(path, getToken, { onHelloError = async () => false } = {}) {
    super();
    this.path = path;
    this.getToken = getToken;
    this.onHelloError = onHelloError;
    this.since = null;          // {epoch, seq} of the last session event seen
    this.pending = new Map();   // ref -> {resolve, reject, timer}
    this.nextRef = 1;
    this.attempt = 0;
    this.ws = null;
    this.welcomed = false;
    this.retryTimer = null;
    this.stopped = false;
  }

  connect() {
    this.stopped = false;
    clearTimeout(this.retryTimer);
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}${this.path}`, ["newretail.json"]);
    this.ws = ws;
    this.welcomed = false;
    ws.onopen = async () => {
      let token;
      try { token = await this.getToken(); } catch { ws.close(4000, "no token"); return; }
      if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) return;
      const hello = { op: "hello", token };
      if (this.since) hello.since = this.since;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (e) => { if (ws === this.ws) this.#receive(JSON.parse(e.data)); };
    ws.onclose = () => { if (ws === this.ws) this.#closed(); };
  }

  // Starts over with a new identity (after sign-in): a fresh hello on a new connection.
  reconnect() {
    this.#drop();
    this.connect();
  }

  close() {
    this.stopped = true;
    this.#drop();
  }

  get connected() { return this.welcomed && this.ws && this.ws.readyState === WebSocket.OPEN; }

  // Sends an op; resolves with the reply (ack or personal message), rejects on `error`.
  send(op, fields = {}) {
    const ref = String(this.nextRef++);
    return new Promise((resolve, reject) => {
      if (!this.connected) {
        reject(Object.assign(new Error("Not connected; trying again…"), { code: "not_connected" }));
        return;
      }
      const timer = setTimeout(() => {
        if (this.pending.delete(ref)) reject(Object.assign(new Error("No answer from the server"), { code: "timeout" }));
      }, OP_TIMEOUT_MS);
      this.pending.set(ref, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ op, ref, ...fields }));
    });
  }

  #drop() {
    clearTimeout(this.retryTimer);
    const ws = this.ws;
    this.ws = null;
    this.welcomed = false;
    this.#failPending("disconnected");
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
  }

  async #receive(msg) {
    if (msg.type === "welcome") {
      this.attempt = 0;
      this.welcomed = true;
      // Without a replay the page rebuilds from the snapshot (recovered false or absent).
      this.since = msg.epoch === undefined ? null : { epoch: msg.epoch, seq: msg.seq };
      this.#emit("status", { state: "live" });
    } else if (typeof msg.seq === "number" && this.since) {
      this.since.seq = Math.max(this.since.seq, msg.seq);
    }
    if (msg.type === "error" && !this.welcomed && msg.ref == null) {
      // hello was refused (expired token, unknown session, wrong role)
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close(1000);
      if (await this.onHelloError(msg)) { this.connect(); return; }
      this.stopped = true;
      this.#emit("status", { state: "refused", code: msg.code, message: msg.message });
      return;
    }
    if (msg.ref != null && this.pending.has(String(msg.ref))) {
      const { resolve, reject, timer } = this.pending.get(String(msg.ref));
      if (msg.type === "ack" || msg.type === "error") {
        clearTimeout(timer);
        this.pending.delete(String(msg.ref));
        if (msg.type === "error") reject(Object.assign(new Error(msg.message), { code: msg.code }));
        else resolve(msg);
        return;
      }
      resolve(msg);   // a reply before the ack (e.g. `order`): it is also an event below
    }
    this.#emit(msg.type, msg);
    this.#emit("message", msg);
  }

  #closed() {
    this.ws = null;
    this.welcomed = false;
    this.#failPending("disconnected");
    if (this.stopped) return;
    this.#emit("status", { state: "reconnecting" });
    // Jittered exponential backoff: after an outage, clients come back spread out.
    const cap = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** this.attempt++);
    this.retryTimer = setTimeout(() => this.connect(), cap / 2 + Math.random() * (cap / 2));
  }

  #failPending(code) {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(Object.assign(new Error("Connection lost; please try again"), { code }));
    }
    this.pending.clear();
  }

  #emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}
