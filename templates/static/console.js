// kiln console: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";
  var lang = document.documentElement.lang || undefined;

  // Times: the server writes UTC; show the viewer's local time, the exact UTC instant on hover.
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) {
        el.textContent = d.toLocaleString(lang, { dateStyle: "medium", timeStyle: "medium" });
      }
    });
  }
  window.kilnLocalTimes = localTimes;

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);

    // Copy buttons: <button data-copy="#id" data-copied="text">.
    document.querySelectorAll("[data-copy]").forEach(function (btn) {
      btn.hidden = false;
      btn.addEventListener("click", function () {
        var target = document.querySelector(btn.getAttribute("data-copy"));
        if (!target || !navigator.clipboard) return;
        navigator.clipboard.writeText(target.textContent.trim()).then(function () {
          var label = btn.textContent;
          btn.textContent = btn.getAttribute("data-copied") || label;
          setTimeout(function () { btn.textContent = label; }, 1500);
        });
      });
    });

    // Forms that ask first: <form data-confirm="question">.
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        if (!window.confirm(form.getAttribute("data-confirm"))) e.preventDefault();
      });
    });

    // Selects that apply at once: <select data-autosubmit>.
    document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
      sel.addEventListener("change", function () { sel.form.submit(); });
    });
  });
})();
