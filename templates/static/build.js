// kiln console, build page: while the build is queued or running, follow its log live (a chunked
// text/plain stream read with fetch) and refresh the status, timings and error without reloading.
// Without this file the page still shows the log as it was when loaded.
(function () {
  "use strict";

  var box = document.getElementById("build-log");
  if (!box) return;
  var id = box.getAttribute("data-build");
  var after = parseInt(box.getAttribute("data-after"), 10) || 0;
  var state = document.getElementById("log-state");
  var finished = box.getAttribute("data-live") !== "true";
  var ENDED = ["succeeded", "failed", "cancelled", "skipped"];
  var POLL_MS = 4000;

  function atBottom() {
    return box.scrollHeight - box.scrollTop - box.clientHeight < 24;
  }
  function toBottom() {
    box.scrollTop = box.scrollHeight;
  }
  function say(key, live) {
    if (!state) return;
    state.textContent = box.getAttribute("data-" + key) || "";
    state.classList.toggle("live", !!live);
  }

  // Text as it arrives: appended; the box follows only a reader who was already at the bottom.
  function append(text) {
    if (!text) return;
    var stick = atBottom();
    box.appendChild(document.createTextNode(text));
    var empty = document.getElementById("log-empty");
    if (empty) empty.remove();
    for (var i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) after++;
    if (stick) toBottom();
  }

  // The summary (badge, cancel button, error, facts, timings): taken from a fresh copy of this
  // page, so it reads exactly as the server renders it.
  var summaryStatus = (document.getElementById("build-summary") || {}).dataset || {};
  var lastSeen = { status: summaryStatus.status, queue: summaryStatus.queue || "" };
  function refreshSummary() {
    return fetch("/builds/" + encodeURIComponent(id), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok && !r.redirected ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("build-summary");
        var old = document.getElementById("build-summary");
        if (!fresh || !old) return;
        old.replaceWith(fresh);
        lastSeen = { status: fresh.dataset.status, queue: fresh.dataset.queue || "" };
        if (window.kilnLocalTimes) window.kilnLocalTimes(fresh);
        var form = fresh.querySelector("form[data-confirm]");
        if (form) {
          form.addEventListener("submit", function (e) {
            if (!window.confirm(form.getAttribute("data-confirm"))) e.preventDefault();
          });
        }
      })
      .catch(function () { /* the next poll tries again */ });
  }

  var lastKey = null;
  // The build as the API sees it; the summary is redrawn when its status or place in line changed.
  function checkStatus() {
    return fetch("/builds/" + encodeURIComponent(id) + "/status", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (b) {
        var queue = b.queue_position == null ? "" : String(b.queue_position);
        var ended = ENDED.indexOf(b.status) >= 0;
        if (ended) finished = true;
        // Also when the commit, tag or digest became known (the commit is resolved after the build
        // starts): the summary shows them as soon as the API has them.
        var key = [b.status, queue, b.commit || "", b.tag || "", b.digest || ""].join("|");
        var changed = key !== lastKey;
        lastKey = key;
        if (changed || b.status !== lastSeen.status || queue !== lastSeen.queue) return refreshSummary();
      })
      .catch(function () {});
  }

  var poller = null;
  function stopPolling() {
    if (poller) clearInterval(poller);
    poller = null;
  }

  // The log from line `after` on, until the build ends (the server closes the stream then).
  function follow() {
    say("following", true);
    var url = "/builds/" + encodeURIComponent(id) + "/log?follow=true&after=" + after;
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        // A signed-out session is sent to the sign-in page: that is no log.
        var kind = r.headers.get("content-type") || "";
        if (!r.ok || !r.body || r.redirected || kind.indexOf("text/plain") !== 0) {
          return Promise.reject(r.status);
        }
        var reader = r.body.getReader();
        var decoder = new TextDecoder();
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) {
              append(decoder.decode());
              return;
            }
            append(decoder.decode(chunk.value, { stream: true }));
            return pump();
          });
        }
        return pump();
      })
      .then(function () {
        // The stream ended: normally the build did. Check, and follow again if it did not.
        return checkStatus().then(function () {
          if (finished) {
            stopPolling();
            say("ended", false);
          } else {
            follow();
          }
        });
      })
      .catch(function () {
        say("retry", false);
        setTimeout(function () {
          checkStatus().then(function () {
            if (finished) {
              stopPolling();
              say("ended", false);
            } else {
              follow();
            }
          });
        }, POLL_MS);
      });
  }

  toBottom();
  if (!finished) {
    poller = setInterval(checkStatus, POLL_MS);
    follow();
  }
})();
