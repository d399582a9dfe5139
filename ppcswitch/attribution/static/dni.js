/* ppcswitch dynamic number insertion. Served by ppcswitch; no third-party code.
 *
 * <script src="https://calls.example.net/dni/v1/dni.js" data-key="pk_..." async></script>
 * <a class="ppc-number" href="tel:+18005550100">(800) 555-0100</a>
 *
 * Asks ppcswitch for a pool number for this visitor, sending the page's sub_id,
 * click_id (or gclid / fbclid / msclkid) and utm_* / keyword values, puts it in
 * every element matching data-selector (default ".ppc-number"), and renews the
 * lease while the page stays open. Without an answer the page keeps its number.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) return;
  var key = script.getAttribute("data-key") || "";
  var selector = script.getAttribute("data-selector") || ".ppc-number";
  var base = script.src.replace(/\/dni\/v1\/dni\.js.*$/, "");
  var query = new URLSearchParams(window.location.search);
  var names = ["sub_id", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "keyword"];
  var token = "";

  function clickId() {
    return query.get("click_id") || query.get("gclid") || query.get("fbclid") || query.get("msclkid") || "";
  }

  function show(answer) {
    var nodes = document.querySelectorAll(selector);
    for (var i = 0; i < nodes.length; i++) {
      nodes[i].textContent = answer.display;
      nodes[i].setAttribute("data-ppc-number", answer.number);
      if (nodes[i].tagName === "A") nodes[i].setAttribute("href", "tel:" + answer.number);
    }
  }

  function lease() {
    var url = new URL(base + "/dni/v1/lease");
    url.searchParams.set("key", key);
    names.forEach(function (n) { var v = query.get(n); if (v) url.searchParams.set(n, v); });
    var click = clickId();
    if (click) url.searchParams.set("click_id", click);
    if (token) url.searchParams.set("token", token);
    fetch(url.toString(), { credentials: "omit", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (answer) {
        if (!answer) { window.setTimeout(lease, 30000); return; }
        token = answer.token;
        show(answer);
        window.setTimeout(lease, answer.renew_seconds * 1000);
      })
      .catch(function () { window.setTimeout(lease, 30000); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", lease);
  else lease();
})();
