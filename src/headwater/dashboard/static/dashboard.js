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
    var pause = document.getElementById("tail-pause");
    var paused = false;
    var held = 0;
    pause.addEventListener("click", function () {
      paused = !paused;
      pause.setAttribute("aria-pressed", String(paused));
      pause.textContent = paused ? "Resume" : "Pause";
      if (!paused && held) {
        status.textContent = held + " events arrived while paused; they are not shown.";
        held = 0;
      }
    });
    function connect() {
      if (source) source.close();
      var params = new URLSearchParams(new FormData(form));
      source = new EventSource(list.dataset.stream + "?" + params.toString());
      source.addEventListener("ready", function () { status.textContent = "Connected: events appear as they are committed."; list.dataset.connected = "true"; });
      source.addEventListener("events", function (message) {
        var events = JSON.parse(message.data);
        if (paused) { held += events.length; status.textContent = "Paused: " + held + " new events not shown."; return; }
        events.forEach(function (event) {
          list.insertBefore(row(event), list.firstChild);
        });
        while (list.children.length > max) list.removeChild(list.lastChild);
      });
      source.addEventListener("dropped", function (message) {
        status.textContent = "This page fell behind: " + message.data + " events were not shown.";
      });
      source.addEventListener("signed_out", function (message) {
        source.close();
        list.dataset.connected = "false";
        status.textContent = "Not connected: " + message.data + ".";
      });
      source.addEventListener("full", function (message) {
        source.close();
        list.dataset.connected = "false";
        status.textContent = "Not connected: " + message.data + ". Reload to try again.";
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

  // A partial asked for after the session ended: sign in again, then come back here.
  document.addEventListener("htmx:responseError", function (e) {
    var status = e.detail.xhr.status;
    if (status === 401) {
      window.location.assign("/signin?next=" + encodeURIComponent(window.location.pathname + window.location.search));
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-chart]").forEach(drawChart);
    var tail = document.getElementById("tail");
    if (tail) startTail(tail);
  });
})();

// The interval grid: one Tab stop, arrow keys between cells (left and right along a row,
// up and down to the same column of the row above or below), Home and End to the ends.
(function () {
  "use strict";

  function cellsOf(grid) { return Array.prototype.slice.call(grid.querySelectorAll("button.cell")); }

  function rove(grid) {
    var cells = cellsOf(grid);
    if (!cells.length || grid.dataset.roving === "true") return;
    grid.dataset.roving = "true";
    cells.forEach(function (c) { c.tabIndex = -1; });
    cells[cells.length - 1].tabIndex = 0;  // the latest interval
  }

  function column(cell) {
    var n = 0;
    for (var el = cell.previousElementSibling; el; el = el.previousElementSibling) {
      if (el.classList.contains("cell") || el.classList.contains("cell-gap")) n++;
    }
    return n;
  }

  function vertical(cell, step) {
    var row = cell.closest(".cell-row");
    var other = step > 0 ? row.nextElementSibling : row.previousElementSibling;
    if (!other) return null;
    var want = column(cell);
    var best = null;
    Array.prototype.forEach.call(other.querySelectorAll("button.cell"), function (c) {
      if (column(c) <= want) best = c;
    });
    return best || other.querySelector("button.cell");
  }

  function move(grid, from, to) {
    if (!to) return;
    from.tabIndex = -1;
    to.tabIndex = 0;
    to.focus();
  }

  document.addEventListener("keydown", function (e) {
    var cell = e.target;
    if (!(cell instanceof HTMLElement) || !cell.matches(".cells button.cell")) return;
    var grid = cell.closest(".cells");
    var cells = cellsOf(grid);
    var i = cells.indexOf(cell);
    var to = null;
    if (e.key === "ArrowRight") to = cells[i + 1];
    else if (e.key === "ArrowLeft") to = cells[i - 1];
    else if (e.key === "ArrowDown") to = vertical(cell, 1);
    else if (e.key === "ArrowUp") to = vertical(cell, -1);
    else if (e.key === "Home") to = cells[0];
    else if (e.key === "End") to = cells[cells.length - 1];
    else return;
    e.preventDefault();
    move(grid, cell, to);
  });

  function init(root) { Array.prototype.forEach.call(root.querySelectorAll(".cells"), rove); }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (e) { init(e.target); });
})();
