// The home of lives: live now (with viewers), scheduled ones with "remind me", replays;
// every live has its share link.
import { api, bindSignin, el, load, memberToken, shareLive, tell } from "./api.js";

const $ = (id) => document.getElementById(id);
let pendingRemind = null;   // a session id waiting for the sign-in

const when = (secs) => new Date(secs * 1000).toLocaleString(undefined,
  { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });

function shareButton(s) {
  return el("button", { class: "secondary small-button share", "aria-label": `Share ${s.title}`,
    onclick: async () => tell($("home-status"), `${await shareLive(s.session_id, s.title)}: ${s.title}`, "ok") }, "Share");
}

function card(s, kind) {
  const link = `/live/${encodeURIComponent(s.session_id)}`;
  const meta = kind === "now" ? `${s.viewers ?? 0} watching`
    : kind === "later" ? `Starts ${when(s.starts_at)}`
      : `Ended ${s.ended_at ? when(s.ended_at) : ""}`;
  const badge = kind === "now" ? el("span", { class: "badge live", text: "LIVE" })
    : kind === "later" ? el("span", { class: "badge", text: "SCHEDULED" })
      : el("span", { class: "badge", text: "REPLAY" });
  const actions = el("div", { class: "row live-actions" });
  if (kind !== "later") actions.append(el("a", { class: "button-link", href: link }, kind === "now" ? "Watch" : "Watch the replay"));
  else actions.append(el("button", { class: "remind", "data-session": s.session_id, onclick: (e) => remind(s, e.currentTarget) }, "Remind me"));
  actions.append(shareButton(s));
  return el("li", { class: `live-card ${kind}`, "data-session": s.session_id },
    el("div", { class: "row" }, badge, el("span", { class: "muted small grow clip", text: meta })),
    el("h3", { class: "clip", title: s.title },
      kind === "later" ? document.createTextNode(s.title) : el("a", { href: link, text: s.title })),
    s.teaser ? el("p", { class: "teaser muted", text: s.teaser }) : null,
    actions);
}

function fill(id, list, kind, empty) {
  $(id).replaceChildren(...(list.length ? list.map((s) => card(s, kind)) : [el("li", { class: "muted empty", text: empty })]));
}

async function load_() {
  try {
    const res = await api("/live/sessions");
    fill("now", res.sessions || [], "now", "Nobody is live right now.");
    fill("later", res.scheduled || [], "later", "Nothing scheduled yet.");
    fill("replays", res.replays || [], "replays", "No replays yet.");
  } catch (err) { tell($("home-status"), `Could not load the lives: ${err.message}`); }
}

async function remind(s, button) {
  const member = load("member");
  if (!member || !member.phone) {
    pendingRemind = s;
    tell($("signin-error"), "");
    $("signin").showModal();
    return;
  }
  try {
    await api(`/live/sessions/${encodeURIComponent(s.session_id)}/remind`,
      { method: "POST", token: await memberToken(), body: { phone: member.phone } });
    if (button) { button.textContent = "Reminder set"; button.disabled = true; }
    tell($("home-status"), `We will text you when “${s.title}” starts.`, "ok");
  } catch (err) { tell($("home-status"), err.message); }
}

$("signin-cancel").onclick = () => { pendingRemind = null; $("signin").close(); };
bindSignin(async () => {
  $("signin").close();
  if (pendingRemind) {
    const s = pendingRemind;
    pendingRemind = null;
    await remind(s, document.querySelector(`.remind[data-session="${CSS.escape(s.session_id)}"]`));
  }
});

load_();
setInterval(load_, 15000);
