// Headwater dashboard: charts and the live tail. Loaded from this origin only (the
// Content-Security-Policy allows no inline script), so every behaviour is bound here.
(function () {
  "use strict";

  var palette = ["#0a5bb5", "#b5400a", "#1d6b32", "#6b2fa3", "#a4161a", "#00707a", "#7a4b00", "#c2185b", "#4a5360"];
  var fetched = {};

  function getJSON(url) {
    if (!fetched[url]) {
      fetched[url] = fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(url + ": " + r.status); return r.json(); });
    }
    return fetched[url];
  }

  function drawChart(el) {
    getJSON(el.dataset.chart).then(function (data) {
      var win = data.traffic[el.dataset.window];
      var series = win[el.dataset.series];
      var names = Object.keys(series);
      el.textContent = "";
      if (!names.length) {
        var p = document.createElement("p");
        p.className = "empty";
        p.textContent = "No events in this window.";
        el.appendChild(p);
        return;
      }
      var columns = [win.minutes];
      var spec = [{}];
      names.forEach(function (name, i) {
        columns.push(series[name]);
        spec.push({ label: name, stroke: palette[i % palette.length], width: 1.5 });
      });
      var width = Math.max(el.clientWidth, 260);
      var plot = new uPlot({ width: width, height: 200, series: spec, axes: [{}, { label: "events / min" }] }, columns, el);
      if (window.ResizeObserver) {
        new ResizeObserver(function () { plot.setSize({ width: Math.max(el.clientWidth, 260), height: 200 }); }).observe(el);
      }
      el.dataset.drawn = "true";
    }).catch(function (err) { el.textContent = "Could not load the chart: " + err.message; });
  }

  function row(event) {
    var li = document.createElement("li");
    var details = document.createElement("details");
    var summary = document.createElement("summary");
    [["at", event.received_at], ["kind", event.type], ["name", event.event || event.name || ""],
     ["source", event.source], ["user", event.user_id || event.anonymous_id || ""]].forEach(function (part) {
      var span = document.createElement("span");
      span.className = part[0];
      span.textContent = part[1];
      summary.appendChild(span);
    });
    var pre = document.createElement("pre");
    pre.textContent = JSON.stringify(event, null, 2);
    details.appendChild(summary);
    details.appendChild(pre);
    li.appendChild(details);
    li.dataset.messageId = event.message_id;
    return li;
  }

  function startTail(list) {
    var form = document.getElementById("tail-filters");
    var status = document.getElementById("tail-status");
    var max = parseInt(list.dataset.max || "200", 10);
    var source = null;
    function connect() {
      if (source) source.close();
      var params = new URLSearchParams(new FormData(form));
      source = new EventSource(list.dataset.stream + "?" + params.toString());
      source.addEventListener("ready", function () { status.textContent = "Connected: events appear as they are committed."; list.dataset.connected = "true"; });
      source.addEventListener("events", function (message) {
        JSON.parse(message.data).forEach(function (event) {
          list.insertBefore(row(event), list.firstChild);
        });
        while (list.children.length > max) list.removeChild(list.lastChild);
      });
      source.addEventListener("dropped", function (message) {
        status.textContent = "This page fell behind: " + message.data + " events were not shown.";
      });
      source.addEventListener("error", function () { list.dataset.connected = "false"; status.textContent = "Disconnected; reconnecting…"; });
    }
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      list.textContent = "";
      history.replaceState(null, "", "?" + new URLSearchParams(new FormData(form)).toString());
      connect();
    });
    connect();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-chart]").forEach(drawChart);
    var tail = document.getElementById("tail");
    if (tail) startTail(tail);
  });
})();
