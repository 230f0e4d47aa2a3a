// The Management Tool's own script: times in the viewer's own zone (UTC on
// hover), and read in it where a form asks for one, the pending count kept live, with the pending list refreshed when
// it changes, and the recording player started on its page. The pages work
// without it, except for playing a recording (its file can be downloaded).
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (isNaN(at)) continue;
    el.title = at.toISOString().replace(".000Z", "Z") + " (UTC)";
    el.textContent = at.toLocaleString();
  }
}

// A recording's page: the player, at the moment asked for.
function player() {
  const el = document.getElementById("player");
  if (!el || !window.AsciinemaPlayer) return;
  window.AsciinemaPlayer.create(el.dataset.cast, el, {
    startAt: Number(el.dataset.startAt) || 0,
    autoPlay: true,
    fit: "width",
    controls: true,
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  // Times typed in a filter are in the viewer's zone, like the rows.
  const tz = document.getElementById("tz");
  if (tz) tz.value = String(-new Date().getTimezoneOffset());
  player();
  const badge = document.getElementById("pending");
  if (!badge || !window.EventSource) return;
  const events = new EventSource("/events");
  events.addEventListener("pending", async (event) => {
    if (badge.textContent === event.data) return;
    badge.textContent = event.data;
    const list = document.getElementById("pending-list");
    if (!list) return;
    const page = await fetch("/requests", { credentials: "same-origin" });
    if (!page.ok) return;
    const fresh = new DOMParser().parseFromString(await page.text(), "text/html")
      .getElementById("pending-list");
    if (fresh) {
      list.replaceWith(fresh);
      localTimes(fresh);
    }
  });
});
