// Live video in the pages: HLS through hls.js (vendored in /static/vendor, loaded only when
// needed), the browser's own HLS where it has no Media Source Extensions (iPhone Safari),
// and a plain video file as before. From the playlist's program-date-time the player
// knows the wall-clock time of the frame on screen; `EventHold` uses it to release product
// events (pins, flash sales) when the video reaches the moment the host made them.
import { el } from "./api.js";

const HLS_URL = "/static/vendor/hls.js/hls.min.mjs";
const SLACK_MS = 1500;      // a hold never lasts longer than the latency plus this
const MAX_HOLD_MS = 30000;  // nor longer than this, whatever the player says

export class StagePlayer {
  // `stage` is where the <video> goes; `replace` (optional) is the poster it replaces.
  constructor(stage, replace = null) {
    this.stage = stage;
    this.replace = replace;
    this.video = null;
    this.hls = null;
    this.kind = null;          // "hls" | "native" | "file"
    this.serverOffset = 0;     // server clock minus this clock, learned from events' ts
    this.offsetKnown = false;
  }

  #videoElement(attrs) {
    if (this.video) return this.video;
    const video = el("video", { autoplay: true, playsinline: true, controls: true, ...attrs });
    video.muted = true;   // autoplay is allowed only muted
    if (this.replace && this.replace.isConnected) this.replace.replaceWith(video);
    else this.stage.prepend(video);
    this.video = video;
    return video;
  }

  playFile(url) {
    if (this.kind) return;
    this.kind = "file";
    this.#videoElement({ src: url, loop: true });
  }

  async playHls(url) {
    if (this.kind) return;
    this.kind = "pending";
    const mse = typeof window.MediaSource === "function" || typeof window.ManagedMediaSource === "function";
    if (mse) {
      const { default: Hls } = await import(HLS_URL);
      if (Hls.isSupported()) {
        this.kind = "hls";
        const video = this.#videoElement({});
        // No worker: the pages' policy runs only our own scripts, and a blob worker is not.
        this.hls = new Hls({ enableWorker: false, lowLatencyMode: false, liveSyncDurationCount: 4 });
        this.hls.loadSource(url);
        this.hls.attachMedia(video);
        this.hls.on(Hls.Events.ERROR, (_, data) => {
          if (!data.fatal) return;
          if (data.type === Hls.ErrorTypes.MEDIA_ERROR) this.hls.recoverMediaError();
          else setTimeout(() => this.hls && this.hls.startLoad(), 2000);
        });
        return;
      }
    }
    const probe = document.createElement("video");
    if (probe.canPlayType("application/vnd.apple.mpegurl")) {
      this.kind = "native";
      this.#videoElement({ src: url });
      return;
    }
    this.kind = null;
  }

  // The server's wall-clock time (ms) of the frame on screen, or null when unknown.
  programDate() {
    if (!this.video) return null;
    if (this.kind === "hls" && this.hls) {
      const d = this.hls.playingDate;
      return d ? d.getTime() : null;
    }
    if (this.kind === "native" && typeof this.video.getStartDate === "function") {
      const start = this.video.getStartDate().getTime();
      return Number.isFinite(start) ? start + this.video.currentTime * 1000 : null;
    }
    return null;
  }

  // An event's `ts` is the server's clock when it was made: a lower bound of the server's
  // clock now, which is how the page learns the offset from its own.
  sawServerTime(ts) {
    if (typeof ts !== "number") return;
    const offset = ts - Date.now();
    if (!this.offsetKnown || offset > this.serverOffset) this.serverOffset = offset;
    this.offsetKnown = true;
  }

  // How far (ms) the frame on screen is behind the broadcast, or null.
  latency() {
    const at = this.programDate();
    return at === null ? null : Math.max(0, Date.now() + this.serverOffset - at);
  }

  destroy() {
    if (this.hls) this.hls.destroy();
    this.hls = null;
  }
}

// Product events wait for the video: each is applied when the player's program date
// reaches the event's `ts`, or at the latest after the player's latency plus a little,
// and always in the order they came. With no clock (no video, a plain file) they apply
// at once.
export class EventHold {
  constructor(player) {
    this.player = player;
    this.queue = [];
    this.timer = setInterval(() => this.pump(), 100);
  }

  wrap(apply) {
    return (e) => this.hold(e.detail, apply);
  }

  hold(detail, apply) {
    this.player.sawServerTime(detail.ts);
    const at = this.player.programDate();
    if (at === null && !this.queue.length) { apply(detail); return; }
    const behind = at === null ? 0 : Math.max(0, (detail.ts || 0) - at);
    const latency = this.player.latency() ?? 0;
    const wait = Math.min(behind, latency + SLACK_MS, MAX_HOLD_MS);
    this.queue.push({ detail, apply, deadline: performance.now() + wait });
    this.pump();
  }

  pump() {
    while (this.queue.length) {
      const next = this.queue[0];
      const at = this.player.programDate();
      const reached = at !== null && at >= (next.detail.ts || 0);
      if (!reached && performance.now() < next.deadline) return;
      this.queue.shift();
      next.apply(next.detail);
    }
  }

  // A fresh snapshot (a welcome without resume) replaces whatever was waiting.
  clear() { this.queue = []; }
}

// The stream's state for a session: {playback, stream, status}.
export async function sessionVideo(sessionId) {
  const res = await fetch(`/live/sessions/${encodeURIComponent(sessionId)}`);
  if (!res.ok) return null;
  return res.json();
}

// Shows "n.n s behind live" in `label` while the player knows its latency.
export function showLatency(player, label) {
  setInterval(() => {
    const ms = player.latency();
    label.hidden = ms === null;
    if (ms === null) return;
    label.dataset.ms = String(Math.round(ms));
    label.textContent = `${(ms / 1000).toFixed(1)} s behind live`;
  }, 250);
}

async function playlistExists(url) {
  try { return (await fetch(url, { method: "HEAD" })).ok; } catch { return false; }
}

// Plays the session's video in `player`: its HLS while the host streams (or its recording
// once ended), else its `video_url` file; with neither, asks again every few seconds.
export async function attachSessionVideo(player, sessionId, videoUrl = null, { hlsOnly = false } = {}) {
  if (player.kind) return;
  const info = await sessionVideo(sessionId).catch(() => null);
  const hls = info && info.playback && info.playback.hls;
  if (hls && ((info.stream && info.stream.state === "live")
      || (info.status === "ended" && await playlistExists(hls)))) {
    await player.playHls(hls);
  } else if (videoUrl && !hlsOnly) {
    player.playFile(videoUrl);
  }
  if (!player.kind && !(info && info.status === "ended")) {
    clearTimeout(player.retry);
    player.retry = setTimeout(() => attachSessionVideo(player, sessionId, videoUrl, { hlsOnly }), 3000);
  }
}
