// Live calls without reloading: the server pushes the table (server-sent events, /live/stream) whenever
// it changes; elapsed times tick here in between. Without JavaScript the page reloads itself instead.
(function () {
  "use strict";
  var body = document.getElementById("live-body");
  if (!body || !window.EventSource) { return; }
  var note = document.getElementById("live-note");
  var count = document.getElementById("live-count");
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function tick() {
    var now = Date.now() / 1000;
    var cells = body.querySelectorAll("td.elapsed[data-since], span.talking[data-since]");
    for (var i = 0; i < cells.length; i++) {
      var s = Math.max(0, Math.floor(now - Number(cells[i].getAttribute("data-since"))));
      cells[i].textContent = Math.floor(s / 60) + ":" + pad(s % 60);
    }
  }
  var source = new EventSource(body.getAttribute("data-stream"));
  source.addEventListener("live", function (e) {
    var data = JSON.parse(e.data);
    body.innerHTML = data.html;
    if (count) { count.textContent = "(" + data.count + ")"; }
    tick();
  });
  source.addEventListener("open", function () {
    if (note) { note.textContent = "Live: updates itself as calls come and go."; }
  });
  source.addEventListener("error", function () {
    if (note) { note.textContent = "Connection to the server lost; trying again…"; }
  });
  setInterval(tick, 1000);
}());
