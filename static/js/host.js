// Presenter console: pin, flash sales, live figures, chat moderation, audience suggestions.
import { api, decimalText, el, money, parseMoney, productImage, shareLive, tell, tokenFromUrl } from "./api.js";
import { streamPanel } from "./stream_panel.js";
import { LiveSocket } from "./ws.js";

const sessionId = decodeURIComponent(location.pathname.split("/").pop());
const $ = (id) => document.getElementById(id);
const token = tokenFromUrl("host");
const products = new Map();
const stock = new Map();
const SERIES_POINTS = 150;   // one point every 2 s: five minutes
let lineup = [];
let pinned = [];
let flash = null;
let ended = false;
let reactionTimes = [];      // [ms, count]
let orderTimes = [];         // [ms, count]
let lastOrders = null;
let serverOrdersRecent = null;
let serverOrdersAt = 0;
const series = [];

async function product(sku) {
  if (!products.has(sku)) {
    try { products.set(sku, await api(`/catalog/products/${encodeURIComponent(sku)}`)); }
    catch { products.set(sku, { sku, title: sku, price: null }); }
  }
  return products.get(sku);
}
function titleOf(sku) { return (products.get(sku) || {}).title || sku; }

$("viewer-link").href = `/live/${encodeURIComponent(sessionId)}`;

const socket = new LiveSocket(`/ws/live/${encodeURIComponent(sessionId)}`, async () => token || "");
socket.addEventListener("status", (e) => {
  const { state, message } = e.detail;
  document.body.dataset.connection = state;
  $("status").hidden = state === "live" || state === "connecting";
  $("status").textContent = state === "refused"
    ? (token ? `Refused: ${message}` : "This console needs a host token: open the link printed by `newretail demo` or add ?token=…")
    : "Reconnecting…";
  $("status").classList.toggle("bad", state === "refused");
});

socket.addEventListener("welcome", async (e) => {
  const msg = e.detail;
  const s = msg.state || {};
  $("title").textContent = s.title || "Presenter console";
  lineup = s.products || [];
  pinned = [];
  for (const p of s.pinned || []) { products.set(p.sku, { ...(products.get(p.sku) || {}), ...p }); pinned.push(p.sku); }
  for (const [sku, left] of Object.entries(s.stock || {})) stock.set(sku, left);
  $("f-viewers").textContent = s.viewers ?? 0;
  if (!msg.recovered) {
    $("chat").replaceChildren();
    for (const m of s.chat || []) addChat(m);
  }
  if (s.figures) figures(s.figures);
  flash = s.flash_sale || null;
  if (s.status === "ended") endSession();
  else if (s.status === "scheduled") {
    $("start").hidden = false;
    $("live-badge").textContent = "SCHEDULED";
    $("live-badge").classList.remove("live");
    $("state-note").textContent = s.starts_at ? `Scheduled for ${new Date(s.starts_at * 1000).toLocaleString()}` : "Scheduled";
  }
  await Promise.all(lineup.map(product));
  renderLineup(); renderStock(); fillFlashSelect(); showFlash(); loadSuggestions();
});
socket.addEventListener("pinned", (e) => {
  const p = e.detail.product || { sku: e.detail.sku };
  if (p.title) products.set(p.sku, { ...(products.get(p.sku) || {}), ...p });
  pinned = [...pinned.filter((s) => s !== p.sku), p.sku];
  renderLineup(); renderResults(); loadSuggestions();
});
socket.addEventListener("unpinned", (e) => {
  pinned = e.detail.sku ? pinned.filter((s) => s !== e.detail.sku) : pinned.slice(0, -1);
  renderLineup(); renderResults();
});
socket.addEventListener("viewers", (e) => { $("f-viewers").textContent = e.detail.count; });
socket.addEventListener("reactions", (e) => {
  const n = Object.values(e.detail.counts || {}).reduce((a, b) => a + (Number(b) || 0), 0);
  reactionTimes.push([Date.now(), n]);
  updateRates();
});
socket.addEventListener("chat", (e) => addChat(e.detail));
socket.addEventListener("chat_removed", (e) => {
  const li = $("chat").querySelector(`[data-chat-id="${CSS.escape(String(e.detail.id))}"]`);
  if (li) li.remove();
});
socket.addEventListener("stock", (e) => {
  // one event per product: {sku, left}
  const { sku, left } = e.detail;
  if (typeof sku === "string" && typeof left === "number") setStock(sku, left);
  else for (const [k, v] of Object.entries(e.detail.values || {})) setStock(k, Number(v));
  renderStock(); showFlash();
});
socket.addEventListener("flash_sale", (e) => { flash = e.detail; setStock(flash.sku, flash.qty_left); showFlash(); renderStock(); });
socket.addEventListener("flash_sale_ended", () => { flash = null; showFlash(); });
socket.addEventListener("figures", (e) => figures(e.detail));
socket.addEventListener("ended", endSession);
socket.addEventListener("started", () => {
  $("start").hidden = true;
  $("live-badge").textContent = "LIVE";
  $("live-badge").classList.add("live");
  $("state-note").textContent = "";
});

function setStock(sku, left) {
  stock.set(sku, left);
  if (flash && flash.sku === sku) flash.qty_left = left;
}

function figures(f) {
  if (typeof f.carts === "number") $("f-carts").textContent = f.carts;
  if (typeof f.orders === "number") {
    $("f-orders").textContent = f.orders;
    if (lastOrders !== null && f.orders > lastOrders) orderTimes.push([Date.now(), f.orders - lastOrders]);
    lastOrders = f.orders;
  }
  if (f.revenue && typeof f.revenue === "object") $("f-revenue").textContent = money(f.revenue);
  // The server counts the orders of its stated window (orders_window seconds).
  if (typeof f.orders_recent === "number") { serverOrdersRecent = f.orders_recent; serverOrdersAt = Date.now(); }
  if (f.stock) { for (const [sku, left] of Object.entries(f.stock)) setStock(sku, left); renderStock(); }
  updateRates();
}

function perMinute(times) {
  const now = Date.now();
  const kept = times.filter(([t]) => now - t < 60000);
  return [kept, kept.reduce((a, [, n]) => a + n, 0)];
}
function updateRates() {
  let rpm, opm;
  [reactionTimes, rpm] = perMinute(reactionTimes);
  [orderTimes, opm] = perMinute(orderTimes);
  // the server's count when it is fresh (orders come through it), else this page's own
  if (serverOrdersRecent !== null && Date.now() - serverOrdersAt < 15000) opm = Math.max(opm, serverOrdersRecent);
  $("f-rpm").textContent = rpm;
  $("f-opm").textContent = opm;
  return { rpm, opm };
}

function pinButton(sku) {
  return pinned.includes(sku)
    ? el("button", { class: "secondary", onclick: () => op("unpin", { sku }), disabled: ended }, "Unpin")
    : el("button", { onclick: () => op("pin", { sku }), disabled: ended }, "Pin");
}

function renderLineup() {
  $("lineup").replaceChildren(...lineup.map((sku) => el("li", { "data-sku": sku, class: pinned.includes(sku) ? "is-pinned" : "" },
    el("img", { class: "thumb", src: productImage(sku), alt: "" }),
    el("div", { class: "grow" },
      el("div", { class: "name", text: titleOf(sku) }),
      el("div", { class: "muted small" },
        document.createTextNode(stock.has(sku) ? `${stock.get(sku)} left` : ""),
        pinned.includes(sku) ? el("span", { class: "pinned-tag", text: " · on screen" }) : null)),
    pinButton(sku))));
}

function renderStock() {
  const skus = [...new Set([...lineup, ...stock.keys()])];
  $("stock").replaceChildren(...skus.map((sku) => {
    const left = stock.get(sku);
    return el("li", { "data-sku": sku },
      el("span", { class: "grow", text: titleOf(sku) }),
      flash && flash.sku === sku ? el("span", { class: "badge sale", text: "flash" }) : null,
      el("b", { class: left === 0 ? "error-text" : "", text: left === undefined ? "–" : String(left) }));
  }));
  renderLineup();
}

function fillFlashSelect() {
  const chosen = $("flash-sku").value;
  $("flash-sku").replaceChildren(...lineup.map((sku) => el("option", { value: sku, text: `${titleOf(sku)} (${money((products.get(sku) || {}).price)})` })));
  if (chosen && lineup.includes(chosen)) $("flash-sku").value = chosen;
  suggestPrice();
}
function suggestPrice() {
  const p = products.get($("flash-sku").value);
  if (p && p.price && p.price.amount) $("flash-price").value = decimalText({ amount: Math.max(1, Math.round(p.price.amount * 0.7)), currency: p.price.currency });
}
$("flash-sku").onchange = suggestPrice;

function showFlash() {
  if (!flash) { $("flash-state").textContent = "No flash sale running"; $("flash-stop").disabled = true; return; }
  const secs = Math.max(0, Math.ceil(flash.ends_at - Date.now() / 1000));
  $("flash-state").textContent = `Running: ${titleOf(flash.sku)} at ${money(flash.price)} · ${flash.qty_left} of ${flash.qty_total} left · ${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")} to go`;
  $("flash-stop").disabled = false;
}
setInterval(showFlash, 1000);

async function op(name, fields, errorBox = "pin-error") {
  $(errorBox).textContent = "";
  try { await socket.send(name, fields); return true; }
  catch (err) { $(errorBox).textContent = err.message; return false; }
}

$("flash-form").onsubmit = async (e) => {
  e.preventDefault();
  const fields = {
    sku: $("flash-sku").value,
    price: parseMoney($("flash-price").value, ((products.get($("flash-sku").value) || {}).price || {}).currency || "GBP"),
    qty: Number($("flash-qty").value), seconds: Number($("flash-seconds").value),
  };
  if ($("flash-limit").value) fields.limit = Number($("flash-limit").value);
  await op("flash.start", fields, "flash-error");
};
$("flash-stop").onclick = () => op("flash.stop", {}, "flash-error");
$("end").onclick = async () => {
  if (confirm("End this live session for everyone?")) await op("end", {});
};

function addChat(m) {
  if (m.id && $("chat").querySelector(`[data-chat-id="${CSS.escape(String(m.id))}"]`)) return;
  const from = m.from || {};
  const host = from.name === "Host";
  const li = el("li", { "data-chat-id": m.id, class: host ? "from-host" : "" },
    el("b", { text: from.name || "Viewer" }),
    document.createTextNode(m.text),
    el("button", { class: "secondary", title: "Remove this message", disabled: ended, onclick: () => op("chat.remove", { id: m.id }, "chat-error") }, "Remove"),
    !host && from.id ? el("button", { class: "secondary", title: "Mute this viewer in this session", disabled: ended, onclick: async (ev) => {
      const button = ev.currentTarget;
      if (await op("mute", { member_id: from.id }, "chat-error")) { button.textContent = "Muted"; button.disabled = true; }
    } }, "Mute") : null);
  const box = $("chat");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.append(li);
  while (box.children.length > 300) box.firstChild.remove();
  if (atBottom) box.scrollTop = box.scrollHeight;
}
$("chat-form").onsubmit = async (e) => {
  e.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text) return;
  if (await op("chat", { text }, "chat-error")) $("chat-input").value = "";
};

let results = [];
$("search-form").onsubmit = async (e) => {
  e.preventDefault();
  try {
    const res = await api(`/catalog/products?q=${encodeURIComponent($("q").value)}&limit=20`);
    results = res.products;
    for (const p of results) if (!products.has(p.sku)) products.set(p.sku, p);
    renderResults();
  } catch (err) { $("pin-error").textContent = err.message; }
};
function renderResults() {
  $("results").replaceChildren(...results.map((p) => el("li", { "data-sku": p.sku },
    el("img", { class: "thumb", src: productImage(p.sku), alt: "" }),
    el("span", { class: "grow", text: `${p.title} · ${money(p.price)}` }),
    el("span", { class: "muted small", text: `${p.stock} in stock` }),
    pinButton(p.sku))));
}

async function loadSuggestions() {
  if (!token || ended) return;
  try {
    const res = await api(`/live/sessions/${encodeURIComponent(sessionId)}/suggestions?n=5`, { token });
    const list = res.suggestions || [];
    $("suggestions").replaceChildren(...(list.length ? list.map((s) => el("li", { "data-sku": s.sku },
      el("img", { class: "thumb", src: productImage(s.sku), alt: "" }),
      el("span", { class: "grow", text: s.title || s.sku }),
      pinButton(s.sku))) : [el("li", { class: "muted empty", text: "Waiting for viewers…" })]));
  } catch { /* suggestions are advisory */ }
}
setInterval(loadSuggestions, 15000);

// An ended live is read-only: nothing to pin, sell, moderate or say any more.
function endSession() {
  ended = true;
  $("live-badge").textContent = "ENDED";
  $("live-badge").classList.remove("live");
  $("state-note").textContent = "This live has ended: the console is read-only.";
  $("end").disabled = true;
  $("start").hidden = true;
  document.body.dataset.ended = "1";
  document.body.dataset.state = "ended";
  for (const node of document.querySelectorAll("#flash-form input, #flash-form select, #flash-form button, #chat-form input, #chat-form button, #chat button, #suggestions button"))
    node.disabled = true;
  renderLineup(); renderResults(); loadSuggestions();
}

$("share").onclick = async () => tell($("state-note"), await shareLive(sessionId, $("title").textContent), "ok");
$("start").onclick = async () => {
  try {
    await api(`/live/sessions/${encodeURIComponent(sessionId)}/start`, { method: "POST", token });
    $("start").hidden = true;
  } catch (err) { tell($("state-note"), err.message); }
};

// Create a live: now, or scheduled with a time and a teaser; its console opens next.
$("new-live").onsubmit = async (e) => {
  e.preventDefault();
  const skus = $("new-products").value.split(",").map((x) => x.trim()).filter(Boolean);
  const body = { title: $("new-title").value.trim(), products: skus.length ? skus : lineup };
  if ($("new-starts").value) body.starts_at = new Date($("new-starts").value).getTime() / 1000;
  if ($("new-teaser").value.trim()) body.teaser = $("new-teaser").value.trim();
  try {
    const res = await api("/live/sessions", { method: "POST", token, body });
    const link = el("a", { href: `/host/${encodeURIComponent(res.session_id)}`, text: "open its console" });
    tell($("new-status"), `${body.starts_at ? "Scheduled" : "Live"}: “${res.title}”, `, "ok");
    $("new-status").append(link);
    $("new-live").reset();
  } catch (err) { tell($("new-status"), err.message); }
};

// Viewers, reactions per minute and orders over the last five minutes, every two seconds.
function drawChart() {
  const { rpm } = updateRates();
  series.push({ viewers: Number($("f-viewers").textContent) || 0, rpm, orders: lastOrders || 0 });
  if (series.length > SERIES_POINTS) series.shift();
  const c = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const w = c.clientWidth || 600, h = c.clientHeight || 110;
  if (c.width !== Math.round(w * ratio)) { c.width = Math.round(w * ratio); c.height = Math.round(h * ratio); }
  const g = c.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "rgba(255,255,255,.07)"; g.lineWidth = 1;
  for (let i = 1; i < 4; i++) { g.beginPath(); g.moveTo(0, (h * i) / 4); g.lineTo(w, (h * i) / 4); g.stroke(); }
  for (const [key, colour] of [["viewers", "#3ddc97"], ["rpm", "#ff4d6d"], ["orders", "#ffb703"]]) {
    const max = Math.max(1, ...series.map((p) => p[key]));
    g.strokeStyle = colour; g.lineWidth = 2; g.beginPath();
    series.forEach((p, i) => {
      const x = w - (series.length - 1 - i) * (w / (SERIES_POINTS - 1));
      const y = h - 6 - (p[key] / max) * (h - 16);
      if (i) g.lineTo(x, y); else g.moveTo(x, y);
    });
    g.stroke();
  }
}
setInterval(drawChart, 2000);
setInterval(async () => {
  if (!token || ended) return;
  try { figures(await api(`/live/sessions/${encodeURIComponent(sessionId)}/figures`, { token })); } catch { /* pushed figures still come */ }
}, 10000);
drawChart();

streamPanel(sessionId, token);
socket.connect();
