// In-store screen: idle offers, then a member's greeting and offers after a check-in.
import { el, money, tokenFromUrl } from "./api.js";
import { LiveSocket } from "./ws.js";

const screenId = decodeURIComponent(location.pathname.split("/").pop());
const $ = (id) => document.getElementById(id);
const token = tokenFromUrl("screen");
const CLEAR_AFTER_MS = 60000;
let clearTimer = null;
let idleOffers = [];

const socket = new LiveSocket(`/ws/screen/${encodeURIComponent(screenId)}`, async () => token);
socket.addEventListener("status", (e) => {
  $("status").hidden = e.detail.state === "live";
  $("status").textContent = e.detail.state === "refused" ? "This screen needs a screen token (?token=…)" : "Reconnecting…";
});
socket.addEventListener("welcome", (e) => {
  idleOffers = (e.detail.state && e.detail.state.offers) || idleOffers;
  idle();
});
socket.addEventListener("idle", (e) => { idleOffers = e.detail.offers || idleOffers; idle(); });
socket.addEventListener("member_offers", (e) => {
  const m = e.detail;
  document.body.dataset.mode = "member";
  $("headline").textContent = `Hello ${m.greeting}!`;
  $("prompt").textContent = m.tier && m.tier !== "member" ? `${m.tier[0].toUpperCase()}${m.tier.slice(1)} member prices, in stock in this store today:` : "Picked for you, in stock in this store today:";
  render(m.offers || []);
  clearTimeout(clearTimer);
  clearTimer = setTimeout(idle, CLEAR_AFTER_MS);
});

function idle() {
  document.body.dataset.mode = "idle";
  $("headline").textContent = "Trending in this store";
  $("prompt").textContent = "Show the member code on your phone to see offers picked for you.";
  render(idleOffers);
}

function render(offers) {
  $("offers").replaceChildren(...offers.slice(0, 8).map((o) => el("div", { class: "offer", "data-sku": o.sku },
    el("img", { src: `/catalog/images/${encodeURIComponent(o.sku)}.svg`, alt: "" }),
    el("div", { class: "reason", text: o.reason.replaceAll("_", " ") }),
    el("div", { text: o.title }),
    el("div", { class: "price" }, ...(o.offer_price < o.price ? [el("s", { text: money(o.price) })] : []), document.createTextNode(money(o.offer_price))))));
}

socket.connect();
