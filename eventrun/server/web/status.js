// Live numbers for the status page: polls /status every 2 s and redraws the 15-minute
// charts from /status/history every 5 s; redrive buttons POST to /dlq.
(function () {
  "use strict";
  let previous = null;

  // The same drawing as eventrun.observe._history.sparkline: scaled to the maximum.
  function points(values, width, height) {
    const top = Math.max(0, ...values) || 1;
    const n = Math.max(values.length - 1, 1);
    return values.map(function (v, i) {
      return (i * width / n).toFixed(1) + "," + (height - 2 - v * (height - 4) / top).toFixed(1);
    }).join(" ");
  }

  function seriesOf(history, key) {
    const [kind, ...rest] = key.split("/");
    if (kind === "functions") {
      const which = rest.pop();
      const fn = history.functions[rest.join("/")];
      return fn ? fn[which] : null;
    }
    return (history[kind] || {})[rest.join("/")] || null;
  }

  async function redrawCharts() {
    try {
      const response = await fetch("/status/history", { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) return;
      const history = await response.json();
      for (const figure of document.querySelectorAll("figure.chart")) {
        const values = seriesOf(history, figure.dataset.series);
        const svg = figure.querySelector("svg");
        if (!values || !svg) continue;
        const box = svg.viewBox.baseVal;
        svg.querySelector("polyline").setAttribute("points", points(values, box.width, box.height));
        svg.dataset.points = String(values.length);
        const last = values.length ? values[values.length - 1] : 0;
        const text = figure.querySelector("figcaption").textContent + ": last " + last +
          ", max " + Math.max(0, ...values);
        svg.setAttribute("aria-label", text);
        svg.querySelector("title").textContent = text;
      }
    } catch (err) { /* the daemon restarted: try again next time */ }
  }

  function cell(row, key) { return row ? row.querySelector('[data-k="' + key + '"]') : null; }
  function set(el, text) { if (el && el.textContent !== String(text)) el.textContent = text; }

  function render(doc, now) {
    for (const [name, fn] of Object.entries(doc.functions)) {
      const row = document.querySelector('tr[data-fn="' + CSS.escape(name) + '"]');
      if (!row) continue;
      const inv = fn.invocations || {};
      const w = fn.workers || {};
      set(cell(row, "workers"), (w.busy || 0) + " / " + (w.workers || 0));
      set(cell(row, "in_flight"), fn.in_flight || 0);
      set(cell(row, "ok"), inv.ok || 0);
      set(cell(row, "error"), inv.error || 0);
      set(cell(row, "throttled"), inv.throttled || 0);
      set(cell(row, "async"), fn.async_queue_depth || 0);
      if (previous && previous.doc.functions[name]) {
        const before = previous.doc.functions[name].invocations || {};
        const count = (inv.ok || 0) + (inv.error || 0) - (before.ok || 0) - (before.error || 0);
        const rate = count / Math.max(0.001, (now - previous.at) / 1000);
        set(cell(row, "rate"), rate.toFixed(1));
      }
    }
    for (const [name, src] of Object.entries(doc.sources)) {
      const row = document.querySelector('tr[data-src="' + CSS.escape(name) + '"]');
      if (row && src.lag) set(cell(row, "lag"), src.lag.total);
    }
    // DLQ depths in /status are cached by the daemon: only newer than this page count
    const rendered = parseFloat(document.getElementById("page").dataset.renderedAt || "0");
    if ((doc.queues_refreshed_at || 0) > rendered) {
      for (const [queue, depth] of Object.entries(doc.dlq || {})) {
        const section = document.querySelector('section[data-queue="' + CSS.escape(queue) + '"]');
        if (section) set(cell(section, "depth"), depth);
      }
    }
    set(document.getElementById("uptime"), "up " + Math.round(doc.uptime_s) + " s");
    set(document.getElementById("updated"), "updated " + new Date(now).toLocaleTimeString());
  }

  async function poll() {
    try {
      const response = await fetch("/status", { credentials: "same-origin", cache: "no-store" });
      if (response.ok) {
        const doc = await response.json();
        const now = Date.now();
        render(doc, now);
        previous = { doc: doc, at: now };
      }
    } catch (err) { /* the daemon restarted: try again next tick */ }
  }

  async function redrive(button) {
    const queue = button.dataset.queue;
    const body = button.dataset.id ? { ids: [button.dataset.id] } : {};
    const status = document.getElementById("redrive-result");
    button.disabled = true;
    try {
      const response = await fetch("/dlq/" + encodeURIComponent(queue) + "/redrive", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-Eventrun-Request": "1" },
        body: JSON.stringify(body),
      });
      const doc = await response.json();
      if (!response.ok) throw new Error(doc.message || response.statusText);
      status.textContent = "Redrove " + doc.redriven.length + " entr" +
        (doc.redriven.length === 1 ? "y" : "ies") + " from " + queue +
        (doc.skipped.length ? " (" + doc.skipped.length + " skipped)" : "") + ".";
      status.dataset.redriven = String(doc.redriven.length);
      setTimeout(function () { window.location.reload(); }, 800);
    } catch (err) {
      status.textContent = "Redrive failed: " + err.message;
      button.disabled = false;
    }
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button.redrive");
    if (button) redrive(button);
  });
  poll();
  setInterval(poll, 2000);
  setInterval(redrawCharts, 5000);
})();
