// CallPulse dashboard: seeking the call audio, live call status, the live alert feed.
// Plain script, no build step; every feature checks for its element first.
(function () {
  "use strict";
  const player = document.getElementById("player");

  function seekTo(seconds) {
    if (!player || !Number.isFinite(seconds)) return;
    const apply = () => { player.currentTime = Math.max(0, seconds); };
    // Before metadata is known the browser may ignore a seek; apply it once it can.
    if (player.readyState >= 1) apply();
    else { player.addEventListener("loadedmetadata", apply, { once: true }); player.load(); }
  }

  function seekFromHash() {
    const match = /^#t=(\d+(?:\.\d+)?)$/.exec(window.location.hash);
    if (match) seekTo(parseFloat(match[1]));
  }

  if (player) {
    document.addEventListener("click", (event) => {
      const target = event.target.closest("[data-seek]");
      if (target) { event.preventDefault(); seekTo(parseFloat(target.dataset.seek)); }
    });
    // SVG points are focusable "buttons": Enter and Space act like a click.
    document.addEventListener("keydown", (event) => {
      const target = event.target.closest && event.target.closest("svg [data-seek]");
      if (target && (event.key === "Enter" || event.key === " ")) {
        event.preventDefault(); seekTo(parseFloat(target.dataset.seek));
      }
    });
    const position = document.getElementById("position");
    player.addEventListener("timeupdate", () => {
      const t = player.currentTime;
      if (position) position.textContent = Math.floor(t / 60) + ":" + (t % 60).toFixed(1).padStart(4, "0");
      // Looked up each time: a live call's charts are replaced as the call grows.
      document.querySelectorAll(".timeline-svg").forEach((svg) => {
        const duration = parseFloat(svg.dataset.duration);
        const line = svg.querySelector(".playhead");
        if (!line || !(duration > 0)) return;
        const x = 72 + (960 - 72 - 16) * Math.min(t, duration) / duration;
        line.setAttribute("x1", x.toFixed(1)); line.setAttribute("x2", x.toFixed(1));
      });
    });
    window.addEventListener("hashchange", seekFromHash);
    seekFromHash();
  }

  // A call still being analyzed: poll its status, reload (keeping #t=) once it is final. While it
  // grows (a live call, or segments and alerts landing), the summary, the timeline, the alerts and
  // the segment list are swapped in place from a fresh render of this page, so the player keeps
  // playing; a part the supervisor is typing in is left alone until the next change.
  const callStatus = document.getElementById("call-status");
  if (callStatus && callStatus.dataset.statusUrl) {
    let seen = null;
    const grow = async () => {
      const response = await fetch(window.location.pathname, { credentials: "same-origin" });
      if (!response.ok) return false;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      let complete = true;
      for (const selector of ["section.summary", "section[aria-labelledby='timeline-h']", "#alerts",
                              "section[aria-labelledby='segments-h']", "#call-status .progress"]) {
        const here = document.querySelector(selector);
        const there = fresh.querySelector(selector);
        if (!there) continue;
        if (here && here.contains(document.activeElement)) { complete = false; continue; }
        if (here) here.innerHTML = there.innerHTML; // rendered and escaped by the server
        else if (selector === "#alerts") { // the call's first alert: its section appears
          const segments = document.querySelector("section[aria-labelledby='segments-h']");
          const anchor = segments && segments.closest(".two-col");
          if (anchor) anchor.before(document.importNode(there, true));
        }
      }
      return complete;
    };
    const poll = async () => {
      try {
        const response = await fetch(callStatus.dataset.statusUrl, { credentials: "same-origin" });
        if (response.ok) {
          const body = await response.json();
          if (body.final) { window.location.reload(); return; }
          callStatus.querySelector(".status").textContent = body.status;
          const now = body.segments_done + "/" + body.segments_total + "/" + body.alerts;
          // Seen only once every part took it: a part skipped while in use is swapped next time.
          if (seen === null || now === seen || await grow()) seen = now;
        }
      } catch (err) { /* a failed poll is retried on the next tick */ }
      window.setTimeout(poll, 1500);
    };
    window.setTimeout(poll, 1500);
  }

  // The calls list: rows not yet final are re-rendered by the server until they are, and on the
  // first page new calls matching the search are added at the top, every 2 s, without a reload.
  const calls = document.getElementById("calls");
  if (calls && calls.dataset.liveUrl) {
    const body = calls.querySelector("tbody");
    const announce = document.getElementById("calls-live");
    const poll = async () => {
      try {
        if (calls.dataset.newUrl) {
          const response = await fetch(calls.dataset.newUrl, { credentials: "same-origin" });
          if (response.ok) {
            const fresh = (await response.json()).items.filter(
              (item) => !body.querySelector("tr[data-id='" + item.id + "']"));
            for (const item of fresh.reverse()) { // oldest first, so the newest ends on top
              body.insertAdjacentHTML("afterbegin", item.html); // rendered and escaped by the server
              body.firstElementChild.classList.add("fresh");
            }
            if (fresh.length) {
              document.getElementById("calls-wrap").hidden = false;
              const empty = document.getElementById("calls-empty");
              if (empty) empty.hidden = true;
              if (announce) announce.textContent = fresh.length + " new call" + (fresh.length > 1 ? "s" : "") + " added.";
            }
          }
        }
        const pending = Array.from(body.querySelectorAll("tr[data-final='false']")).map((r) => r.dataset.id);
        if (pending.length) {
          const query = pending.map((id) => "ids=" + encodeURIComponent(id)).join("&");
          const response = await fetch(calls.dataset.liveUrl + "?" + query, { credentials: "same-origin" });
          if (response.ok) {
            for (const item of (await response.json()).items) {
              const row = body.querySelector("tr[data-id='" + item.id + "']");
              if (row) row.outerHTML = item.html;
            }
          }
        }
      } catch (err) { /* retried on the next tick */ }
      window.setTimeout(poll, 2000);
    };
    window.setTimeout(poll, 2000);
  }

  // The alert feed: server-sent events; EventSource reconnects by itself with Last-Event-ID.
  const feed = document.getElementById("alert-feed");
  if (feed && feed.dataset.streamUrl && window.EventSource) {
    const state = document.getElementById("feed-state");
    const empty = document.getElementById("feed-empty");
    const source = new EventSource(feed.dataset.streamUrl);
    source.addEventListener("open", () => { if (state) state.textContent = "Live: new alerts appear here."; });
    source.addEventListener("error", () => { if (state) state.textContent = "Connection lost; reconnecting…"; });
    source.addEventListener("alert", (event) => {
      const alert = JSON.parse(event.data);
      if (feed.querySelector("[data-alert-id='" + alert.id + "']")) return;
      const holder = document.createElement("ol");
      holder.innerHTML = alert.html; // rendered and escaped by the server's template
      const item = holder.firstElementChild;
      item.classList.add("fresh");
      feed.prepend(item);
      if (empty) empty.hidden = true;
    });
    window.addEventListener("pagehide", () => source.close());
  }
})();

// Forms marked data-fragment (alert actions, label corrections) are sent with fetch; the server
// answers with the changed item's HTML, which replaces the form's item in place. Without script
// the same forms post normally and the server redirects back.
(function () {
  "use strict";
  const pageToken = () => {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  };
  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.fragment) return;
    const item = form.closest("[data-fragment-item]") || form.closest("li");
    if (!item) return;
    event.preventDefault();
    const submitter = event.submitter;
    const action = (submitter && submitter.hasAttribute("formaction")) ? submitter.formAction : form.action;
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const response = await fetch(action, {
        method: "POST", body: new FormData(form), credentials: "same-origin",
        // The page's own request-forgery token, for forms that arrived live without one.
        headers: { "X-Dashboard-Fragment": form.dataset.fragment, "X-CSRF-Token": pageToken() },
      });
      const html = await response.text();
      if (response.ok) {
        const holder = document.createElement(item.tagName === "LI" ? "ol" : "div");
        holder.innerHTML = html; // rendered and escaped by the server's template
        const fresh = holder.firstElementChild;
        if (fresh) {
          item.replaceWith(fresh);
          const focusable = fresh.querySelector("[data-focus-after], button, a");
          if (focusable) focusable.focus();
          return;
        }
      }
      // A refusal comes back as a page with the reason: show the reason beside the form.
      const page = new DOMParser().parseFromString(html, "text/html");
      const reason = page.querySelector("main p, .error");
      let note = form.querySelector(".form-error");
      if (!note) {
        note = document.createElement("p");
        note.className = "error form-error";
        note.setAttribute("role", "alert");
        form.append(note);
      }
      note.textContent = reason ? reason.textContent : "The change was refused (" + response.status + ").";
    } catch (err) {
      form.submit(); // the network hiccuped: fall back to a plain post
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
})();

// The review page's players each play one segment: the media fragment (#t=start,end) starts and
// stops them; this keeps a reader who seeks or replays inside the span too.
(function () {
  "use strict";
  document.querySelectorAll("audio.segment-player").forEach((player) => {
    const start = Number(player.dataset.start), end = Number(player.dataset.end);
    player.addEventListener("play", () => {
      if (player.currentTime < start - 0.05 || player.currentTime >= end - 0.05) player.currentTime = start;
    });
    player.addEventListener("timeupdate", () => {
      if (player.currentTime >= end && !player.paused) player.pause();
    });
  });
})();
