// Member phone page: sign in, the rotating member code, consent, orders, erasure.
import { api, ApiError, el, load, money, requestCode, save, verifyCode } from "./api.js";

const $ = (id) => document.getElementById(id);
let codeTimer = null;

function member() { return load("member"); }
function token() { return (member() || {}).token; }

async function call(path, opts = {}) {
  try { return await api(path, { ...opts, token: token() }); }
  catch (err) {
    if (err instanceof ApiError && err.status === 401) { signOut(); }
    throw err;
  }
}

$("send-code").onclick = async () => {
  $("signin-error").textContent = "";
  try { await requestCode($("phone").value); $("signin-error").textContent = "Code sent."; }
  catch (err) { $("signin-error").textContent = err.message; }
};
$("verify").onclick = async () => {
  $("signin-error").textContent = "";
  try { await verifyCode($("phone").value, $("otp").value.trim()); await show(); }
  catch (err) { $("signin-error").textContent = err.message; }
};

async function show() {
  if (!member()) { $("signin").hidden = false; $("member").hidden = true; return; }
  $("signin").hidden = true;
  $("member").hidden = false;
  const me = await call("/identity/me");
  $("hello").textContent = `Hi ${(me.name || "").split(" ")[0] || "there"} · ${me.tier} member`;
  const consent = me.consent || {};
  $("c-personalization").checked = Boolean(consent.personalization && consent.personalization.given);
  $("c-marketing").checked = Boolean(consent.marketing && consent.marketing.given);
  await refreshCode();
  await loadOrders();
}

async function refreshCode() {
  clearTimeout(codeTimer);
  if (!member()) return;
  try {
    const res = await call("/identity/member-code");
    $("code").textContent = res.code;
    const svg = await fetch("/identity/member-code.svg", { headers: { authorization: `Bearer ${token()}` } });
    if (svg.ok) {
      if ($("qr").src.startsWith("blob:")) URL.revokeObjectURL($("qr").src);
      $("qr").src = URL.createObjectURL(await svg.blob());
    }
    const tick = () => {
      const left = Math.max(0, res.expires_at - Date.now() / 1000);
      $("countdown").style.width = `${(100 * left) / 30}%`;
      if (left > 0) codeTimer = setTimeout(tick, 250); else refreshCode();
    };
    tick();
  } catch { $("code").textContent = "unavailable"; }
}

async function loadOrders() {
  const res = await call("/orders");
  $("orders").replaceChildren(...(res.orders.length ? res.orders.map((o) => el("li", { "data-order-id": o.id },
    el("span", { class: "grow", text: `${new Date(o.created_at * 1000).toLocaleDateString()} · ${o.lines.length} item(s)` }),
    el("b", { text: money(o.total) }))) : [el("li", { class: "muted", text: "No orders yet." })]));
}

async function setConsent() {
  $("consent-error").textContent = "";
  try {
    await call("/identity/me", { method: "PATCH", body: { consent: { personalization: $("c-personalization").checked, marketing: $("c-marketing").checked } } });
  } catch (err) { $("consent-error").textContent = err.message; }
}
$("c-personalization").onchange = setConsent;
$("c-marketing").onchange = setConsent;

function signOut() { save("member", null); clearTimeout(codeTimer); show(); }
$("signout").onclick = signOut;
$("erase").onclick = async () => {
  if (!confirm("Erase your membership, history and orders' link to you? This cannot be undone.")) return;
  await call("/identity/me", { method: "DELETE" });
  save("member", null);
  save("viewer", null);
  await show();
  $("signin-error").textContent = "Your data was erased.";
};

show();
