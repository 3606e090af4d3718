// scaledb dashboard: live refresh of fragments, charts through vega-embed (vendored), run selection.
// Loaded as a module after vega-bundle.js, which sets window.vegaEmbed.

const REFRESH_MS = 2000;

// Elements with data-refresh="URL" are re-fetched every REFRESH_MS and their content replaced
// (the runs table keeps the page's own query string: filters, sort, page).
function refreshFragments() {
  for (const el of document.querySelectorAll("[data-refresh]")) {
    if (el.contains(document.activeElement) && document.activeElement.tagName === "SELECT") continue;
    const url = el.dataset.refresh + (el.dataset.keepQuery ? window.location.search : "");
    fetch(url).then((r) => (r.ok ? r.text() : null)).then((html) => {
      if (html !== null && html !== el.dataset.last) {
        el.dataset.last = html;
        el.innerHTML = html;
        markSelected();
      }
    }).catch(() => {});
  }
}

let selectedRun = null;

function markSelected() {
  for (const tr of document.querySelectorAll("tr[data-run-id]")) {
    tr.classList.toggle("selected", tr.dataset.runId === selectedRun);
  }
}

function selectRun(datum) {
  const box = document.getElementById("selected-run");
  if (!box || !datum || !datum.run_id) return;
  selectedRun = datum.run_id;
  box.hidden = false;
  box.replaceChildren("selected run: ");
  const a = document.createElement("a");
  a.href = "/runs/" + encodeURIComponent(datum.run_id);
  a.textContent = datum.name || datum.run_id;
  box.append(a);
  markSelected();
}

async function embed(el, spec) {
  const target = el.querySelector(".chart");
  const result = await window.vegaEmbed(target, spec, {actions: {export: true, source: false, compiled: false, editor: false}});
  result.view.addEventListener("click", (_event, item) => selectRun(item && item.datum));
  return result;
}

async function drawFigure(el) {
  const response = await fetch(el.dataset.figure);
  const body = await response.json();
  if (body.error) {
    el.querySelector(".chart").innerHTML = "";
    const p = document.createElement("p");
    p.className = "note";
    p.textContent = body.error;
    el.querySelector(".chart").append(p);
    if (body.retry) setTimeout(() => drawFigure(el), 5000);
    return;
  }
  await embed(el, body.spec);
  el.dataset.drawn = "1";
}

// A run's curve: polled; redrawn when a checkpoint arrives or the status changes.
async function pollCurve(el) {
  try {
    const body = await (await fetch(el.dataset.curve)).json();
    const key = `${body.points}/${body.last_step}/${body.status}`;
    if (body.spec && key !== el.dataset.key) {
      await embed(el, body.spec);
      el.dataset.key = key;
      el.dataset.points = String(body.points);
      el.dataset.lastStep = String(body.last_step);
    }
  } catch (e) { /* the server restarting: try again next time */ }
  setTimeout(() => pollCurve(el), REFRESH_MS);
}

// Figures come from the database: redraw them when it changes (after an ingest).
let databaseVersion = null;

async function watchDatabase() {
  try {
    const body = await (await fetch("/api/version")).json();
    if (databaseVersion !== null && body.database !== databaseVersion) {
      document.querySelectorAll("[data-figure]").forEach((el) => drawFigure(el));
if (document.querySelector("[data-figure]")) watchDatabase();
    }
    databaseVersion = body.database;
  } catch (e) { /* the server restarting: try again next time */ }
  setTimeout(watchDatabase, 2 * REFRESH_MS);
}

function namedQueryForm() {
  const select = document.getElementById("query-name");
  if (!select) return;
  select.addEventListener("change", () => {
    for (const fs of document.querySelectorAll("fieldset.params")) {
      const on = fs.dataset.query === select.value;
      fs.hidden = !on;
      for (const input of fs.querySelectorAll("input")) input.disabled = !on;
    }
  });
}

document.querySelectorAll("[data-figure]").forEach((el) => drawFigure(el));
if (document.querySelector("[data-figure]")) watchDatabase();
document.querySelectorAll("[data-curve]").forEach((el) => pollCurve(el));
namedQueryForm();
setInterval(refreshFragments, REFRESH_MS);
