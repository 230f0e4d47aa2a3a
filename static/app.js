// The Management Tool's only script: times in the viewer's own zone (UTC on
// hover), and the pending count kept live, with the pending list refreshed
// when it changes. The pages work without it.
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (isNaN(at)) continue;
    el.title = at.toISOString().replace(".000Z", "Z") + " (UTC)";
    el.textContent = at.toLocaleString();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
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
