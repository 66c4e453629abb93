// The presenter console's stream panel: where to point OBS or a phone app (server and
// stream key), whether the stream is live and at what bitrate, and a muted preview of it.
import { api } from "./api.js";
import { StagePlayer, attachSessionVideo, showLatency } from "./video.js";

const $ = (id) => document.getElementById(id);

export function streamPanel(sessionId, token) {
  const player = new StagePlayer($("preview"), $("preview-poster"));
  showLatency(player, $("preview-latency"));
  $("key-show").onclick = () => {
    const key = $("ingest-key");
    key.type = key.type === "password" ? "text" : "password";
    $("key-show").textContent = key.type === "password" ? "Show" : "Hide";
  };
  async function refresh() {
    if (!token) return;
    try {
      const res = await api(`/live/sessions/${encodeURIComponent(sessionId)}/ingest`, { token });
      $("ingest-url").value = res.ingest.url;
      $("ingest-key").value = res.ingest.key;
      const live = res.stream.state === "live";
      const line = $("stream-state");
      line.dataset.state = res.stream.state;
      line.textContent = live
        ? `Live · ${Math.round((res.stream.bitrate || 0) / 1000)} kbit/s`
        : "Offline: start streaming to the server below with this stream key";
      if (live) attachSessionVideo(player, sessionId, null, { hlsOnly: true });
    } catch { /* shown again on the next refresh */ }
  }
  refresh();
  setInterval(refresh, 2000);
}
