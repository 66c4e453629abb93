// Viewer page: watch, chat, react, cart and checkout inside the stream.
import { api, bindSignin, el, memberToken, money, offerCard, times, productImage, save, shareLive, tell, viewerIdentity } from "./api.js";
import { LiveSocket } from "./ws.js";
import { EventHold, StagePlayer, attachSessionVideo, showLatency } from "./video.js";

const sessionId = decodeURIComponent(location.pathname.split("/").pop());
const $ = (id) => document.getElementById(id);
const products = new Map();   // sku -> {sku, title, price, image}
const stock = new Map();      // sku -> units left in this session
const MAX_CHAT = 200;
let identity = null;
let pinned = [];              // skus, oldest first
let flash = null;
let cart = { lines: [], count: 0, total: 0 };
let ended = false;
let pendingCheckout = false;  // a guest pressed Buy now / Check out and is signing in
let offersTimer = null;

async function product(sku) {
  if (!products.has(sku)) {
    try { products.set(sku, await api(`/catalog/products/${encodeURIComponent(sku)}`)); }
    catch { products.set(sku, { sku, title: sku, price: null, image: productImage(sku) }); }
  }
  return products.get(sku);
}
function titleOf(sku) { return (products.get(sku) || {}).title || sku; }

const socket = new LiveSocket(`/ws/live/${encodeURIComponent(sessionId)}`, async () => {
  identity = await viewerIdentity();
  updateWho();
  return identity.token;
}, {
  // An expired or revoked token: sign-in state is refreshed and the hello tried again once.
  onHelloError: async (err) => {
    if (err.code !== "unauthorized") return false;
    if (identity && identity.kind === "member") save("member", null);
    else save("viewer", null);
    return true;
  },
});

// Video (video.js): the stream or the video_url; product events wait for the video.
const player = new StagePlayer($("stage"), $("poster"));
const hold = new EventHold(player);
showLatency(player, $("latency"));
socket.addEventListener("message", (e) => player.sawServerTime(e.detail.ts));

socket.addEventListener("status", (e) => {
  const { state, message } = e.detail;
  document.body.dataset.connection = state;
  $("status").hidden = state === "live" || state === "connecting";
  $("status").textContent = state === "refused" ? `Cannot join this live: ${message || "refused"}` : "Reconnecting…";
  $("status").classList.toggle("bad", state === "refused");
});

socket.addEventListener("welcome", async (e) => {
  const msg = e.detail;
  const s = msg.state || {};
  document.body.dataset.recovered = String(Boolean(msg.recovered));
  $("title").textContent = s.title || "";
  setText("poster-title", s.title || "");
  document.title = `${s.title || "Live"} · newretail`;
  attachSessionVideo(player, sessionId, s.video_url);
  setViewers(s.viewers ?? 0);
  stock.clear();
  for (const [sku, left] of Object.entries(s.stock || {})) stock.set(sku, left);
  // A resumed connection keeps its chat and gets what it missed replayed after this
  // welcome; otherwise the snapshot's recent chat is all there is.
  if (!msg.recovered) {
    $("chat").replaceChildren();
    for (const m of s.chat || []) addChat(m);
  }
  hold.clear();
  pinned = [];
  for (const p of s.pinned || []) { rememberProduct(p); pinned.push(p.sku); }
  flash = s.flash_sale || null;
  if (s.cart) setCart(s.cart);
  if (s.status === "ended") endSession();
  else if (s.status === "scheduled") scheduledSession(s);
  else showLive();
  renderPinned(); renderFlash();
  refreshOffers();
  if (pendingCheckout && signedIn()) { pendingCheckout = false; openCart(); checkout(); }
  if (pendingChat && signedIn()) { const text = pendingChat; pendingChat = ""; sendChat(text); }
});

socket.addEventListener("pinned", hold.wrap((d) => {
  const p = d.product || { sku: d.sku };
  rememberProduct(p);
  pinned = [...pinned.filter((s) => s !== p.sku), p.sku];
  renderPinned();
  track("view", p.sku);
}));
socket.addEventListener("unpinned", hold.wrap((d) => {
  pinned = d.sku ? pinned.filter((s) => s !== d.sku) : pinned.slice(0, -1);
  renderPinned();
}));
socket.addEventListener("chat", (e) => addChat(e.detail));
socket.addEventListener("chat_removed", (e) => {
  const li = $("chat").querySelector(`[data-chat-id="${CSS.escape(String(e.detail.id))}"]`);
  if (li) li.remove();
});
socket.addEventListener("reactions", (e) => {
  let i = 0;
  for (const [kind, n] of Object.entries(e.detail.counts || {})) {
    for (let k = 0; k < Math.min(n, 6) && i < 12; k++) floatReaction(kind, i++);
  }
});
socket.addEventListener("viewers", (e) => setViewers(e.detail.count));
socket.addEventListener("stock", (e) => {
  // one event per product: {sku, left}
  const { sku, left } = e.detail;
  if (typeof sku === "string" && typeof left === "number") setStock(sku, left);
  else for (const [k, v] of Object.entries(e.detail.values || {})) setStock(k, Number(v));
  renderPinned(); renderFlash();
});
socket.addEventListener("flash_sale", hold.wrap((d) => { flash = d; setStock(flash.sku, flash.qty_left); renderFlash(); renderPinned(); }));
socket.addEventListener("flash_sale_ended", hold.wrap(() => { flash = null; renderFlash(); renderPinned(); }));
socket.addEventListener("cart", (e) => setCart(e.detail.cart));
socket.addEventListener("order", (e) => showOrder(e.detail.order));
socket.addEventListener("offers", (e) => renderOffers(e.detail.offers || [], e.detail.personalized));
socket.addEventListener("ended", endSession);
socket.addEventListener("started", showLive);

function rememberProduct(p) {
  if (p && p.sku && p.title) products.set(p.sku, { ...(products.get(p.sku) || {}), ...p });
}

function setStock(sku, left) {
  stock.set(sku, left);
  if (flash && flash.sku === sku) flash.qty_left = left;
}

function setViewers(n) { $("viewer-count").textContent = String(n); }

function addChat(m) {
  if (m.id && $("chat").querySelector(`[data-chat-id="${CSS.escape(String(m.id))}"]`)) return;
  const from = m.from || {};
  const mine = identity && from.id === identity.id;
  const host = from.name === "Host";
  const li = el("li", { "data-chat-id": m.id, class: `${host ? "from-host" : ""} ${mine ? "mine" : ""}` },
    el("b", { text: mine ? "You" : (from.name || "Viewer") }),
    document.createTextNode(m.text));
  const box = $("chat");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.append(li);
  while (box.children.length > MAX_CHAT) box.firstChild.remove();
  if (atBottom || mine) box.scrollTop = box.scrollHeight;
}

const REACTIONS = ["heart", "fire", "clap", "laugh", "wow"];
function floatReaction(kind, i) {
  const name = REACTIONS.includes(kind) ? kind : "heart";
  const img = el("img", { src: `/static/icons/${name}.svg`, alt: "", class: "float",
    style: `left:${Math.round(Math.random() * 34)}px;animation-delay:${i * 140}ms` });
  $("reactions").append(img);
  setTimeout(() => img.remove(), 2600 + i * 140);
}

function renderPinned() {
  const box = $("pinned");
  if (!pinned.length) {
    box.replaceChildren(el("p", { class: "muted", text: ended ? "This live has ended." : "The host has not pinned a product yet." }));
    return;
  }
  box.replaceChildren(...[...pinned].reverse().map((sku) => {
    const p = products.get(sku) || { sku, title: sku, price: null };
    const left = stock.get(sku);
    const onSale = flash && flash.sku === sku;
    const soldOut = left === 0;
    const price = el("div", { class: "price" });
    if (onSale) price.append(el("s", { text: money(p.price) }), document.createTextNode(money(flash.price)));
    else price.append(document.createTextNode(money(p.price)));
    return el("div", { class: "product-card", "data-sku": sku },
      el("img", { src: p.image || productImage(sku), alt: "" }),
      el("div", { class: "grow info" },
        el("div", { class: "title", text: p.title }), price,
        el("div", { class: `stock-left ${soldOut ? "out" : left !== undefined && left <= 10 ? "low" : ""}`,
          text: left === undefined ? "" : soldOut ? "Sold out" : `${left} left` })),
      el("div", { class: "actions" },
        el("button", { class: "secondary add", onclick: () => addToCart(sku), disabled: soldOut || ended }, "Add to cart"),
        el("button", { class: "buy", onclick: () => buyNow(sku), disabled: soldOut || ended }, "Buy now")));
  }));
}

function renderFlash() {
  if (!flash) { $("flash").hidden = true; return; }
  const p = products.get(flash.sku);
  if (!p) { product(flash.sku).then(renderFlash); return; }
  $("flash").hidden = false;
  $("flash-title").textContent = p.title;
  $("flash-img").src = p.image || productImage(flash.sku);
  $("flash-price").replaceChildren(el("s", { text: money(p.price) }), document.createTextNode(money(flash.price)));
  const left = Math.max(0, flash.qty_left);
  $("flash-left").textContent = left ? `${left} of ${flash.qty_total} left` : "Sold out";
  $("flash-bar").style.width = `${(100 * left) / Math.max(1, flash.qty_total)}%`;
  $("flash-limit").textContent = flash.limit ? `Up to ${flash.limit} each` : "";
  tickFlash();
}
function tickFlash() {
  if (!flash) return;
  const secs = Math.max(0, Math.ceil(flash.ends_at - Date.now() / 1000));
  $("flash-countdown").textContent = `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
  $("flash-buy").disabled = ended || secs === 0 || flash.qty_left <= 0;
}
setInterval(tickFlash, 250);
$("flash-buy").onclick = () => flash && buyNow(flash.sku);

function signedIn() { return identity && identity.kind === "member"; }

async function addToCart(sku, qty = 1) {
  $("cart-error").textContent = "";
  try {
    await socket.send("cart.add", { sku, qty });
    refreshOffers();  // the server records the cart event itself
    return true;
  } catch (err) {
    $("cart-error").textContent = friendly(err);
    openCart();
    return false;
  }
}

async function buyNow(sku) {
  const inCart = (cart.lines || []).some((l) => l.sku === sku);
  if (!inCart && !(await addToCart(sku))) return;
  openCart();
  await checkout(true);   // the cart message may still be on its way; the server has the line
}

function setCart(c) { cart = c || { lines: [] }; renderCart(); }

function renderCart() {
  const lines = cart.lines || [];
  for (const l of lines) if (l.title && !products.has(l.sku)) products.set(l.sku, { sku: l.sku, title: l.title, price: l.list_price });
  $("cart-count").textContent = String(cart.count ?? lines.reduce((n, l) => n + l.qty, 0));
  $("cart-lines").replaceChildren(...(lines.length ? lines.map((l) => el("li", { "data-sku": l.sku },
    el("img", { class: "thumb", src: productImage(l.sku), alt: "" }),
    el("span", { class: "grow", text: `${l.qty} × ${l.title || titleOf(l.sku)}` }),
    l.flash_sale ? el("span", { class: "badge sale", text: "flash" }) : null,
    l.note ? el("span", { class: "muted small repriced", text: l.note }) : null,
    l.discount && l.discount.amount > 0 ? el("s", { text: money(times(l.list_price, l.qty)) }) : null,
    el("b", { text: money(l.line_total) }),
    el("button", { class: "secondary icon-button", title: "Remove", "aria-label": `Remove ${l.title || l.sku}`,
      onclick: () => socket.send("cart.remove", { sku: l.sku }).catch((err) => { $("cart-error").textContent = friendly(err); }) }, "✕")))
    : [el("li", { class: "muted empty", text: "Your cart is empty." })]));
  $("cart-total").textContent = money(cart.total);
  $("checkout").disabled = lines.length === 0;
  $("checkout").textContent = signedIn() ? "Check out" : "Sign in to check out";
  $("cart-signin-note").hidden = signedIn() || lines.length === 0;
}

async function checkout(justAdded = false) {
  $("cart-error").textContent = "";
  if (!justAdded && !(cart.lines || []).length) return;
  if (!signedIn()) { pendingCheckout = true; openSignin(); return; }
  $("checkout").disabled = true;
  try {
    // One key per attempt: a retry after a lost answer gets the same order, not a second.
    await socket.send("checkout", { idempotency_key: crypto.randomUUID() });
  } catch (err) {
    if (err.code === "sign_in_required") { pendingCheckout = true; openSignin(); }
    else $("cart-error").textContent = friendly(err);
  } finally { renderCart(); }
}
$("checkout").onclick = () => checkout();

function friendly(err) {
  switch (err.code) {
    case "out_of_stock": return "Sold out, sorry: nothing was charged.";
    case "limit_exceeded": return "That is more than the flash sale allows per person.";
    case "session_ended": return "This live has ended.";
    case "rate_limited": return "Slow down a little and try again.";
    case "muted": return "The host has muted you in this live.";
    default: return err.message;
  }
}

function showOrder(order) {
  const box = $("order");
  box.hidden = false;
  box.dataset.orderId = order.id;
  box.replaceChildren(
    el("h3", { text: "Order confirmed" }),
    el("p", { class: "muted small", text: `Order ${order.id}` }),
    el("ul", { class: "list" }, ...order.lines.map((l) => el("li", {},
      el("span", { class: "grow", text: `${l.qty} × ${titleOf(l.sku)}` }),
      el("b", { text: money(times(l.price, l.qty)) })))),
    el("p", { class: "row total" }, el("span", { class: "grow", text: "Paid" }), el("b", { text: money(order.total) })),
    el("a", { href: "/me", text: "See your orders" }));
  openCart();
  refreshOffers();
}

// The poster goes once the video plays: its parts may be gone.
function setText(id, text) { const node = $(id); if (node) node.textContent = text; }

// The session's state says itself everywhere: the badge, the poster, a banner.
function endSession() {
  ended = true;
  document.body.dataset.state = "ended";
  $("live-badge").textContent = "ENDED";
  $("live-badge").classList.remove("live");
  setText("poster-live", "ENDED");
  $("ended-banner").hidden = false;
  $("scheduled-banner").hidden = true;
  document.body.dataset.ended = "1";
  $("chat-input").disabled = true;
  $("chat-input").placeholder = "Chat is closed: this live has ended";
  for (const b of document.querySelectorAll("#react-buttons button")) b.disabled = true;
  renderPinned(); renderFlash();
}

function scheduledSession(s) {
  document.body.dataset.state = "scheduled";
  $("live-badge").textContent = "SCHEDULED";
  $("live-badge").classList.remove("live");
  setText("poster-live", s.starts_at ? `STARTS ${new Date(s.starts_at * 1000).toLocaleString()}` : "COMING UP");
  setText("poster-teaser", s.teaser || "");
  if ($("poster-teaser")) $("poster-teaser").hidden = !s.teaser;
  $("scheduled-when").textContent = s.starts_at ? `This live starts ${new Date(s.starts_at * 1000).toLocaleString()}.` : "This live has not started yet.";
  $("scheduled-banner").hidden = false;
}

function showLive() {
  if (ended) return;
  document.body.dataset.state = "live";
  $("live-badge").textContent = "LIVE";
  $("live-badge").classList.add("live");
  setText("poster-live", "● LIVE NOW");
  if ($("poster-teaser")) $("poster-teaser").hidden = true;
  $("scheduled-banner").hidden = true;
}

$("replay-link").onclick = (e) => {
  e.preventDefault();
  $("stage").scrollIntoView({ behavior: "smooth" });
  const video = $("stage").querySelector("video");
  if (video) { video.currentTime = 0; video.play().catch(() => {}); }
};
$("share").onclick = async () => {
  $("share").textContent = await shareLive(sessionId, document.title) === "Link copied" ? "Link copied" : "Share";
};

function openCart() { $("cart").classList.add("open"); }
$("cart-open").onclick = () => $("cart").classList.toggle("open");
$("cart-close").onclick = () => $("cart").classList.remove("open");

// Only members chat: a guest's message waits for their sign-in, then goes out.
let pendingChat = "";
async function sendChat(text) {
  $("chat-error").textContent = "";
  try { await socket.send("chat", { text }); $("chat-input").value = ""; }
  catch (err) { tell($("chat-error"), friendly(err)); }
}
$("chat-form").onsubmit = async (e) => {
  e.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text) return;
  if (!signedIn()) { pendingChat = text; openSignin("Sign in to chat"); return; }
  await sendChat(text);
};
for (const b of document.querySelectorAll("#react-buttons button")) {
  b.onclick = () => { floatReaction(b.dataset.kind, 0); socket.send("react", { kind: b.dataset.kind }).catch(() => {}); };
}

// Sign in: phone and one-time code; the guest's cart and history follow the member.
function openSignin(heading = "Sign in to buy") {
  $("signin-title").textContent = heading;
  $("signin-error").textContent = "";
  if (!$("signin").open) $("signin").showModal();
}
$("signin-open").onclick = () => openSignin("Sign in");
$("signin-cancel").onclick = () => { pendingCheckout = false; pendingChat = ""; $("signin").close(); };
bindSignin(() => {
  $("signin").close();
  socket.reconnect();   // hello again as the member; the welcome carries their cart
});

function updateWho() {
  const member = signedIn();
  $("who").textContent = member ? "Signed in" : "Watching as a guest";
  $("signin-open").hidden = member;
  $("chat-input").placeholder = member ? "Say something" : "Sign in to chat";
  renderCart();
}

// Views and carts are recorded so the "For you" panel follows what this viewer does.
async function track(kind, sku) {
  if (!identity || !sku) return;
  const who = identity.kind === "member" ? { member_id: identity.id } : { anon_id: identity.id };
  try {
    await api("/events", { method: "POST", token: identity.token, body: [{ ...who, sku, kind, session_id: sessionId }] });
  } catch { /* events are best effort from the page */ }
  refreshOffers();
}

function refreshOffers() {
  clearTimeout(offersTimer);
  offersTimer = setTimeout(async () => {
    if (!identity) return;
    const q = `n=8&session_id=${encodeURIComponent(sessionId)}`;
    try {
      if (signedIn()) {
        const token = await memberToken();
        const res = await api(`/offers?member_id=${encodeURIComponent(identity.id)}&${q}`, { token });
        renderOffers(res.offers, res.personalized);
      } else {
        const res = await api(`/offers?${q}`, { token: identity.token });
        renderOffers(res.offers, false);
      }
    } catch { /* keep the last offers */ }
  }, 200);
}

function renderOffers(offers, personalized) {
  $("offers-note").textContent = signedIn()
    ? (personalized ? "Picked for you" : "Turn on personalized offers on your membership page")
    : "Sign in for offers picked for you";
  $("offers").replaceChildren(...offers.map((o) => offerCard(o,
    el("button", { class: "secondary small-button", onclick: () => addToCart(o.sku), disabled: ended }, "Add"))));
}

// Keep the access token fresh while watching: the next reconnect needs a valid one.
setInterval(() => { if (signedIn()) memberToken().catch(() => {}); }, 60000);

updateWho();
socket.connect();
