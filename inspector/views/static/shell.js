// The shell around the trees (tree.js): one anywidget model per displayed Inspection or Comparison
// draws its status line, first-non-finite jump buttons, notes, a tab bar with one lazy tree per tab
// (the activations-by-depth figure above the Intermediates tree), and the detail pane. The detail's
// HTML carries treescope's <script>: it is shown in a sandboxed iframe (scripts run there, nothing
// reaches this page), styled with this widget's palette values and sized to its content.
// widget_shell.py puts PALETTE_NAMES and DETAIL_CSS ahead of tree.js and this file.

const FRAME_MAX = 4000; // px: the tallest the detail pane grows before it scrolls

/** Relative luminance of a computed colour (its three channels, 0-255), or null. @param {string} color */
function luminance(color) {
  const m = color.match(/[\d.]+/g);
  if (!m || m.length < 3 || (m.length > 3 && Number(m[3]) === 0)) return null;
  const [r, g, b] = m.slice(0, 3).map(Number).map((v) => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

/** @param {{model: any, el: HTMLElement}} context @returns {() => void} */
function render({ model, el }) {
  const view = newViewId();
  const root = element("div", "fi-widget");
  if (model.get("kind") === "comparison") root.classList.add("fi-comparison");
  const status = element("div", "fi-status");
  const jumps = element("div", "fi-jumps");
  const jump = /** @type {HTMLButtonElement} */ (element("button", "fi-jump"));
  jump.dataset.jump = "forward";
  const gradJump = /** @type {HTMLButtonElement} */ (element("button", "fi-jump fi-jump-grad"));
  gradJump.dataset.jump = "grad";
  for (const b of [jump, gradJump]) {
    b.type = "button";
    b.addEventListener("click", () => model.send({ kind: "jump", which: b.dataset.jump }));
  }
  jumps.append(jump, gradJump);
  // the first NaN/Inf's operation: its line, the button that finds it (a re-run in the kernel), what was found
  const origin = element("div", "fi-origin");
  const originLine = element("span", "fi-origin-line");
  const originFind = /** @type {HTMLButtonElement} */ (element("button", "fi-jump fi-origin-find"));
  originFind.type = "button";
  originFind.addEventListener("click", () => {
    originFind.disabled = true;
    originFind.textContent = "running…";
    model.send({ kind: "origin" });
  });
  const originText = element("pre", "fi-origin-text");
  origin.append(originLine, originFind, originText);
  // the Costs tab's order: the module tree, or each module's children by FLOPs
  const costsBar = element("div", "fi-costs-bar");
  const costsOrder = /** @type {HTMLButtonElement} */ (element("button", "fi-jump fi-costs-order"));
  costsOrder.type = "button";
  costsOrder.addEventListener("click", () => {
    model.set("costs_order", model.get("costs_order") === "flops" ? "tree" : "flops");
    model.save_changes();
  });
  costsBar.appendChild(costsOrder);
  const notes = element("div", "fi-notes");
  const tabbar = element("div", "fi-tabbar");
  tabbar.setAttribute("role", "tablist");
  const panels = element("div", "fi-panels");
  const depth = element("div", "fi-depth-chart");
  const pane = element("div", "fi-detail-pane");
  const attention = attentionTab(model, view); // attention.js: shown only while attention_label is set
  root.append(status, jumps, origin, notes, tabbar, panels, pane);
  el.appendChild(root);

  /** @type {Map<string, {tree: ReturnType<typeof createTree>, tab: HTMLButtonElement, panel: HTMLElement}>} */
  const trees = new Map();
  /** @type {HTMLIFrameElement | null} */
  let frame = null;
  let frameToken = "";
  let frames = 0;

  function showStatus() {
    status.textContent = model.get("status_text"); // text only: it names user data
  }

  function showJumps() {
    for (const [b, trait] of /** @type {[HTMLButtonElement, string][]} */ ([[jump, "jump_label"], [gradJump, "grad_jump_label"]])) {
      const label = model.get(trait) || "";
      b.textContent = label;
      b.hidden = !label;
    }
    jumps.hidden = jump.hidden && gradJump.hidden;
  }

  function showOrigin() {
    const state = model.get("origin_state") || "";
    originLine.textContent = model.get("origin_line") || ""; // text only: it names user code
    originText.textContent = model.get("origin_text") || "";
    originText.hidden = !originText.textContent;
    originFind.hidden = state !== "offer" && state !== "running";
    originFind.disabled = state === "running";
    originFind.textContent = state === "running" ? "running…" : "Find the operation";
    origin.hidden = !originLine.textContent;
  }

  function showCosts() {
    const state = model.get("costs_state") || "";
    costsOrder.textContent = model.get("costs_order") === "flops" ? "show in tree order" : "sort by FLOPs";
    costsBar.hidden = state !== "done";
    for (const t of trees.values()) if (t.panel.dataset.panel === "costs") t.panel.classList.toggle("fi-busy", state === "computing");
  }

  function showNotes() {
    notes.replaceChildren(...(model.get("notes") || []).map((/** @type {string} */ n) => {
      const d = element("div", "fi-note");
      d.textContent = n;
      return d;
    }));
  }

  function showDepth() {
    depth.innerHTML = model.get("depth_html") || ""; // built by views/depth.py, every name escaped there
    depth.hidden = !depth.innerHTML;
  }

  function buildTabs() {
    const names = /** @type {string[]} */ (model.get("tree_names") || []);
    for (const [name, t] of trees) {
      if (!names.includes(name)) {
        t.tree.dispose();
        t.tab.remove();
        t.panel.remove();
        trees.delete(name);
      }
    }
    for (const name of names) {
      let t = trees.get(name);
      if (!t) {
        const tree = createTree(model, name, view);
        const tab = /** @type {HTMLButtonElement} */ (element("button", "fi-tab"));
        tab.type = "button";
        tab.dataset.tab = name;
        tab.setAttribute("role", "tab");
        tab.textContent = name.charAt(0).toUpperCase() + name.slice(1);
        tab.addEventListener("click", () => {
          if (model.get("tab") === name) return;
          model.set("tab", name);
          model.save_changes();
        });
        const panel = element("div", "fi-panel");
        panel.dataset.panel = name;
        panel.setAttribute("role", "tabpanel");
        if (name === "intermediates") panel.appendChild(depth);
        if (name === "costs") panel.appendChild(costsBar);
        panel.appendChild(tree.el);
        t = { tree, tab, panel };
        trees.set(name, t);
      }
      tabbar.appendChild(t.tab); // in the order of `names`
      panels.appendChild(t.panel);
    }
    const withAttention = attention.label();
    if (withAttention) {
      tabbar.appendChild(attention.tab);
      panels.appendChild(attention.panel);
    } else {
      attention.tab.remove();
      attention.panel.remove();
    }
    tabbar.hidden = names.length + (withAttention ? 1 : 0) < 2;
    showCosts();
    showTab();
  }

  function showTab() {
    const names = /** @type {string[]} */ ([...(model.get("tree_names") || []),
      ...(model.get("attention_label") ? ["attention"] : [])]);
    const open = names.includes(model.get("tab")) ? model.get("tab") : names[0];
    attention.tab.classList.toggle("fi-tab-on", open === "attention");
    attention.tab.setAttribute("aria-selected", String(open === "attention"));
    attention.panel.hidden = open !== "attention";
    if (open === "attention") attention.onShown();
    for (const [name, t] of trees) {
      const on = name === open;
      t.tab.classList.toggle("fi-tab-on", on);
      t.tab.setAttribute("aria-selected", String(on));
      t.panel.hidden = !on;
      if (on) t.tree.onShown();
    }
    showPane();
  }

  /** The detail belongs to the selected leaf's tab: it is shown there only. */
  function showPane() {
    const sel = model.get("selected");
    const here = trees.size < 2 || !sel || sel.tree === model.get("tab");
    pane.hidden = !frame || !here;
  }

  /** The palette's values where this widget is drawn, for the iframe (which inherits no style). */
  function paletteCss() {
    const cs = getComputedStyle(root);
    const vars = PALETTE_NAMES.map((/** @type {string} */ n) =>
      `--fi-${n}:${cs.getPropertyValue("--fi-" + n).trim().replace(/[<>{};]/g, "")}`).join(";");
    const lum = luminance(getComputedStyle(pane).backgroundColor);
    return `:root{${vars};color-scheme:${lum !== null && lum < 0.2 ? "dark" : "light"}}`;
  }

  function showDetail() {
    const html = model.get("detail_html") || "";
    pane.replaceChildren();
    frame = null;
    if (html) {
      frames += 1;
      frameToken = `${view}-${frames}`;
      const f = /** @type {HTMLIFrameElement} */ (element("iframe", "fi-detail-frame"));
      f.setAttribute("sandbox", "allow-scripts"); // no same origin: the detail's scripts cannot reach the page
      f.title = "detail";
      const size = `<script>(() => { const token = ${JSON.stringify(frameToken)};
        const post = () => parent.postMessage({ fiDetail: token,
          height: Math.ceil(document.documentElement.getBoundingClientRect().height) }, "*");
        new ResizeObserver(post).observe(document.documentElement); addEventListener("load", post); post(); })();</script>`;
      f.srcdoc = `<!DOCTYPE html><html><head><meta charset="utf-8"><style>${paletteCss()}\n${DETAIL_CSS}</style></head>` +
        `<body>${html}${size}</body></html>`;
      pane.appendChild(f);
      frame = f;
    }
    showPane();
  }

  /** @param {MessageEvent} e */
  function onFrameMessage(e) {
    if (!frame || e.source !== frame.contentWindow || !e.data || e.data.fiDetail !== frameToken) return;
    const h = Number(e.data.height);
    if (Number.isFinite(h)) frame.style.height = `${Math.min(Math.max(h, 16), FRAME_MAX) + 2}px`;
  }

  /** @param {any} msg @param {any[]} buffers */
  function onMessage(msg, buffers) {
    if (msg?.kind === "attention") return attention.onMessage(msg, buffers);
    trees.get(msg?.tree)?.tree.onMessage(msg);
  }

  function onTrees() {
    for (const t of trees.values()) t.tree.refresh();
  }

  function onSelected() {
    for (const t of trees.values()) t.tree.onSelected();
    showPane();
  }

  // The theme changed (JupyterLab's, or the system's): the detail's copied colours follow.
  const themeWatch = new MutationObserver(() => frame && showDetail());
  themeWatch.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "class"] });
  const scheme = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  const onScheme = () => frame && showDetail();
  scheme?.addEventListener?.("change", onScheme);

  const handlers = /** @type {[string, Function][]} */ ([
    ["msg:custom", onMessage], ["change:status_text", showStatus], ["change:jump_label", showJumps],
    ["change:grad_jump_label", showJumps], ["change:notes", showNotes], ["change:depth_html", showDepth],
    ["change:tree_names", buildTabs], ["change:trees_state", onTrees], ["change:tab", showTab],
    ["change:selected", onSelected], ["change:detail_html", showDetail],
    ["change:attention_label", () => { attention.reset(); buildTabs(); }],
    ["change:origin_line", showOrigin], ["change:origin_text", showOrigin], ["change:origin_state", showOrigin],
    ["change:costs_state", showCosts], ["change:costs_order", showCosts],
  ]);
  for (const [event, handler] of handlers) model.on(event, handler);
  window.addEventListener("message", onFrameMessage);
  showStatus();
  showJumps();
  showOrigin();
  showNotes();
  showDepth();
  buildTabs();
  showDetail();

  return () => {
    for (const [event, handler] of handlers) model.off(event, handler);
    window.removeEventListener("message", onFrameMessage);
    themeWatch.disconnect();
    scheme?.removeEventListener?.("change", onScheme);
    for (const t of trees.values()) t.tree.dispose();
    attention.reset();
  };
}

export default { render };
