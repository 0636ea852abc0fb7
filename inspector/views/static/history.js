// A watched run's history: a status line, a site x step heatmap (canvas) and the chosen site's
// charts (uPlot, vendored and prepended to this module: `uPlot` is defined above).
// One front end for the live widget (anywidget traits `data` and `selected`, WatchWidget in
// history_widget.py) and the static page (`mount(el, data)`, history_html.py). `data` is built by
// payload() in inspector/views/history_html.py; every name in it is shown as text, never as HTML.
/* global uPlot */

const LOG_FIELDS = ["abs_max", "norm", "std"];
/** Step ticks: whole steps only. */
const STEP_INCRS = [1, 2, 5].flatMap((m) => [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((e) => m * 10 ** e))
  .sort((a, b) => a - b);

/** A linear y range: a zero fraction on [0, 1]; a constant series around its value (not uPlot's 0 to 100). */
function yRange(field) {
  return (_u, lo, hi) => {
    if (field === "zero_frac") return [0, 1];
    if (lo === null || hi === null) return [0, 1];
    if (lo === hi) { const d = lo === 0 ? 1 : Math.abs(lo) * 0.1; return [lo - d, hi + d]; }
    return uPlot.rangeNum(lo, hi, 0.1, true);
  };
}

/** Tick labels as drawn, kept on the chart's element too (`data-xticks`, `data-yticks`). */
function shown(box, key, labels) {
  box.dataset[key] = labels.filter((t) => t !== "").join(" ");
  return labels;
}

/** @param {string} tag @param {string} [cls] @param {string} [text] */
function make(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A base64 string of little-endian numbers as a typed array. */
function decode(b64, Type) {
  const bin = atob(b64 || "");
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Type(bytes.buffer);
}

/** A number as the text views write it (inspector.views.format.num: 4 significant digits). */
function num(v) {
  if (v === null || v === undefined) return "-";
  if (Number.isNaN(v)) return "nan";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  if (v === 0) return "0";
  const [m, e] = v.toExponential(3).split("e");
  const exp = Number(e);
  const strip = (/** @type {string} */ s) => (s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s);
  if (exp < -4 || exp >= 4) return `${strip(m)}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  return strip(v.toFixed(Math.max(0, 3 - exp)));
}

/** `--fi-<name>` as the page resolved it (canvas and uPlot take colours, not var()). */
function palette(root) {
  const cs = getComputedStyle(root);
  return (/** @type {string} */ name) => cs.getPropertyValue(`--fi-${name}`).trim() || cs.color;
}

/** A bin's label on an axis: its lower edge with the sign (`+2^-10` for `+[2^-10, 2^-8)`). */
function short(label) {
  const m = /^([+-])([[(])([^,]+),\s*([^)]+)\)$/.exec(label);
  if (!m) return label;
  return m[3] === "0" ? `${m[1]}<${m[4]}` : `${m[1]}${m[3]}`;
}

function stepLabel(a, b) {
  return a === b ? `step ${a}` : `steps ${a}-${b}`;
}

/** A model for the static page: `data` fixed, `selected` kept here. */
function staticModel(data) {
  const handlers = {};
  const state = { data, selected: data.selected };
  return {
    get: (k) => state[k],
    set: (k, v) => { state[k] = v; (handlers[`change:${k}`] || []).forEach((f) => f()); },
    save_changes: () => {},
    on: (ev, f) => { (handlers[ev] = handlers[ev] || []).push(f); },
    off: () => {},
  };
}

function render({ model, el }) {
  const root = make("div", "fi-history");
  el.appendChild(root);
  const title = make("div", "fi-title");
  const status = make("div", "fi-status");
  const heatBar = make("div", "fi-bar");
  const heatBox = make("div", "fi-heat");
  const heatRead = make("div", "fi-readout fi-heat-readout");
  const heatNote = make("div", "fi-note");
  const siteBar = make("div", "fi-bar");
  const picker = /** @type {HTMLSelectElement} */ (make("select", "fi-site-pick"));
  const reset = make("button", "fi-reset", "reset zoom");
  const note = make("div", "fi-note fi-chart-note");
  const readout = make("div", "fi-readout fi-chart-readout");
  const charts = make("div", "fi-charts");
  siteBar.append(make("span", "", "charts of"), picker, reset);
  root.append(title, status, heatBar, heatBox, heatRead, heatNote, siteBar, note, readout, charts);
  // pending: a site picked here that the kernel has not taken yet (it is busy while a cell runs,
  // and its redraws still name the old selection): shown as picked until the kernel agrees
  const st = { field: "", zoom: null, plots: [], log: {}, scrolled: "", hover: "", pending: -1 };
  Object.defineProperty(root, "fiPlots", { get: () => st.plots });  // the uPlot charts, for tests and tools

  const data = () => model.get("data") || {};
  const chosen = () => {
    const s = model.get("selected");
    if (st.pending >= 0 && s !== st.pending) return st.pending;
    st.pending = -1;
    return typeof s === "number" && s >= 0 ? s : data().selected;
  };
  const pick = (j) => {
    st.pending = j;
    model.set("selected", j);
    model.save_changes();
  };
  picker.addEventListener("change", () => pick(Number(picker.value)));
  reset.addEventListener("click", () => { st.zoom = null; zoomAll(null); });

  function drawHead(d) {
    title.textContent = d.title || "";
    status.textContent = d.status || "";
    status.classList.toggle("fi-bad", !!d.first);
    heatBar.replaceChildren(make("span", "", "heatmap of"));
    const fields = (d.heat && d.heat.fields) || [];
    if (!fields.includes(st.field)) st.field = fields[0] || "";
    for (const f of fields) {
      const b = make("button", "fi-field", d.labels[f]);
      b.setAttribute("aria-pressed", String(f === st.field));
      b.addEventListener("click", () => { st.field = f; drawHeat(data(), false); drawHead(data()); });
      heatBar.append(b);
    }
    if (picker.options.length !== d.sites.length) {
      picker.replaceChildren(...d.sites.map((s, j) => {
        const o = /** @type {HTMLOptionElement} */ (make("option", "", s));
        o.value = String(j);
        return o;
      }));
    }
  }

  function drawHeat(d, follow) {
    const h = d.heat;
    const before = heatBox.scrollLeft;  // a live run follows its latest steps unless scrolled away from them
    const atEnd = before + heatBox.clientWidth >= heatBox.scrollWidth - 4;
    heatBox.replaceChildren();
    heatRead.textContent = "";
    if (!h || !h.steps.length) {
      heatBox.append(make("div", "fi-note", "nothing recorded yet"));
      heatNote.textContent = "";
      return;
    }
    const col = palette(root);
    const nr = h.sites.length, nc = h.steps.length;
    const vals = decode(h.values[st.field], Float32Array), flags = decode(h.flags, Uint8Array);
    const rh = nr > 40 ? 12 : 14;
    const avail = Math.max(240, (root.clientWidth || 900) - 300);
    const cw = Math.max(3, Math.min(14, Math.floor(avail / nc)));
    const dpr = window.devicePixelRatio || 1;
    const canvas = (w, hgt, cls) => {
      const c = /** @type {HTMLCanvasElement} */ (make("canvas", cls));
      c.width = Math.ceil(w * dpr); c.height = Math.ceil(hgt * dpr);
      c.style.width = `${w}px`; c.style.height = `${hgt}px`;
      const ctx = /** @type {CanvasRenderingContext2D} */ (c.getContext("2d"));
      ctx.scale(dpr, dpr);
      return [c, ctx];
    };
    const grid = make("div", "fi-heat-grid");
    grid.style.gridTemplateColumns = `auto ${nc * cw}px`;
    const [axis, actx] = canvas(nc * cw, 16, "fi-heat-axis");
    actx.fillStyle = col("muted");
    actx.font = `10px ${getComputedStyle(root).fontFamily}`;
    actx.textBaseline = "middle";
    const every = Math.max(1, Math.ceil(70 / cw));
    for (let c = 0; c < nc; c += every) actx.fillText(String(h.steps[c]), c * cw, 8);
    const labels = make("div", "fi-heat-labels");
    const firstRow = h.first ? h.first[0] : -1;
    h.sites.forEach((j, r) => {
      const l = make("div", r === firstRow ? "fi-bad" : "", d.sites[j]);
      l.style.height = l.style.lineHeight = `${rh}px`;
      l.title = d.sites[j];
      l.addEventListener("click", () => pick(j));
      labels.append(l);
    });
    const [cells, ctx] = canvas(nc * cw, nr * rh, "fi-heat-cells");
    cells.setAttribute("role", "img");
    cells.setAttribute("aria-label", `${d.labels[st.field]} by site and step`);
    const accent = col("accent"), bad = col("bad"), line = col("line");
    for (let r = 0; r < nr; r++) {
      const row = vals.subarray(r * nc, (r + 1) * nc), fl = flags.subarray(r * nc, (r + 1) * nc);
      const fin = [];
      for (let c = 0; c < nc; c++) if (fl[c] === 0 && Number.isFinite(row[c])) fin.push(row[c]);
      fin.sort((a, b) => a - b);
      const rank = (v) => {  // the share of this site's values below v (ties: the middle)
        let lo = 0, hi = fin.length;
        while (lo < hi) { const m = (lo + hi) >> 1; if (fin[m] < v) lo = m + 1; else hi = m; }
        let up = lo;
        while (up < fin.length && fin[up] === v) up++;
        return fin.length > 1 ? (lo + up - 1) / 2 / (fin.length - 1) : 0.5;
      };
      for (let c = 0; c < nc; c++) {
        if (fl[c] === 2) continue;
        if (fl[c] === 1) { ctx.globalAlpha = 1; ctx.fillStyle = bad; }
        else if (!Number.isFinite(row[c])) { ctx.globalAlpha = 1; ctx.fillStyle = line; }
        else {
          const t = st.field === "zero_frac" ? Math.min(1, Math.max(0, row[c])) : rank(row[c]);
          ctx.globalAlpha = 0.08 + 0.92 * t; ctx.fillStyle = accent;
        }
        ctx.fillRect(c * cw, r * rh, cw - (cw > 4 ? 1 : 0), rh - 1);
      }
    }
    ctx.globalAlpha = 1;
    if (h.first) {  // outlined around the cell, which keeps its red
      ctx.strokeStyle = col("fg"); ctx.lineWidth = 1.5;
      ctx.strokeRect(h.first[1] * cw - 2, h.first[0] * rh - 2, cw + 3, rh + 3);
    }
    if (h.first) cells.dataset.first = `${h.first[1] * cw},${h.first[0] * rh},${cw},${rh}`;
    cells.addEventListener("mousemove", (ev) => {
      const r = Math.floor(ev.offsetY / rh), c = Math.floor(ev.offsetX / cw);
      if (r < 0 || r >= nr || c < 0 || c >= nc) return;
      const f = flags[r * nc + c], v = vals[r * nc + c];
      const merged = h.steps[c] !== h.last[c];
      const what = f === 2 ? "nothing recorded" : `${d.labels[st.field]} ${merged ? "(largest) " : ""}${num(v)}`
        + (f === 1 ? " · NaN or Inf" : "");
      heatRead.textContent = `${stepLabel(h.steps[c], h.last[c])} · ${d.sites[h.sites[r]]} · ${what}`;
    });
    cells.addEventListener("click", (ev) => {
      const r = Math.floor(ev.offsetY / rh);
      if (r >= 0 && r < nr) pick(h.sites[r]);
    });
    grid.append(make("div", "fi-heat-corner"), axis, labels, cells);
    heatBox.append(grid);
    const merged = h.steps.some((s, c) => s !== h.last[c]);
    heatNote.textContent = "each site's row shaded by rank among its own values (zero fraction on 0 to 1); "
      + "red: NaN or Inf; outlined: the first non-finite cell; hover for the numbers, click a row for its charts"
      + (merged ? "; a column merges neighbouring steps (their largest value)" : "")
      + (h.omitted ? `; ${nr} of ${nr + h.omitted} sites shown (non-finite first, then the first ones)` : "");
    // open on the first non-finite column, else (following a live run) on the latest steps
    const target = h.first ? h.first[1] : (d.live ? nc - 1 : 0);
    const key = `${st.field}:${h.first ? h.first.join(",") : "-"}`;
    if (follow !== false && (st.scrolled !== key || (d.live && !h.first && atEnd))) {
      st.scrolled = key;
      requestAnimationFrame(() => {
        const lw = labels.offsetWidth;
        heatBox.scrollLeft = Math.max(0, target * cw - (heatBox.clientWidth - lw) / 2);
      });
    } else {
      heatBox.scrollLeft = before;
    }
  }

  /** Where charts open: the payload's range (live: the latest steps and the first non-finite
   * one), else every step drawn (both runs' where two are overlaid). */
  function defaultRange(d) {
    if (d.range) return d.range;
    const x = st.plots[0].data[0];
    return [x[0], x[x.length - 1]];
  }

  /** A drag selected a range of steps on chart `p`: every chart of the site zooms to it. */
  function zoomToSelection(p) {
    if (p.select.width < 2) return;
    st.zoom = [p.posToVal(p.select.left, "x"), p.posToVal(p.select.left + p.select.width, "x")];
    p.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    zoomAll(st.zoom);
  }

  /** A chart's own step controls: double-click resets the zoom; shift+drag pans all of the site's
   * charts along the steps (the drag alone still selects a range to zoom into). */
  function onSteps(u) {
    u.over.addEventListener("dblclick", () => { st.zoom = null; setTimeout(() => zoomAll(null)); });
    u.root.addEventListener("mousedown", (ev) => {
      if (!ev.shiftKey || ev.button !== 0 || !u.over.contains(/** @type {Node} */ (ev.target))) return;
      ev.stopPropagation();
      ev.preventDefault();
      const x0 = ev.clientX, { min, max } = u.scales.x, w = u.over.clientWidth || 1;
      const move = (/** @type {MouseEvent} */ e) => {
        const d = ((x0 - e.clientX) / w) * (max - min);
        st.zoom = [min + d, max + d];
        zoomAll(st.zoom);
      };
      const up = () => { window.removeEventListener("mousemove", move); window.removeEventListener("mouseup", up); };
      window.addEventListener("mousemove", move);
      window.addEventListener("mouseup", up);
    }, true);
  }

  function zoomAll(range) {
    if (!st.plots.length) return;
    let [lo, hi] = range || defaultRange(data());
    if (lo === hi) { lo -= 1; hi += 1; }
    for (const u of st.plots) u.setScale("x", { min: lo, max: hi });
  }

  function drawCharts() {
    for (const u of st.plots) u.destroy();
    st.plots = [];
    charts.replaceChildren();
    readout.textContent = "";
    const d = data(), j = chosen();
    picker.value = String(j);
    const s = d.series && d.series[String(j)];
    if (!s) {
      note.textContent = d.live ? "drawing the charts of this site (after the running cell, while the kernel is busy)"
        : `this page holds the charts of ${d.charted} of ${d.sites.length} sites (non-finite first, then by `
          + "largest abs max); history.to_text() prints every number";
      return;
    }
    const other = d.other && d.other.series[String(j)];
    const bits = [];
    if (s.buckets) bits.push(`${s.buckets} buckets of neighbouring steps, each drawn as its min and max`);
    if (s.bad.length === 1) bits.push(`red line: the step with NaN or Inf (${s.bad[0][0]})`);
    else if (s.bad.length) bits.push(`red lines: the ${s.bad.length} steps with NaN or Inf`);
    if (d.other) bits.push(other ? `dashed: ${d.other.title}` : `not in ${d.other.title}`);
    if (!d.live && d.charted < d.sites.length) bits.push(`charts embedded for ${d.charted} of ${d.sites.length} sites`);
    note.textContent = bits.join("; ") + (bits.length ? "; " : "") + "drag to zoom on steps, shift+drag to pan, double-click to reset";
    const badAt = new Map(s.bad.map(([step, n, i]) => [step, [n, i]]));
    const col = palette(root);
    const font = `11px ${getComputedStyle(root).fontFamily}`;
    const width = Math.max(280, Math.min(520, Math.floor(((root.clientWidth || 900) - 48) / 2)));  // two a row
    const key = `fi-${Math.random().toString(36).slice(2)}`;
    for (const f of d.fields) {
      if (!(f in s.y)) continue;
      const y = Array.from(decode(s.y[f], Float64Array), (v) => (Number.isNaN(v) ? null : v));
      const pos = y.filter((v) => v !== null && v > 0);
      const spans = pos.length > 1 && Math.max(...pos) / Math.min(...pos) > 100;
      const canLog = f !== "mean" && pos.length > 0;
      const log = canLog && (st.log[f] !== undefined ? st.log[f] : LOG_FIELDS.includes(f) && spans);
      const keep = (v) => (v === null || (log && !(v > 0)) ? null : v);
      let table = [s.x, y.map(keep)];
      if (other && other.y[f]) {
        const oy = Array.from(decode(other.y[f], Float64Array), (v) => (Number.isNaN(v) ? null : keep(v)));
        table = uPlot.join([[s.x, table[1]], [other.x, oy]]);
      }
      const box = make("div", "fi-chart");
      box.dataset.field = f;
      box.dataset.scale = log ? "log" : "linear";
      box.setAttribute("role", "figure");
      box.setAttribute("aria-label", `${d.labels[f]} of ${d.sites[j]} by step${log ? " (log scale)" : ""}`);
      const head = make("div", "fi-chart-head");
      const value = make("span", "fi-value");
      head.append(make("span", "fi-chart-name", d.labels[f]), value);
      if (canLog) {
        const b = make("button", "fi-log", "log");
        b.setAttribute("aria-pressed", String(log));
        b.title = "logarithmic y axis";
        b.addEventListener("click", () => { st.log[f] = !log; drawCharts(); });
        head.append(b);
      }
      box.append(head);
      charts.append(box);
      const series = [{ label: "step" }, { label: d.labels[f], stroke: col("accent"), width: 1.5,
        points: { show: s.x.length <= 60, size: 4, fill: col("accent") } }];
      if (table.length > 2) series.push({ label: d.other.title, stroke: col("muted"), width: 1.2, dash: [5, 4] });
      const decades = (_u, ticks) => ticks.map((v) => (Math.abs(Math.log10(v) % 1) < 1e-9 ? v : null));
      const only = log ? { filter: decades } : {};  // a log axis: ticks and grid at powers of ten alone
      const ax = { stroke: col("fg"), font, grid: { stroke: col("line"), width: 1 },
        ticks: { stroke: col("line"), width: 1 } };
      const yax = { ...ax, grid: { ...ax.grid, ...only }, ticks: { ...ax.ticks, ...only }, ...only };
      const u = new uPlot({
        width, height: 170, legend: { show: false },
        scales: { x: { time: false }, y: log ? { distr: 3, log: 10 } : { range: yRange(f) } },
        axes: [{ ...ax, size: 34, incrs: STEP_INCRS, values: (_u, ticks) => shown(box, "xticks", ticks.map(String)) },
          { ...yax, size: 62, values: (_u, ticks) => shown(box, "yticks", ticks.map((v) => (v === null ? "" : num(v)))) }],
        series,
        cursor: { sync: { key }, drag: { x: true, y: false, setScale: false } },
        hooks: {
          draw: [(p) => {
            const c = p.ctx, { top, height } = p.bbox;
            c.save(); c.strokeStyle = col("bad"); c.lineWidth = 2 * (window.devicePixelRatio || 1);
            for (const [step] of s.bad) {
              if (step < p.scales.x.min || step > p.scales.x.max) continue;
              const x = Math.round(p.valToPos(step, "x", true));
              c.beginPath(); c.moveTo(x, top); c.lineTo(x, top + height); c.stroke();
            }
            c.restore();
          }],
          setCursor: [(p) => {
            const i = p.cursor.idx;
            if (i === null || i === undefined) { value.textContent = ""; return; }
            const step = p.data[0][i], vs = p.data.slice(1).map((v) => num(v[i] === null ? NaN : v[i]));
            value.textContent = vs.join(" / ");
            if (st.hover !== f) return;
            const b = badAt.get(step);
            readout.textContent = `step ${step} · ${d.sites[j]} · ${d.labels[f]} ${vs.join(" / ")}`
              + (b ? ` · ${b[0]} NaN, ${b[1]} Inf` : "");
          }],
          setSelect: [zoomToSelection],
        },
      }, table, box);
      u.over.addEventListener("mouseenter", () => { st.hover = f; });
      onSteps(u);
      st.plots.push(u);
    }
    const hist = d.hist && d.hist[String(j)];
    if (hist && hist.steps.length) drawHistogram(d, j, hist, { col, font, width, key });
    zoomAll(st.zoom);
  }

  /** The site's histograms over steps: a step x bin map (bins ascending upward), each step's column
   * shaded by the share of its values in each bin; on the charts' step axis (zoom, hover synced). */
  function drawHistogram(d, j, hist, { col, font, width, key }) {
    const nb = hist.labels.length, nc = hist.steps.length;
    const counts = decode(hist.counts, Float64Array);
    const top = new Float64Array(nc), total = new Float64Array(nc);
    for (let c = 0; c < nc; c++) {
      for (let b = 0; b < nb; b++) {
        const v = counts[c * nb + b];
        top[c] = Math.max(top[c], v); total[c] += v;
      }
    }
    const box = make("div", "fi-chart fi-hist-chart");
    box.dataset.field = "histogram";
    box.setAttribute("role", "figure");
    box.setAttribute("aria-label", `histogram of ${d.sites[j]}'s values by step`);
    const head = make("div", "fi-chart-head");
    const value = make("span", "fi-value");
    head.append(make("span", "fi-chart-name", "histogram"), value);
    box.append(head);
    charts.append(box);
    const every = Math.max(1, Math.ceil(nb / 8));
    const splits = [];
    for (let b = 0; b < nb; b++) if (b === hist.zero || (b - (hist.zero >= 0 ? hist.zero : 0)) % every === 0) splits.push(b);
    const ax = { stroke: col("fg"), font, grid: { stroke: col("line"), width: 1 }, ticks: { stroke: col("line"), width: 1 } };
    const at = (step) => {  // the column holding this step (columns run from their first step to the next's)
      let lo = 0, hi = nc - 1;
      while (lo < hi) { const m = (lo + hi + 1) >> 1; if (hist.steps[m] <= step) lo = m; else hi = m - 1; }
      return lo;
    };
    const xs = hist.steps.slice();
    const u = new uPlot({
      width, height: Math.max(150, Math.min(260, 16 * nb)), legend: { show: false },
      scales: { x: { time: false }, y: { range: [-0.5, nb - 0.5] } },
      axes: [{ ...ax, size: 34, incrs: STEP_INCRS, values: (_u, ticks) => shown(box, "xticks", ticks.map(String)) },
        { ...ax, size: 76, splits: () => splits,
          values: (_u, ticks) => shown(box, "yticks", ticks.map((b) => short(hist.labels[b] || ""))) }],
      series: [{ label: "step" }, { label: "bin", show: false }],
      cursor: { sync: { key }, drag: { x: true, y: false, setScale: false }, points: { show: false } },
      hooks: {
        draw: [(p) => {
          const c = p.ctx, acc = col("accent");
          c.save();
          c.fillStyle = acc;
          const rowH = Math.abs(p.valToPos(0, "y", true) - p.valToPos(1, "y", true));
          for (let k = 0; k < nc; k++) {
            if (!top[k]) continue;
            const end = k + 1 < nc ? hist.steps[k + 1] : hist.last[k] + 1;
            const x0 = p.valToPos(hist.steps[k], "x", true), x1 = p.valToPos(end, "x", true);
            if (x1 < p.bbox.left || x0 > p.bbox.left + p.bbox.width) continue;
            for (let b = 0; b < nb; b++) {
              const v = counts[k * nb + b];
              if (!v) continue;
              c.globalAlpha = 0.12 + 0.88 * (v / top[k]);
              const y = p.valToPos(b, "y", true);
              c.fillRect(x0, y - rowH / 2, Math.max(1, x1 - x0 - 0.5), Math.max(1, rowH - 0.5));
            }
          }
          c.restore();
        }],
        setCursor: [(p) => {
          const { left, top: y } = p.cursor;
          if (left === undefined || left < 0) { value.textContent = ""; return; }
          const k = at(p.posToVal(left, "x")), b = Math.round(p.posToVal(y, "y"));
          if (b < 0 || b >= nb) { value.textContent = ""; return; }
          const v = counts[k * nb + b];
          const text = `${stepLabel(hist.steps[k], hist.last[k])} · ${hist.labels[b]} · ${v.toLocaleString("en-US")}`
            + ` of ${total[k].toLocaleString("en-US")} values (${total[k] ? ((100 * v) / total[k]).toFixed(1) : 0}%)`;
          value.textContent = text;
          if (st.hover === "histogram") readout.textContent = `${d.sites[j]} · ${text}`;
        }],
        setSelect: [zoomToSelection],
      },
    }, [xs, xs.map(() => null)], box);
    u.over.addEventListener("mouseenter", () => { st.hover = "histogram"; });
    onSteps(u);
    box.append(make("div", "fi-note", "bins: exactly 0, and each sign's powers of four; each step's column shaded "
      + "by its share of the values (its largest bin darkest); NaN and Inf are not binned"));
    st.plots.push(u);
  }

  function draw() {
    const d = data();
    if (!d.sites) return;
    drawHead(d);
    drawHeat(d, true);
    drawCharts();
  }

  const onSelected = () => drawCharts();
  model.on("change:data", draw);
  model.on("change:selected", onSelected);
  let tries = 0;
  const first = () => {  // colours resolve once the element is in the page
    if (!root.isConnected && tries++ < 100) { requestAnimationFrame(first); return; }
    draw();
  };
  first();
  return () => {
    for (const u of st.plots) u.destroy();
    model.off("change:data", draw);
    model.off("change:selected", onSelected);
  };
}

/** The static page: draws `data` into `el` (no kernel: every chart is in `data`). */
export function mount(el, data) {
  return render({ model: staticModel(data), el });
}

export default { render };
