// HTTP calls and the tokens this browser holds.

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

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

export async function api(path, { method = "GET", body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(res.status, err.code || "http_error", err.message || res.statusText);
  }
  return data;
}

// The viewer identity of this browser: the member when signed in, else an anonymous id.
export async function viewerIdentity() {
  const member = load("member");
  if (member && member.token) return { kind: "member", id: member.member_id, token: member.token };
  let anon = load("viewer");
  if (!anon || !anon.token) {
    anon = await api("/identity/anonymous", { method: "POST", body: {} });
    save("viewer", anon);
  }
  return { kind: "viewer", id: anon.anon_id, token: anon.token };
}

export function deviceId() {
  let id = localStorage.getItem("nr.device");
  if (!id) {
    id = "d_" + crypto.getRandomValues(new Uint32Array(2)).join("");
    localStorage.setItem("nr.device", id);
  }
  return id;
}

export async function requestCode(phone) {
  return api("/identity/otp/request", { method: "POST", body: { phone } });
}

export async function verifyCode(phone, code) {
  const anon = load("viewer");
  const body = { phone, code, device_id: deviceId() };
  if (anon && anon.anon_id) body.anon_id = anon.anon_id;
  const res = await api("/identity/otp/verify", { method: "POST", body });
  save("member", res);
  return res;
}

export function money(value) {
  return new Intl.NumberFormat(undefined, { style: "currency", currency: "GBP" }).format(value);
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
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}
