// Member phone page: sign in, the rotating member code, name, consent, orders, erasure.
import { api, ApiError, bindSignin, el, load, memberToken, money, save, signOut, tell } from "./api.js";

const $ = (id) => document.getElementById(id);
const titles = new Map();
let codeTimer = null;
let codeSeq = 0;

async function call(path, opts = {}) {
  const token = await memberToken();
  if (!token) { show(); throw new ApiError(401, "unauthorized", "Please sign in again."); }
  try { return await api(path, { ...opts, token }); }
  catch (err) {
    if (err instanceof ApiError && err.status === 401) { signOut(); show(); }
    throw err;
  }
}

bindSignin(show);

async function show() {
  if (!load("member")) {
    clearTimeout(codeTimer);
    $("signin").hidden = false;
    $("member").hidden = true;
    return;
  }
  $("signin").hidden = true;
  $("member").hidden = false;
  try {
    const me = await call("/identity/me");
    const first = (me.name || "").trim().split(/\s+/)[0];
    const tier = me.tier === "member" ? "Member" : `${me.tier[0].toUpperCase()}${me.tier.slice(1)} member`;
    $("hello").textContent = `Hi ${first || "there"} · ${tier}`;
    $("name").value = me.name || "";
    const consent = me.consent || {};
    $("c-personalization").checked = Boolean(consent.personalization && consent.personalization.given);
    $("c-marketing").checked = Boolean(consent.marketing && consent.marketing.given);
  } catch { return; }
  refreshCode();
  loadOrders();
}

// The code is a TOTP: it changes every 30 s, and each code checks in once.
async function refreshCode() {
  clearTimeout(codeTimer);
  const mine = ++codeSeq;
  if (!load("member")) return;
  try {
    const res = await call("/identity/member-code");
    const svg = await fetch("/identity/member-code.svg", { headers: { authorization: `Bearer ${await memberToken()}` } });
    if (mine !== codeSeq) return;
    $("code").textContent = groupCode(res.code);
    $("code").dataset.code = res.code;
    if (svg.ok) {
      const old = $("qr").src;
      $("qr").src = URL.createObjectURL(await svg.blob());
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    }
    const tick = () => {
      const left = Math.max(0, res.expires_at - Date.now() / 1000);
      $("countdown").style.width = `${Math.min(100, (100 * left) / 30)}%`;
      $("changes-in").textContent = `Changes in ${Math.ceil(left)} s.`;
      codeTimer = setTimeout(left > 0 ? tick : refreshCode, left > 0 ? 250 : 300);
    };
    tick();
  } catch {
    $("code").textContent = "Code unavailable; retrying…";
    codeTimer = setTimeout(refreshCode, 5000);
  }
}

// "NR" + 10-character device index + 6 digits, grouped to be read out or typed.
function groupCode(code) {
  const m = /^(NR)(.{5})(.{5})(\d{6})$/.exec(code);
  return m ? m.slice(1).join(" ") : code;
}

async function title(sku) {
  if (!titles.has(sku)) {
    try { titles.set(sku, (await api(`/catalog/products/${encodeURIComponent(sku)}`)).title); }
    catch { titles.set(sku, sku); }
  }
  return titles.get(sku);
}

async function loadOrders() {
  try {
    const orders = (await call("/orders")).orders || [];
    orders.sort((a, b) => b.created_at - a.created_at);
    const items = [];
    for (const o of orders.slice(0, 20)) {
      const names = await Promise.all(o.lines.map(async (l) => `${l.qty} × ${await title(l.sku)}`));
      items.push(el("li", { "data-order-id": o.id },
        el("span", { class: "grow" },
          el("div", { class: "clip", text: names.join(", "), title: names.join(", ") }),
          el("div", { class: "muted small", text: `${new Date(o.created_at * 1000).toLocaleString()} · ${o.status}` })),
        el("b", { text: money(o.total) })));
    }
    $("orders").replaceChildren(...(items.length ? items : [el("li", { class: "muted empty", text: "No orders yet." })]));
  } catch { /* shown on the next visit */ }
}

$("name-form").onsubmit = async (e) => {
  e.preventDefault();
  $("name-error").textContent = "";
  try { await call("/identity/me", { method: "PATCH", body: { name: $("name").value.trim() } }); await show(); }
  catch (err) { $("name-error").textContent = err.message; }
};

async function setConsent() {
  $("consent-error").textContent = "";
  try {
    await call("/identity/me", { method: "PATCH", body: { consent: { personalization: $("c-personalization").checked, marketing: $("c-marketing").checked } } });
    $("consent-error").textContent = "";
  } catch (err) { $("consent-error").textContent = err.message; }
}
$("c-personalization").onchange = setConsent;
$("c-marketing").onchange = setConsent;

$("signout").onclick = () => { signOut(); show(); };
$("erase").onclick = async () => {
  if (!confirm("Erase your membership, history and carts, and unlink your orders? This cannot be undone.")) return;
  $("erase-error").textContent = "";
  try {
    await call("/identity/me", { method: "DELETE" });
    save("member", null);
    save("viewer", null);
    await show();
    tell($("signin-error"), "Your data was erased.", "ok");
  } catch (err) { $("erase-error").textContent = err.message; }
};

// Coming back to the page (phone unlocked) shows a fresh code at once.
document.addEventListener("visibilitychange", () => { if (!document.hidden && load("member")) refreshCode(); });

show();
