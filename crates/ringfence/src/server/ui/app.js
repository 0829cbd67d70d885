// The deployment hub's only script. Pages work without it; it keeps them live and asks
// before a destructive action.
"use strict";

(function () {
  const live = () => document.getElementById("live");

  // Ask before a destructive action; a confirmed form says so, and the server skips its
  // own confirmation page.
  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || form.dataset.confirm !== "yes") return;
    const action = form.querySelector("input[name=action]").value;
    if (!window.confirm(`${action}: are you sure? This cannot be undone from here.`)) {
      ev.preventDefault();
      return;
    }
    const confirmed = document.createElement("input");
    confirmed.type = "hidden";
    confirmed.name = "confirmed";
    confirmed.value = "yes";
    form.appendChild(confirmed);
  });

  // Live updates: on each change of state, fetch this page again and swap its <main>,
  // unless the person is typing in it. A change that arrives while a fetch is under way
  // fetches once more after it: that fetch may have been answered before the change.
  let pending = false;
  let again = false;
  async function refresh() {
    if (pending) {
      again = true;
      return;
    }
    pending = true;
    again = false;
    try {
      const active = document.activeElement;
      if (active && active.closest("main") && (active.tagName === "INPUT" || active.tagName === "TEXTAREA")) return;
      const resp = await fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (!resp.ok) return;
      const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
      const fresh = doc.querySelector("main");
      const main = document.querySelector("main");
      if (fresh && main && fresh.innerHTML !== main.innerHTML) {
        main.innerHTML = fresh.innerHTML;
        main.dataset.updated = String(Date.now());
      }
    } catch (e) {
      // The next change tries again.
    } finally {
      pending = false;
      if (again) refresh();
    }
  }

  if (window.EventSource && document.querySelector("header form")) {
    const es = new EventSource("/ui/stream");
    es.addEventListener("open", () => { if (live()) live().textContent = "connected"; });
    es.addEventListener("error", () => { if (live()) live().textContent = "reconnecting"; });
    es.addEventListener("change", refresh);
  }
})();
