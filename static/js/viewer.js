// Viewer page: watch, chat, react, cart and checkout inside the stream.
import { api, el, load, money, requestCode, verifyCode, viewerIdentity } from "./api.js";
import { LiveSocket } from "./ws.js";

const sessionId = decodeURIComponent(location.pathname.split("/").pop());
const $ = (id) => document.getElementById(id);
const products = new Map();   // sku -> product
const stock = new Map();      // sku -> units left
let identity = null;
let pinned = [];
let flash = null;
let cart = { lines: [] };
let offersTimer = null;

async function product(sku) {
  if (!products.has(sku)) {
    try { products.set(sku, await api(`/catalog/products/${encodeURIComponent(sku)}`)); }
    catch { products.set(sku, { sku, title: sku, price: 0, image: "" }); }
  }
  return products.get(sku);
}

const socket = new LiveSocket(`/ws/live/${encodeURIComponent(sessionId)}`, async () => {
  identity = await viewerIdentity();
  return identity.token;
});

socket.addEventListener("status", (e) => {
  const state = e.detail.state;
  $("status").hidden = state === "live";
  $("status").textContent = state === "refused" ? "Not allowed to join this session" : "Reconnecting…";
  document.body.dataset.connection = state;
});

socket.addEventListener("welcome", async (e) => {
  const s = e.detail.state || {};
  $("title").textContent = s.title || "";
  if (s.video_url) showVideo(s.video_url);
  setViewers(s.viewers ?? 0);
  for (const [sku, left] of Object.entries(s.stock || {})) stock.set(sku, left);
  $("chat").replaceChildren();
  for (const msg of s.chat || []) addChat(msg);
  pinned = toList(s.pinned);
  flash = s.flash_sale || null;
  if (s.cart) cart = s.cart;
  if (s.ended) ended();
  await Promise.all([renderPinned(), renderFlash()]);
  renderCart();
  refreshOffers();
});

socket.addEventListener("pinned", async (e) => {
  const sku = e.detail.sku || (e.detail.product || {}).sku;
  pinned = e.detail.pinned ? toList(e.detail.pinned) : [...pinned.filter((p) => p !== sku), sku].slice(-3);
  await renderPinned();
  track("view", sku);
});
socket.addEventListener("unpinned", async (e) => {
  pinned = e.detail.pinned ? toList(e.detail.pinned) : (e.detail.sku ? pinned.filter((p) => p !== e.detail.sku) : []);
  await renderPinned();
});
socket.addEventListener("chat", (e) => addChat(e.detail));
socket.addEventListener("chat_removed", (e) => {
  const li = document.querySelector(`[data-chat-id="${CSS.escape(String(e.detail.id))}"]`);
  if (li) li.remove();
});
socket.addEventListener("reactions", (e) => {
  const counts = e.detail.counts || e.detail;
  for (const [kind, n] of Object.entries(counts)) {
    if (typeof n === "number") for (let i = 0; i < Math.min(n, 8); i++) floatReaction(kind, i);
  }
});
socket.addEventListener("viewers", (e) => setViewers(e.detail.count));
socket.addEventListener("stock", (e) => {
  const updates = e.detail.items || [e.detail];
  for (const u of updates) if (u.sku) stock.set(u.sku, u.left);
  if (flash && stock.has(flash.sku)) flash.qty_left = Math.min(flash.qty_left, stock.get(flash.sku));
  renderPinned(); renderFlash();
});
socket.addEventListener("flash_sale", (e) => { flash = e.detail; renderFlash(); });
socket.addEventListener("flash_sale_ended", () => { flash = null; renderFlash(); });
socket.addEventListener("cart", (e) => { cart = e.detail.cart || e.detail; renderCart(); });
socket.addEventListener("order", (e) => showOrder(e.detail.order));
socket.addEventListener("offers", (e) => renderOffers(e.detail.offers || []));
socket.addEventListener("ended", ended);

function toList(p) { return !p ? [] : Array.isArray(p) ? p.map((x) => x.sku || x) : [p.sku || p]; }

function showVideo(url) {
  const video = el("video", { src: url, autoplay: true, muted: true, playsinline: true, loop: true });
  $("poster").replaceWith(video);
}

function setViewers(n) { $("viewers").textContent = `👀 ${n}`; }

function addChat(msg) {
  const from = (msg.from && msg.from.name) || "viewer";
  const li = el("li", { "data-chat-id": msg.id }, el("b", { text: from }), document.createTextNode(msg.text));
  $("chat").append(li);
  while ($("chat").children.length > 100) $("chat").firstChild.remove();
  $("chat").scrollTop = $("chat").scrollHeight;
}

const EMOJI = { heart: "❤️", fire: "🔥", clap: "👏", wow: "😮" };
function floatReaction(kind, i) {
  const span = el("span", { text: EMOJI[kind] || "❤️", style: `left:${Math.random() * 30}px;animation-delay:${i * 120}ms` });
  $("reactions").append(span);
  setTimeout(() => span.remove(), 2600 + i * 120);
}

async function renderPinned() {
  const box = $("pinned");
  if (!pinned.length) { box.replaceChildren(el("p", { class: "muted", text: "The host has not pinned a product yet." })); return; }
  const cards = [];
  for (const sku of pinned) {
    const p = await product(sku);
    const left = stock.has(sku) ? stock.get(sku) : p.stock;
    cards.push(el("div", { class: "product-card panel", "data-sku": sku },
      el("img", { src: p.image, alt: "" }),
      el("div", { class: "grow" }, el("div", { text: p.title }),
        el("div", { class: "price", text: money(p.price) }),
        el("div", { class: "muted", text: left === undefined ? "" : `${left} left` })),
      el("div", { style: "display:flex;flex-direction:column;gap:6px" },
        el("button", { class: "secondary", onclick: () => addToCart(sku), disabled: left === 0 }, "Add to cart"),
        el("button", { onclick: () => buyNow(sku), disabled: left === 0 }, "Buy now"))));
  }
  box.replaceChildren(...cards);
}

async function renderFlash() {
  if (!flash) { $("flash").hidden = true; return; }
  const p = await product(flash.sku);
  $("flash").hidden = false;
  $("flash-title").textContent = p.title;
  $("flash-price").replaceChildren(el("s", { text: money(p.price) }), document.createTextNode(money(flash.price)));
  $("flash-left").textContent = `${flash.qty_left} of ${flash.qty_total} left`;
  $("flash-bar").style.width = `${(100 * flash.qty_left) / Math.max(1, flash.qty_total)}%`;
  $("flash-buy").disabled = flash.qty_left <= 0;
}
setInterval(() => {
  if (!flash) return;
  const secs = Math.max(0, Math.round(flash.ends_at - Date.now() / 1000));
  $("flash-countdown").textContent = `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
}, 250);
$("flash-buy").onclick = () => flash && buyNow(flash.sku);

function signedIn() { return identity && identity.kind === "member"; }

async function addToCart(sku, qty = 1) {
  $("cart-error").textContent = "";
  try { await socket.send("cart.add", { sku, qty }); track("cart", sku, false); }
  catch (err) { $("cart-error").textContent = err.message; openCart(); }
}

async function buyNow(sku) {
  await addToCart(sku);
  openCart();
  await checkout();
}

function renderCart() {
  const lines = cart.lines || [];
  $("cart-count").textContent = lines.reduce((n, l) => n + l.qty, 0);
  $("cart-lines").replaceChildren(...lines.map((l) => el("li", { "data-sku": l.sku },
    el("span", { class: "grow", text: `${l.qty} × ${l.title || (products.get(l.sku) || {}).title || l.sku}` }),
    el("b", { text: money((l.price ?? 0) * l.qty) }),
    el("button", { class: "secondary", onclick: () => socket.send("cart.remove", { sku: l.sku }).catch((e) => { $("cart-error").textContent = e.message; }) }, "✕"))));
  const total = cart.total ?? lines.reduce((s, l) => s + (l.price ?? 0) * l.qty, 0);
  $("cart-total").textContent = money(total);
  $("checkout").disabled = lines.length === 0;
}

async function checkout() {
  $("cart-error").textContent = "";
  if (!signedIn()) { $("signin").showModal(); return; }
  const key = crypto.randomUUID();
  $("checkout").disabled = true;
  try { await socket.send("checkout", { idempotency_key: key }); }
  catch (err) {
    if (err.code === "sign_in_required") $("signin").showModal();
    else $("cart-error").textContent = err.code === "out_of_stock" ? "Sold out, sorry: your cart was not charged." : err.message;
  } finally { renderCart(); }
}
$("checkout").onclick = checkout;

function showOrder(order) {
  const box = $("order");
  box.hidden = false;
  box.replaceChildren(el("h3", { text: "Order confirmed ✔" }),
    el("p", { text: `Order ${order.id}: ${money(order.total)}` }),
    el("ul", { class: "list" }, ...order.lines.map((l) => el("li", { text: `${l.qty} × ${(products.get(l.sku) || {}).title || l.sku} (from ${l.location})` }))));
  box.dataset.orderId = order.id;
  openCart();
  refreshOffers();
}

function ended() {
  $("live-badge").textContent = "ENDED";
  $("live-badge").classList.remove("live");
  document.body.dataset.ended = "1";
}

function openCart() { $("cart").classList.add("open"); }
$("cart-open").onclick = openCart;
$("cart-close").onclick = () => $("cart").classList.remove("open");

$("chat-form").onsubmit = async (e) => {
  e.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text) return;
  $("chat-error").textContent = "";
  try { await socket.send("chat", { text }); $("chat-input").value = ""; }
  catch (err) { $("chat-error").textContent = err.message; }
};
for (const b of document.querySelectorAll("#react-buttons button")) {
  b.onclick = () => { floatReaction(b.dataset.kind, 0); socket.send("react", { kind: b.dataset.kind }).catch(() => {}); };
}

// Sign in: phone and one-time code; the anonymous cart and history follow the member.
$("signin-open").onclick = () => $("signin").showModal();
$("signin-cancel").onclick = () => $("signin").close();
$("send-code").onclick = async () => {
  $("signin-error").textContent = "";
  try { await requestCode($("phone").value); $("signin-error").textContent = "Code sent."; }
  catch (err) { $("signin-error").textContent = err.message; }
};
$("verify").onclick = async () => {
  $("signin-error").textContent = "";
  try {
    await verifyCode($("phone").value, $("otp").value.trim());
    $("signin").close();
    updateWho();
    socket.close();
    socket.connect();
  } catch (err) { $("signin-error").textContent = err.message; }
};

function updateWho() {
  const m = load("member");
  $("who").textContent = m ? "Signed in" : "Watching as a guest";
  $("signin-open").hidden = Boolean(m);
}

async function track(kind, sku, refresh = true) {
  if (!identity || !sku) return;
  const who = identity.kind === "member" ? { member_id: identity.id } : { anon_id: identity.id };
  try { await api("/events", { method: "POST", token: identity.token, body: [{ ...who, sku, kind, session_id: sessionId }] }); }
  catch { /* events are best effort from the page */ }
  if (refresh) refreshOffers();
}

function refreshOffers() {
  clearTimeout(offersTimer);
  offersTimer = setTimeout(async () => {
    if (!identity || identity.kind !== "member") {
      try { renderOffers((await api(`/offers?n=8&session_id=${encodeURIComponent(sessionId)}`)).offers); } catch { /* guests may see nothing */ }
      return;
    }
    try {
      const res = await api(`/offers?member_id=${encodeURIComponent(identity.id)}&n=8&session_id=${encodeURIComponent(sessionId)}`, { token: identity.token });
      renderOffers(res.offers);
    } catch { /* keep the last offers */ }
  }, 150);
}

function renderOffers(offers) {
  $("offers").replaceChildren(...offers.map((o) => el("div", { class: "offer", "data-sku": o.sku },
    el("img", { src: `/catalog/images/${encodeURIComponent(o.sku)}.svg`, alt: "" }),
    el("div", { class: "reason", text: o.reason.replaceAll("_", " ") }),
    el("div", { text: o.title }),
    el("div", { class: "price" }, ...(o.offer_price < o.price ? [el("s", { text: money(o.price) })] : []), document.createTextNode(money(o.offer_price))),
    el("button", { class: "secondary", onclick: () => addToCart(o.sku) }, "Add"))));
}

updateWho();
socket.connect();
