// In-store screen: the store's trending offers while idle; after a member checks in with
// the code on their phone, their greeting and offers in stock here, until it clears.
// Nothing that names the member (id, phone, full name) is ever put on the screen.
import { api, ApiError, claims, offerCard, tokenFromUrl } from "./api.js";
import { LiveSocket } from "./ws.js";

const screenId = decodeURIComponent(location.pathname.split("/").pop());
const $ = (id) => document.getElementById(id);
const token = tokenFromUrl("screen");
// The server sends `idle` after a minute; this is the fallback if that message is lost.
const FALLBACK_CLEAR_MS = 90000;
const IDLE_REFRESH_MS = 120000;
let clearTimer = null;
let idleOffers = [];
let mode = "idle";

const socket = new LiveSocket(`/ws/screen/${encodeURIComponent(screenId)}`, async () => token || "");
socket.addEventListener("status", (e) => {
  const { state, message } = e.detail;
  document.body.dataset.connection = state;
  $("status").hidden = state === "live" || state === "connecting";
  $("status").textContent = state === "refused"
    ? (token ? `Refused: ${message}` : "This screen needs a screen token (?token=…)")
    : "Reconnecting…";
  $("status").classList.toggle("bad", state === "refused");
});
socket.addEventListener("welcome", () => { loadIdleOffers(); });
socket.addEventListener("idle", (e) => { idleOffers = e.detail.offers || idleOffers; idle(); });
socket.addEventListener("member_offers", (e) => showMember(e.detail));

async function loadIdleOffers() {
  if (!token) return;
  try {
    const store = claims(token).store;   // the screen's store, from its token
    const where = store ? `&store_id=${encodeURIComponent(store)}` : "";
    idleOffers = (await api(`/offers?n=8${where}`, { token })).offers;
    if (mode === "idle") idle();
  } catch { /* keep what is shown */ }
}
setInterval(() => { if (mode === "idle") loadIdleOffers(); }, IDLE_REFRESH_MS);

function idle() {
  mode = "idle";
  clearTimeout(clearTimer);
  document.body.dataset.mode = "idle";
  $("headline").textContent = "Trending in this store";
  $("tier").hidden = true;
  $("prompt").textContent = "Show the member code on your phone to see offers picked for you.";
  $("checkin").hidden = false;
  render(idleOffers);
  focusCode();
}

function greet(greeting, tier) {
  mode = "member";
  document.body.dataset.mode = "member";
  $("headline").textContent = greeting;
  $("tier").hidden = !tier || tier === "member";
  $("tier").textContent = tier ? `${tier[0].toUpperCase()}${tier.slice(1)} member` : "";
  // The screen serves a queue: the scanner stays ready, and the next member's scan
  // greets them at once, whatever is on screen.
  $("checkin").hidden = false;
  $("checkin-error").textContent = "";
  clearTimeout(clearTimer);
  clearTimer = setTimeout(idle, FALLBACK_CLEAR_MS);
  focusCode();
}

let memberOffersSeen = 0;   // member_offers may arrive before the check-in's own answer
function showMember(m) {
  memberOffersSeen++;
  greet(m.greeting, m.tier);
  const offers = m.offers || [];
  $("prompt").textContent = offers.length
    ? (m.tier && m.tier !== "member" ? "Your member prices, in stock in this store today:" : "Picked for you, in stock in this store today:")
    : "Nothing picked for you is on the shelves here today; ask us, we can order it in.";
  render(offers);
}

function render(offers) {
  $("offers").replaceChildren(...offers.slice(0, 8).map((o) => offerCard(o)));
}

// Check-in: a scanner reads the QR on the phone and types the code followed by Enter (it
// acts as a keyboard), or the member types what the phone shows.
function normalize(raw) {
  const compact = raw.replace(/[\s.·-]/g, "");
  return /^nr/i.test(compact) ? `NR${compact.slice(2).toLowerCase()}` : compact;
}
$("checkin").onsubmit = async (e) => {
  e.preventDefault();
  const code = normalize($("code").value);
  $("code").value = "";
  if (!code) return;
  $("checkin-error").textContent = "";
  const seen = memberOffersSeen;
  try {
    const res = await api("/identity/checkin", { method: "POST", token, body: { code } });
    // Only the greeting and tier are used: the member id in the answer stays off screen.
    if (memberOffersSeen === seen) {
      greet(res.greeting, res.tier);
      $("prompt").textContent = "Finding offers for you…";
      render([]);
    }
  } catch (err) {
    $("checkin-error").textContent = err instanceof ApiError && (err.code === "invalid_code" || err.code === "bad_request")
      ? "That code did not work. Codes change every 30 seconds: try the one on your phone now."
      : err instanceof ApiError && err.status === 429 ? "Too many tries; please wait a moment." : "Check-in is not available right now.";
    focusCode();
  }
};

function focusCode() { if (!$("checkin").hidden) $("code").focus({ preventScroll: true }); }
document.addEventListener("click", (e) => { if (e.target.tagName !== "BUTTON") focusCode(); });

$("fullscreen").onclick = () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else document.documentElement.requestFullscreen().catch(() => {});
};
document.addEventListener("fullscreenchange", () => { $("fullscreen").hidden = Boolean(document.fullscreenElement); });

idle();
socket.connect();
