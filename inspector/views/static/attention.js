// Attention maps (views/attention_html.py builds the data): a grid of heads per layer, each a
// thumbnail (8-bit, downsampled, scaled to the head's largest weight) with its summaries; a click
// on a head asks for its full map (requestMap) and shows it with token labels on both axes and a
// readout of the weight under the pointer. Used by the notebook widget's Attention tab (maps come
// from the kernel) and by the static page (maps embedded). User text only ever goes in as text.

const ATTN_STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]]; // viridis

/** A colour of the ramp for t in [0, 1] (NaN: red). @param {number} t @returns {number[]} */
function attnColour(t) {
  if (!Number.isFinite(t)) return [220, 40, 40];
  const x = Math.min(Math.max(t, 0), 1) * (ATTN_STOPS.length - 1);
  const i = Math.min(Math.floor(x), ATTN_STOPS.length - 2);
  const f = x - i;
  return ATTN_STOPS[i].map((c, j) => Math.round(c + f * (ATTN_STOPS[i + 1][j] - c)));
}

/** @param {string} tag @param {string} cls @param {string} [text] */
function attnElement(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Draws `values` (rows x cols, row-major) into a new canvas, scaled to `top` (NaN where flagged by `nan`).
 * @param {ArrayLike<number>} values @param {number} rows @param {number} cols @param {number} top
 * @param {number} [nan] a value that stands for NaN (the thumbnails' 8-bit code), or undefined */
function attnCanvas(values, rows, cols, top, nan) {
  const c = /** @type {HTMLCanvasElement} */ (document.createElement("canvas"));
  c.width = cols;
  c.height = rows;
  const ctx = c.getContext("2d");
  if (!ctx) return c;
  const img = ctx.createImageData(cols, rows);
  for (let i = 0; i < rows * cols; i++) {
    const v = values[i];
    const [r, g, b] = attnColour(nan !== undefined && v === nan ? NaN : top > 0 ? v / top : v === 0 ? 0 : NaN);
    img.data.set([r, g, b, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  return c;
}

/**
 * @param {HTMLElement} host where the view goes
 * @param {any} grid the layers, their heads' summaries, tokens (attention_html.grid_payload)
 * @param {Uint8Array} thumbs every thumbnail, concatenated in layer then head order
 * @param {(layer: number, head: number) => void} requestMap asks for a head's full map (answered by showMap)
 */
function createAttention(host, grid, thumbs, requestMap) {
  const root = attnElement("div", "fi-attn");
  root.append(attnElement("div", "fi-attn-head-line", grid.header), attnElement("div", "fi-attn-legend", grid.legend));
  if (grid.tokens_line) root.append(attnElement("div", "fi-attn-tokens", grid.tokens_line));
  const layers = attnElement("div", "fi-attn-layers");
  const detail = attnElement("div", "fi-attn-map");
  detail.hidden = true;
  root.append(layers, detail);
  host.appendChild(root);
  /** @type {HTMLButtonElement | null} */
  let chosen = null;

  grid.layers.forEach((/** @type {any} */ layer, /** @type {number} */ li) => {
    const box = attnElement("div", "fi-attn-layer");
    box.dataset.layer = String(li);
    box.append(attnElement("div", "fi-attn-layer-title", layer.title));
    const heads = attnElement("div", "fi-attn-grid");
    layer.heads.forEach((/** @type {any} */ s, /** @type {number} */ h) => {
      const b = /** @type {HTMLButtonElement} */ (attnElement("button", "fi-attn-thumb"));
      b.type = "button";
      b.dataset.layer = String(li);
      b.dataset.head = String(h);
      if (s.flag) b.classList.add("fi-attn-bad");
      const n = layer.th * layer.tw;
      const cells = thumbs.subarray(layer.offset + h * n, layer.offset + (h + 1) * n);
      const canvas = attnCanvas(cells, layer.th, layer.tw, 254, 255);
      canvas.className = "fi-attn-thumb-img";
      const summary = `head ${h}: entropy ${s.entropy} nats, max ${s.max}, first ${s.first}, rows ${s.rows}`;
      b.title = summary;
      b.setAttribute("aria-label", `${layer.name} ${summary}`);
      b.append(canvas, attnElement("span", "fi-attn-cap", `h${h} H ${s.entropy}${s.flag ? " !!" : ""}`),
        attnElement("span", "fi-attn-cap", `max ${s.max} f ${s.first}`));
      b.addEventListener("click", () => {
        if (chosen) chosen.classList.remove("fi-attn-on");
        chosen = b;
        b.classList.add("fi-attn-on");
        detail.hidden = false;
        detail.replaceChildren(attnElement("div", "fi-attn-loading", `loading ${layer.name} head ${h}...`));
        requestMap(li, h);
      });
      heads.append(b);
    });
    box.append(heads);
    layers.append(box);
  });

  /** A position's label: its token, else its index. @param {number} i */
  const label = (i) => (grid.tokens && i < grid.tokens.length ? grid.tokens[i] : String(i));

  /** Shows head `h` of layer `li`: `values` is its map, queries x keys, row-major.
   * @param {number} li @param {number} h @param {ArrayLike<number>} values */
  function showMap(li, h, values) {
    const layer = grid.layers[li];
    const [q, k] = [layer.q, layer.k];
    let top = 0;
    for (let i = 0; i < q * k; i++) if (Number.isFinite(values[i]) && values[i] > top) top = values[i];
    const cell = Math.max(2, Math.min(24, Math.floor(480 / Math.max(q, k))));
    const canvas = attnCanvas(values, q, k, top);
    canvas.className = "fi-attn-map-img";
    canvas.style.width = `${k * cell}px`;
    canvas.style.height = `${q * cell}px`;
    const s = layer.heads[h];
    const title = attnElement("div", "fi-attn-map-title",
      `${layer.name} head ${h}: entropy ${s.entropy} nats, max ${s.max}, first ${s.first}, rows ${s.rows} ` +
      `(colour: 0 to ${top.toPrecision(3)})`);
    const readout = attnElement("div", "fi-attn-readout", "hover the map: query token, key token, weight");
    const every = Math.max(1, Math.ceil(12 / cell)); // a label every `every` positions, at least 12 px apart
    const keys = attnElement("div", "fi-attn-keys");
    keys.style.width = `${k * cell}px`;
    keys.style.gridTemplateColumns = `repeat(${k}, ${cell}px)`;
    for (let j = 0; j < k; j++) {
      const t = attnElement("span", "fi-attn-key", j % every ? "" : label(j));
      t.title = `key ${j}: ${label(j)}`;
      keys.append(t);
    }
    const queries = attnElement("div", "fi-attn-queries");
    queries.style.gridTemplateRows = `repeat(${q}, ${cell}px)`;
    for (let i = 0; i < q; i++) {
      const t = attnElement("span", "fi-attn-query", i % every ? "" : label(i));
      t.title = `query ${i}: ${label(i)}`;
      queries.append(t);
    }
    canvas.addEventListener("mousemove", (e) => {
      const r = canvas.getBoundingClientRect();
      const j = Math.floor(((e.clientX - r.left) / r.width) * k);
      const i = Math.floor(((e.clientY - r.top) / r.height) * q);
      if (i < 0 || j < 0 || i >= q || j >= k) return;
      const v = values[i * k + j];
      readout.textContent = `query ${i} ${JSON.stringify(label(i))} -> key ${j} ${JSON.stringify(label(j))}: ` +
        `${Number.isFinite(v) ? v.toPrecision(4) : String(v)}`;
    });
    const corner = attnElement("span", "fi-attn-corner", "query \\ key");
    const body = attnElement("div", "fi-attn-body");
    body.append(corner, keys, queries, canvas);
    detail.replaceChildren(title, body, readout);
    detail.hidden = false;
  }

  return { el: root, showMap, dispose: () => root.remove() };
}

/** Bytes of a message buffer (a DataView or an ArrayBuffer), copied (aligned for typed arrays).
 * @param {any} b @returns {ArrayBuffer} */
function attnBytes(b) {
  if (b instanceof ArrayBuffer) return b.slice(0);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
}

/**
 * The widget's Attention tab (views/attention_widget.py answers it): its button, its panel, and the
 * messages. The grid is asked for the first time the tab is shown; a head's map when it is clicked.
 * @param {any} model @param {string} view
 */
function attentionTab(model, view) {
  const tab = /** @type {HTMLButtonElement} */ (attnElement("button", "fi-tab"));
  tab.type = "button";
  tab.dataset.tab = "attention";
  tab.setAttribute("role", "tab");
  const panel = attnElement("div", "fi-panel fi-attn-panel");
  panel.dataset.panel = "attention";
  panel.setAttribute("role", "tabpanel");
  /** @type {ReturnType<typeof createAttention> | null} */
  let grid = null;
  let asked = false;
  tab.addEventListener("click", () => {
    if (model.get("tab") === "attention") return;
    model.set("tab", "attention");
    model.save_changes();
  });
  return {
    tab, panel,
    label() {
      tab.textContent = model.get("attention_label") || "";
      return Boolean(model.get("attention_label"));
    },
    onShown() {
      if (asked) return;
      asked = true;
      panel.replaceChildren(attnElement("div", "fi-attn-loading", "loading attention maps..."));
      model.send({ kind: "attention", what: "grid", view });
    },
    reset() {
      asked = false;
      grid?.dispose();
      grid = null;
      panel.replaceChildren();
    },
    /** @param {any} msg @param {any[]} buffers */
    onMessage(msg, buffers) {
      if (msg.view !== view) return;
      if (msg.what === "error") {
        panel.replaceChildren(attnElement("div", "fi-attn-error", msg.error));
      } else if (msg.what === "grid") {
        panel.replaceChildren();
        grid = createAttention(panel, msg.grid, new Uint8Array(attnBytes(buffers[0])),
          (li, h) => model.send({ kind: "attention", what: "map", view, layer: li, head: h }));
      } else if (msg.what === "map" && grid) {
        grid.showMap(msg.layer, msg.head, new Float32Array(attnBytes(buffers[0])));
      }
    },
  };
}
