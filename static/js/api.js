// HTTP calls, the tokens this browser holds, and small DOM helpers shared by the pages.

const KEYS = { viewer: "nr.viewer", member: "nr.member", host: "nr.host", screen: "nr.screen" };

export function load(kind) {
  try { return JSON.parse(localStorage.getItem(KEYS[kind]) || "null"); } catch { return null; }
}
export function save(kind, value) {
  if (value === null) localStorage.removeItem(KEYS[kind]);
  else localStorage.setItem(KEYS[kind], JSON.stringify(value));
}

// A token handed over in the URL (?token=...) is kept and removed from the address bar.
export function tokenFromUrl(kind) {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token) {
    save(kind, { token });
    url.searchParams.delete("token");
    history.replaceState(null, "", url);
  }
  return (load(kind) || {}).token || null;
}

// The claims of a JWT, read without checking it (the server checks; the page only needs
// to know when it runs out).
export function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch { return {}; }
}

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

export async function api(path, { method = "GET", body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(res.status, err.code || "http_error", err.message || res.statusText);
  }
  return data;
}

// The member's access token lasts 15 minutes; the refresh token rotates, and presenting a
// used one revokes the sign-in, so only one refresh runs at a time across this browser's tabs.
let refreshing = null;
export async function memberToken() {
  const m = load("member");
  if (!m || !m.token) return null;
  if ((claims(m.token).exp || 0) - Date.now() / 1000 > 60) return m.token;
  if (!m.refresh_token) return m.token;
  refreshing = refreshing || withLock("nr.refresh", async () => {
    const now = load("member");   // another tab may have refreshed meanwhile
    if (!now || (claims(now.token).exp || 0) - Date.now() / 1000 > 60) return;
    try {
      const pair = await api("/identity/token/refresh", { method: "POST", body: { refresh_token: now.refresh_token } });
      save("member", { ...now, token: pair.token, refresh_token: pair.refresh_token });
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) save("member", null);   // signed out elsewhere
      else throw err;
    }
  }).finally(() => { refreshing = null; });
  await refreshing;
  const after = load("member");
  return after ? after.token : null;
}

function withLock(name, fn) {
  return navigator.locks ? navigator.locks.request(name, fn) : fn();
}

// The viewer identity of this browser: the member when signed in, else an anonymous id.
export async function viewerIdentity() {
  const member = load("member");
  if (member && member.token) {
    const token = await memberToken();
    if (token) return { kind: "member", id: member.member_id, token };
  }
  let anon = load("viewer");
  if (!anon || !anon.token || (claims(anon.token).exp || 0) - Date.now() / 1000 < 60) {
    anon = await api("/identity/anonymous", { method: "POST", body: {} });
    save("viewer", anon);
  }
  return { kind: "viewer", id: anon.anon_id, token: anon.token };
}

export function deviceId() {
  let id = localStorage.getItem("nr.device");
  if (!id) {
    id = "d_" + Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem("nr.device", id);
  }
  return id;
}

export async function requestCode(phone) {
  return api("/identity/otp/request", { method: "POST", body: { phone } });
}

// Signs in with a one-time code; an anonymous viewer's cart and history follow the member.
export async function verifyCode(phone, code) {
  const anon = load("viewer");
  const body = { phone, code, device_id: deviceId() };
  if (anon && anon.anon_id) body.anon_id = anon.anon_id;
  const res = await api("/identity/otp/verify", { method: "POST", body });
  // The phone is kept on this device only, for "remind me" texts the member asks for.
  save("member", { member_id: res.member_id, token: res.token, refresh_token: res.refresh_token, phone });
  return res;
}

export function signOut() { save("member", null); }

// The sign-in form both pages share (#phone, #send-code, #otp, #verify, #signin-error):
// ``onSignedIn`` runs once the code was accepted.
export function bindSignin(onSignedIn) {
  const $ = (id) => document.getElementById(id);
  const say = (text, tone = "error") => { tell($("signin-error"), text, tone); };
  $("send-code").onclick = async () => {
    say("");
    try {
      await requestCode($("phone").value);
      say("Code sent. It is valid for 5 minutes.", "ok");
      $("otp").focus();
    } catch (err) { say(err.message); }
  };
  $("verify").onclick = async () => {
    say("");
    try {
      await verifyCode($("phone").value, $("otp").value.trim());
      $("otp").value = "";
      await onSignedIn();
    } catch (err) { say(err.message); }
  };
}

// A message in a status line: success ("ok") and errors look different (colour and mark),
// and screen readers hear it politely.
export function tell(node, text, tone = "error") {
  node.textContent = text;
  node.dataset.tone = text ? tone : "";
  if (!node.hasAttribute("role")) node.setAttribute("aria-live", "polite");
}

// The share link of a live: the system share sheet on a phone, else the clipboard.
export async function shareLive(sessionId, title) {
  const url = new URL(`/live/${encodeURIComponent(sessionId)}`, location.origin).href;
  try {
    if (navigator.share) { await navigator.share({ title, url }); return "Shared"; }
    await navigator.clipboard.writeText(url);
    return "Link copied";
  } catch { return url; }
}

// Money from the server is {amount, currency}: an integer of minor units and an ISO 4217
// code. Formatted by the browser in the reader's locale, with the currency's own digits.
const formats = new Map();
function formatFor(currency) {
  if (!formats.has(currency)) formats.set(currency, new Intl.NumberFormat(undefined, { style: "currency", currency }));
  return formats.get(currency);
}
export function fractionDigits(currency) { return formatFor(currency).resolvedOptions().maximumFractionDigits; }
export function money(m) {
  if (!m || typeof m !== "object" || !Number.isInteger(m.amount)) return "";
  return formatFor(m.currency).format(m.amount / 10 ** fractionDigits(m.currency));
}
export function times(m, qty) { return { amount: m.amount * qty, currency: m.currency }; }
// Decimal text typed by a person ("4.50") as Money, without a float on the way.
export function parseMoney(text, currency) {
  const match = /^\s*(\d+)(?:[.,](\d*))?\s*$/.exec(String(text));
  if (!match) return null;
  const digits = fractionDigits(currency);
  const minor = (match[2] || "").padEnd(digits, "0");
  if (minor.length > digits) return null;
  return { amount: Number(match[1]) * 10 ** digits + Number(minor || "0"), currency };
}
export function decimalText(m) {
  const digits = fractionDigits(m.currency);
  return digits ? (m.amount / 10 ** digits).toFixed(digits) : String(m.amount);
}

// Text only: every string from the server goes into the page through textContent.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) if (child !== null && child !== undefined && child !== false) node.append(child);
  return node;
}

export function productImage(sku) { return `/catalog/images/${encodeURIComponent(sku)}.svg`; }

// An offer card, the same on the viewer page and the store screen.
export function offerCard(o, extra = null) {
  const price = el("div", { class: "price" });
  if (o.offer_price && o.price && o.offer_price.amount < o.price.amount) price.append(el("s", { text: money(o.price) }));
  price.append(document.createTextNode(money(o.offer_price)));
  return el("div", { class: "offer", "data-sku": o.sku },
    el("img", { src: productImage(o.sku), alt: "" }),
    el("div", { class: "reason", text: REASONS[o.reason] || "" }),
    el("div", { class: "title", text: o.title }),
    price, extra);
}
const REASONS = { buy_again: "Buy again", for_you: "For you", trending: "Trending", in_this_live: "In this live" };
