// The playground's only script (no inline script: the pages' CSP allows 'self' only).
// - keeps the API key the visitor typed in sessionStorage (this tab only) and sends it as X-API-Key;
// - search: a picture chosen with the file picker or dropped on the box, with a preview;
// - user page: click / buy buttons post an event to the JSON API, then the feed is fetched again.
"use strict";

(function () {
  const KEY = "recsys-api-key";

  function apiKey() {
    try { return sessionStorage.getItem(KEY) || ""; } catch (e) { return ""; }
  }

  function showWrites() {
    const on = apiKey() !== "";
    document.querySelectorAll("[data-writes]").forEach((el) => { el.hidden = !on; });
    const off = document.getElementById("writes-off");
    if (off) off.hidden = on;
    const state = document.getElementById("key-state");
    if (state) state.textContent = on ? "key saved for this tab" : "";
  }

  function setupKey() {
    const form = document.getElementById("key-form");
    if (!form) return;
    const input = document.getElementById("api-key");
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      try { sessionStorage.setItem(KEY, input.value.trim()); } catch (e) { /* storage off: stays read-only */ }
      input.value = "";
      showWrites();
    });
    document.getElementById("key-forget").addEventListener("click", () => {
      try { sessionStorage.removeItem(KEY); } catch (e) { /* nothing stored */ }
      showWrites();
    });
    showWrites();
  }

  function setupDrop() {
    const drop = document.getElementById("drop");
    const input = document.getElementById("image");
    const preview = document.getElementById("preview");
    if (!drop || !input) return;
    let url = null;
    function show() {
      const file = input.files && input.files[0];
      if (url) URL.revokeObjectURL(url);
      url = null;
      if (file && file.type.startsWith("image/")) {
        url = URL.createObjectURL(file);
        preview.src = url;
        preview.hidden = false;
        document.getElementById("drop-text").textContent = file.name;
      } else {
        preview.hidden = true;
        preview.removeAttribute("src");
      }
    }
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (ev) => {
      ev.preventDefault();
      drop.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
    drop.addEventListener("drop", (ev) => {
      ev.preventDefault();
      if (ev.dataTransfer && ev.dataTransfer.files.length) {
        input.files = ev.dataTransfer.files;
        show();
      }
    });
  }

  function tileIds(box) {
    return new Set(Array.from(box.querySelectorAll("[data-item-id]")).map((el) => el.dataset.itemId));
  }

  async function refreshFeed(box) {
    const before = tileIds(box);
    const resp = await fetch(box.dataset.feedUrl, { headers: { Accept: "text/html" } });
    if (!resp.ok) throw new Error("feed: HTTP " + resp.status);
    box.innerHTML = await resp.text();  // server-rendered, escaped by the template engine
    let fresh = 0;
    box.querySelectorAll("[data-item-id]").forEach((el) => {
      if (!before.has(el.dataset.itemId)) { el.classList.add("new"); fresh += 1; }
    });
    showWrites();
    return fresh;
  }

  async function refreshHistory() {
    const box = document.getElementById("history-box");
    if (!box) return;
    const resp = await fetch(box.dataset.url, { headers: { Accept: "text/html" } });
    if (!resp.ok) throw new Error("history: HTTP " + resp.status);
    box.innerHTML = await resp.text();
  }

  function setupFeed() {
    const box = document.getElementById("feed-box");
    const status = document.getElementById("event-status");
    if (!box) return;
    box.addEventListener("click", async (ev) => {
      const btn = ev.target.closest("button.post-event");
      if (!btn) return;
      const key = apiKey();
      if (!key) { status.textContent = "Enter an API key first."; return; }
      btn.disabled = true;
      const body = { events: [{ user_id: box.dataset.user, item_id: btn.dataset.item, event_type: btn.dataset.event }] };
      try {
        const resp = await fetch("/v1/events", {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-API-Key": key },
          body: JSON.stringify(body),
        });
        const data = await resp.json();
        if (!resp.ok) {
          status.textContent = "Not recorded: " + ((data.error && data.error.message) || ("HTTP " + resp.status));
          btn.disabled = false;
          return;
        }
        const tile = btn.closest("[data-item-id]");
        const title = (tile && tile.querySelector(".title")) ? tile.querySelector(".title").textContent : btn.dataset.item;
        const fresh = await refreshFeed(box);
        await refreshHistory();
        status.textContent = "Recorded " + btn.dataset.event + " of " + title +
          "; feed refreshed (" + fresh + " new item" + (fresh === 1 ? "" : "s") + " folded in).";
      } catch (e) {
        status.textContent = "Failed: " + e.message;
        btn.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupKey();
    setupDrop();
    setupFeed();
  });
})();
