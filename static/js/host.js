// Presenter console: pin, flash sales, live figures, chat moderation, audience suggestions.
import { api, el, money, tokenFromUrl } from "./api.js";
import { LiveSocket } from "./ws.js";

const sessionId = decodeURIComponent(location.pathname.split("/").pop());
const $ = (id) => document.getElementById(id);
const token = tokenFromUrl("host");
const products = new Map();
const stock = new Map();
let lineup = [];
let pinned = [];
let reactionTimes = [];
const series = [];   // [{t, viewers, rpm}]

async function product(sku) {
  if (!products.has(sku)) {
    try { products.set(sku, await api(`/catalog/products/${encodeURIComponent(sku)}`)); }
    catch { products.set(sku, { sku, title: sku, price: 0 }); }
  }
  return products.get(sku);
}

const socket = new LiveSocket(`/ws/live/${encodeURIComponent(sessionId)}`, async () => token);
socket.addEventListener("status", (e) => {
  $("status").hidden = e.detail.state === "live";
  $("status").textContent = e.detail.state === "refused" ? "This console needs a host token (?token=…)" : "Reconnecting…";
});

socket.addEventListener("welcome", async (e) => {
  const s = e.detail.state || {};
  $("title").textContent = s.title || "Presenter console";
  lineup = s.products || s.lineup || [];
  pinned = toList(s.pinned);
  for (const [sku, left] of Object.entries(s.stock || {})) stock.set(sku, left);
  $("f-viewers").textContent = s.viewers ?? 0;
  $("chat").replaceChildren();
  for (const m of s.chat || []) addChat(m);
  if (s.figures) figures(s.figures);
  showFlash(s.flash_sale);
  if (s.ended) ended();
  await Promise.all(lineup.map(product));
  renderLineup(); renderStock(); fillFlashSelect(); loadSuggestions();
});
socket.addEventListener("pinned", (e) => { pinned = e.detail.pinned ? toList(e.detail.pinned) : [...pinned, e.detail.sku]; renderLineup(); loadSuggestions(); });
socket.addEventListener("unpinned", (e) => { pinned = e.detail.pinned ? toList(e.detail.pinned) : pinned.filter((s) => s !== e.detail.sku); renderLineup(); });
socket.addEventListener("viewers", (e) => { $("f-viewers").textContent = e.detail.count; });
socket.addEventListener("reactions", (e) => {
  const counts = e.detail.counts || {};
  const now = Date.now();
  for (const n of Object.values(counts)) if (typeof n === "number") for (let i = 0; i < n; i++) reactionTimes.push(now);
});
socket.addEventListener("chat", (e) => addChat(e.detail));
socket.addEventListener("chat_removed", (e) => {
  const li = document.querySelector(`[data-chat-id="${CSS.escape(String(e.detail.id))}"]`);
  if (li) li.remove();
});
socket.addEventListener("stock", (e) => { for (const u of e.detail.items || [e.detail]) if (u.sku) stock.set(u.sku, u.left); renderStock(); });
socket.addEventListener("flash_sale", (e) => showFlash(e.detail));
socket.addEventListener("flash_sale_ended", () => showFlash(null));
socket.addEventListener("figures", (e) => figures(e.detail.figures || e.detail));
socket.addEventListener("ended", ended);

function toList(p) { return !p ? [] : Array.isArray(p) ? p.map((x) => x.sku || x) : [p.sku || p]; }

function figures(f) {
  if (f.carts !== undefined) $("f-carts").textContent = f.carts;
  if (f.orders !== undefined) $("f-orders").textContent = f.orders;
  if (f.revenue !== undefined) $("f-revenue").textContent = money(f.revenue);
  if (f.stock) { for (const [sku, left] of Object.entries(f.stock)) stock.set(sku, left); renderStock(); }
}

function renderLineup() {
  $("f-pinned").textContent = pinned.length ? pinned.map((s) => (products.get(s) || {}).title || s).join(", ") : "–";
  $("lineup").replaceChildren(...lineup.map((sku) => {
    const p = products.get(sku) || { title: sku };
    const isPinned = pinned.includes(sku);
    return el("li", { "data-sku": sku },
      el("span", { class: "grow", text: p.title }),
      el("span", { class: "muted", text: stock.has(sku) ? `${stock.get(sku)} left` : "" }),
      isPinned ? el("button", { class: "secondary", onclick: () => op("unpin", { sku }) }, "Unpin")
               : el("button", { onclick: () => op("pin", { sku }) }, "Pin"));
  }));
}

function renderStock() {
  $("stock").replaceChildren(...lineup.map((sku) => el("li", {},
    el("span", { class: "grow", text: (products.get(sku) || {}).title || sku }),
    el("b", { text: String(stock.get(sku) ?? "–") }))));
  renderLineup();
}

function fillFlashSelect() {
  $("flash-sku").replaceChildren(...lineup.map((sku) => el("option", { value: sku, text: (products.get(sku) || {}).title || sku })));
  const first = products.get(lineup[0]);
  if (first && !$("flash-price").value) $("flash-price").value = (first.price * 0.7).toFixed(2);
}
$("flash-sku").onchange = () => { const p = products.get($("flash-sku").value); if (p) $("flash-price").value = (p.price * 0.7).toFixed(2); };

function showFlash(f) {
  $("flash-state").textContent = f ? `Running: ${(products.get(f.sku) || {}).title || f.sku} at ${money(f.price)}, ${f.qty_left}/${f.qty_total} left` : "No flash sale running";
}

async function op(name, fields) {
  $("pin-error").textContent = "";
  try { await socket.send(name, fields); }
  catch (err) { $("pin-error").textContent = err.message; }
}

$("flash-form").onsubmit = async (e) => {
  e.preventDefault();
  $("flash-error").textContent = "";
  const fields = { sku: $("flash-sku").value, price: Number($("flash-price").value), qty: Number($("flash-qty").value), seconds: Number($("flash-seconds").value) };
  if ($("flash-limit").value) fields.per_member_limit = Number($("flash-limit").value);
  try { await socket.send("flash.start", fields); } catch (err) { $("flash-error").textContent = err.message; }
};
$("flash-stop").onclick = async () => { try { await socket.send("flash.stop"); } catch (err) { $("flash-error").textContent = err.message; } };
$("end").onclick = async () => { if (confirm("End this live session for everyone?")) await op("end", {}); };

function addChat(m) {
  const from = (m.from && m.from.name) || "viewer";
  const li = el("li", { "data-chat-id": m.id }, el("b", { text: from }), document.createTextNode(m.text + " "),
    el("button", { class: "secondary", title: "Remove", onclick: () => op("chat.remove", { id: m.id }) }, "✕"),
    m.from && m.from.id ? el("button", { class: "secondary", title: "Mute", onclick: () => op("mute", { member_id: m.from.id }) }, "Mute") : null);
  $("chat").append(li);
  while ($("chat").children.length > 200) $("chat").firstChild.remove();
  $("chat").scrollTop = $("chat").scrollHeight;
}
$("chat-form").onsubmit = async (e) => {
  e.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text) return;
  try { await socket.send("chat", { text }); $("chat-input").value = ""; } catch (err) { $("chat-error").textContent = err.message; }
};

$("search-form").onsubmit = async (e) => {
  e.preventDefault();
  const res = await api(`/catalog/products?q=${encodeURIComponent($("q").value)}&limit=20`);
  $("results").replaceChildren(...res.products.map((p) => {
    products.set(p.sku, p);
    return el("li", { "data-sku": p.sku }, el("span", { class: "grow", text: `${p.title} · ${money(p.price)}` }),
      el("span", { class: "muted", text: `${p.stock} in stock` }),
      el("button", { onclick: () => op("pin", { sku: p.sku }) }, "Pin"));
  }));
};

async function loadSuggestions() {
  try {
    const res = await api(`/live/sessions/${encodeURIComponent(sessionId)}/suggestions?n=5`, { token });
    $("suggestions").replaceChildren(...(res.suggestions || res.products || []).map((s) => el("li", { "data-sku": s.sku },
      el("span", { class: "grow", text: s.title || s.sku }),
      el("button", { onclick: () => op("pin", { sku: s.sku }) }, "Pin"))));
  } catch { /* suggestions need a trained model */ }
}
setInterval(loadSuggestions, 15000);

function ended() { $("live-badge").textContent = "ENDED"; $("live-badge").classList.remove("live"); }

// Viewers and reactions per minute over the last five minutes, drawn every two seconds.
setInterval(() => {
  const now = Date.now();
  reactionTimes = reactionTimes.filter((t) => now - t < 60000);
  $("f-rpm").textContent = reactionTimes.length;
  series.push({ viewers: Number($("f-viewers").textContent) || 0, rpm: reactionTimes.length });
  if (series.length > 150) series.shift();
  const c = $("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const max = Math.max(1, ...series.map((p) => Math.max(p.viewers, p.rpm)));
  for (const [key, colour] of [["viewers", "#3ddc97"], ["rpm", "#ff4d6d"]]) {
    g.strokeStyle = colour; g.lineWidth = 2; g.beginPath();
    series.forEach((p, i) => { const x = (i / 149) * c.width, y = c.height - (p[key] / max) * (c.height - 10) - 5; i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke();
  }
}, 2000);

socket.connect();
