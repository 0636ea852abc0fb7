// A lazily expanded tree: rows arrive from the kernel only when a node is opened.
// One widget model serves every tree of a displayed object: each tree has a name, its state is
// `trees_state[name]` ({heading, initial, placeholder}), the selection is the model's
// (`selected`: {tree, id} or null), and the rows a view asks for come back addressed to that tree
// and that view alone (see Tree in widget_shell.py). shell.js builds the trees.

/**
 * One row, as built by `WireRow` in inspector/views/row_source.py.
 * @typedef {Object} WireRow
 * @property {string} id unique within the tree ("" addresses the root, which has no row)
 * @property {string} name
 * @property {string} summary
 * @property {string} [kind] the class behind the row, shown as "(kind)" after the name
 * @property {number} n how many children (0: nothing to open)
 * @property {boolean} [leaf] clicking the name selects it (the kernel shows its detail)
 * @property {boolean} [bad] holds a NaN or Inf
 * @property {string} [cls] a class suffix: a diff status ("changed", "added", ...) or "first"
 * @property {string} [fact] the row's key fact, shown first and never cut off (also read from `key`;
 *   without either, a summary's "!! ..." part, at its start up to ";" or its tail, is the fact)
 * @property {string} [key]
 * @property {number} [bar] a position in [0, 1] on a common (log) axis: a bar in its own column
 * @property {string} [bar_title] the bar's hover text
 * @property {string} [spark] histogram sparkline
 * @property {WireRow[]} [children] already filled in
 * @property {boolean} [more] "... N more": asks for the next page of `parent` from `offset`
 * @property {string} [parent]
 * @property {number} [offset]
 */

/**
 * Replies from the kernel; `tree` names the tree, `view` the view that asked.
 * `toward` (a reply to a request with `until`): the child of `id` that is or holds that row.
 * @typedef {{kind: "children", tree: string, view: string, id: string, offset: number, rows: WireRow[], toward?: string}} ChildrenReply
 * @typedef {{kind: "search", tree: string, view: string, seq: number, rows: WireRow[], total: number}} SearchReply
 * @typedef {{heading: string, initial: WireRow[], placeholder: string}} TreeState
 * @typedef {{line: HTMLElement, kids: HTMLElement, tw: HTMLElement, row: WireRow, loaded: boolean}} Entry
 */

let fiViews = 0;

/** An id for one view, unique across pages (crypto.randomUUID needs a secure context). */
function newViewId() {
  fiViews += 1;
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}-${fiViews}`;
}

/** @param {string} tag @param {string} className */
function element(tag, className) {
  const e = document.createElement(tag);
  e.className = className;
  return e;
}

/** The key fact of a row and what is left of its summary. @param {WireRow} r @returns {[string, string]} */
function factOf(r) {
  const given = r.fact ?? r.key;
  if (given) return [String(given), r.summary];
  const s = r.summary || "";
  if (s.startsWith("!! ")) { // "!! 4 nan; float32[2,2] ...": the fact, then the rest
    const end = s.indexOf(";");
    return end < 0 ? [s, ""] : [s.slice(0, end), s.slice(end + 1).trim()];
  }
  const at = s.indexOf(" !! "); // "float32[2,2] mean nan ... !! 4 nan": the tail is the fact
  if (at >= 0) return [s.slice(at + 1), s.slice(0, at)];
  return ["", s];
}

/**
 * One tree of the model: its element and the handlers shell.js calls.
 * @param {any} model the widget's model
 * @param {string} name the tree's name
 * @param {string} view this view's id
 */
function createTree(model, name, view) {
  const root = element("div", "fi-tree");
  root.dataset.tree = name;
  const heading = element("div", "fi-heading");
  const search = /** @type {HTMLInputElement} */ (element("input", "fi-search"));
  search.type = "search";
  const list = element("div", "fi-list");
  root.append(heading, search, list);

  /** @type {Map<string, Entry>} */
  const rowsById = new Map();
  /** @type {WeakMap<Element, number>} rows (not counting "more") filled into a container */
  const loaded = new WeakMap();
  let searching = false;
  let searchSeq = 0;
  /** @type {string | null} */
  let pendingReveal = null;
  /** @type {string | null} set by a click here, so that this view does not scroll to its own click */
  let clicked = null;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  let shownInitial = "";

  /** @returns {TreeState} */
  function state() {
    return (model.get("trees_state") || {})[name] || { heading: "", initial: [], placeholder: "" };
  }

  /** @returns {string | null} the id selected in this tree */
  function selectedId() {
    const sel = model.get("selected");
    return sel && sel.tree === name ? sel.id : null;
  }

  /** @param {Object} content */
  function request(content) {
    model.send({ ...content, tree: name, view });
  }

  /** @param {WireRow} r */
  function rowEl(r) {
    const wrap = document.createElement("div");
    const line = element("div", "fi-row" + (r.leaf ? " fi-leaf" : "") + (r.bad ? " fi-bad" : "") + (r.cls ? " fi-" + r.cls : ""));
    line.dataset.id = r.id;
    if (r.more) {
      line.classList.add("fi-more");
      line.textContent = r.name;
      line.addEventListener("click", () => {
        request({ kind: "children", id: r.parent, offset: r.offset });
        wrap.remove();
      });
      wrap.appendChild(line);
      return wrap;
    }
    const tw = element("span", "fi-tw");
    tw.textContent = r.n ? "▸" : "";
    const nameEl = element("span", "fi-name");
    nameEl.textContent = r.name; // text only: names are user-controlled
    line.append(tw, nameEl);
    if (r.kind) {
      const kind = element("span", "fi-kind");
      kind.textContent = `(${r.kind})`;
      line.appendChild(kind);
    }
    const [fact, rest] = factOf(r);
    if (fact) {
      const f = element("span", "fi-fact");
      f.textContent = fact;
      line.appendChild(f);
    }
    const sum = element("span", "fi-sum");
    sum.textContent = rest;
    sum.title = rest;
    line.appendChild(sum);
    if (r.spark) {
      const sp = element("span", "fi-spark");
      sp.textContent = r.spark;
      line.appendChild(sp);
    }
    if (typeof r.bar === "number" && Number.isFinite(r.bar)) {
      const bar = element("span", "fi-bar");
      const fill = element("span", "fi-bar-fill");
      fill.style.width = `${(Math.min(1, Math.max(0, r.bar)) * 100).toFixed(1)}%`;
      bar.appendChild(fill);
      if (r.bar_title) bar.title = r.bar_title;
      line.appendChild(bar);
    }
    if (r.id === selectedId()) line.classList.add("fi-sel");
    const kids = element("div", "fi-kids");
    kids.hidden = true;
    wrap.append(line, kids);
    /** @type {Entry} */
    const entry = { line, kids, tw, loaded: false, row: r };
    rowsById.set(r.id, entry);
    if (r.n) {
      const toggle = () => setOpen(entry, kids.hidden);
      tw.addEventListener("click", toggle);
      if (!r.leaf) nameEl.addEventListener("click", toggle);
    }
    if (r.leaf) nameEl.addEventListener("click", () => choose(r.id));
    if (r.children) {
      fill(kids, r.children);
      entry.loaded = true;
      setOpen(entry, true);
    }
    return wrap;
  }

  /** @param {Entry} entry @param {boolean} open */
  function setOpen(entry, open) {
    entry.kids.hidden = !open;
    entry.tw.textContent = open ? "▾" : "▸";
    if (open && !entry.loaded) {
      entry.loaded = true;
      request({ kind: "children", id: entry.row.id, offset: 0 });
    }
  }

  /** @param {HTMLElement} container @param {WireRow[]} rows */
  function fill(container, rows) {
    const frag = document.createDocumentFragment();
    for (const r of rows) frag.appendChild(rowEl(r));
    container.appendChild(frag);
    loaded.set(container, (loaded.get(container) ?? 0) + rows.filter((r) => !r.more).length);
  }

  function showTree() {
    searching = false;
    list.replaceChildren();
    rowsById.clear();
    loaded.set(list, 0);
    fill(list, state().initial || []);
  }

  /** Redraws what changed in this tree's state (a new inspection). */
  function refresh() {
    const s = state();
    heading.textContent = s.heading || ""; // text only: it names user data
    heading.hidden = !heading.textContent;
    search.placeholder = s.placeholder || "";
    const rows = JSON.stringify(s.initial || []);
    if (rows !== shownInitial) {
      shownInitial = rows;
      search.value = "";
      showTree();
    }
  }

  /** A click on a leaf: every view (and the kernel) sees `selected` change. @param {string} id */
  function choose(id) {
    if (selectedId() === id) return;
    clicked = id;
    model.set("selected", { tree: name, id });
    model.save_changes();
  }

  /** Scrolls the list (not the page) so that `line` is in view. @param {HTMLElement} line */
  function scrollListTo(line) {
    const box = list.getBoundingClientRect();
    const at = line.getBoundingClientRect();
    if (at.top < box.top || at.bottom > box.bottom) list.scrollTop += at.top - box.top - (box.height - at.height) / 2;
  }

  /** Opens the rows that hold `entry`, where closed. @param {Entry} entry */
  function openAbove(entry) {
    for (let kids = entry.line.parentElement?.parentElement; kids && kids !== list; kids = kids.parentElement?.parentElement) {
      const owner = rowsById.get(/** @type {HTMLElement | null} */ (kids.previousElementSibling)?.dataset.id ?? "");
      if (owner && owner.kids === kids && kids.hidden) setOpen(owner, true);
    }
  }

  /** Opens row `id` on the way to the row being revealed, and asks for its pages up to it. @param {string} id */
  function descend(id) {
    const entry = rowsById.get(id);
    if (!entry || pendingReveal === null) return;
    entry.kids.hidden = false;
    entry.tw.textContent = "▾";
    entry.loaded = true;
    request({ kind: "children", id, offset: loaded.get(entry.kids) ?? 0, until: pendingReveal });
  }

  /** Shows row `id`, asking the kernel for the pages up to it (and the rows that hold it) if needed.
   * @param {string} id */
  function reveal(id) {
    const entry = rowsById.get(id);
    if (entry) {
      pendingReveal = null;
      openAbove(entry);
      if (root.offsetParent !== null) scrollListTo(entry.line); // a hidden tab has no layout to scroll
      entry.line.classList.remove("fi-flash");
      void entry.line.offsetWidth; // restarts the animation
      entry.line.classList.add("fi-flash");
      return;
    }
    if (searching) {
      search.value = "";
      showTree();
      if (rowsById.has(id)) return reveal(id);
    }
    pendingReveal = id;
    request({ kind: "children", id: "", offset: loaded.get(list) ?? 0, until: id });
  }

  /** The model's selection changed (a click in any view, or the kernel). */
  function onSelected() {
    const id = selectedId();
    for (const e of list.querySelectorAll(".fi-sel")) e.classList.remove("fi-sel");
    if (id === null) return;
    rowsById.get(id)?.line.classList.add("fi-sel");
    const own = id === clicked;
    clicked = null;
    if (!own) reveal(id);
  }

  /** A tab switch made this tree visible: bring the selected row into view. */
  function onShown() {
    const id = selectedId();
    const entry = id === null ? undefined : rowsById.get(id);
    if (entry) scrollListTo(entry.line);
  }

  /** @param {ChildrenReply | SearchReply} msg */
  function onMessage(msg) {
    if (msg.view !== view || msg.tree !== name) return;
    if (msg.kind === "children") {
      const target = msg.id === "" ? (searching ? undefined : list) : rowsById.get(msg.id)?.kids;
      // a page lands once, where it continues what is there (a repeated request adds nothing)
      if (target && msg.rows.length && msg.offset === (loaded.get(target) ?? 0)) {
        for (const m of target.querySelectorAll(":scope > div > .fi-more")) m.parentElement?.remove();
        fill(target, msg.rows);
      }
      if (pendingReveal !== null && rowsById.has(pendingReveal)) reveal(pendingReveal);
      else if (pendingReveal !== null && msg.toward && msg.toward !== msg.id && msg.toward !== pendingReveal) {
        descend(msg.toward);
      }
    } else if (msg.kind === "search" && searching && msg.seq === searchSeq) {
      list.replaceChildren();
      rowsById.clear();
      const info = element("div", "fi-sum fi-count");
      info.textContent = msg.total + " match" + (msg.total === 1 ? "" : "es") +
        (msg.total > msg.rows.length ? " (first " + msg.rows.length + " shown)" : "");
      list.appendChild(info);
      loaded.set(list, 0);
      fill(list, msg.rows);
    }
  }

  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const q = search.value.trim();
      if (!q) return showTree();
      searching = true;
      searchSeq += 1;
      request({ kind: "search", query: q, seq: searchSeq });
    }, 150);
  });

  refresh();
  if (selectedId() !== null) reveal(/** @type {string} */ (selectedId()));

  return {
    el: root,
    refresh,
    onMessage,
    onSelected,
    onShown,
    dispose() {
      clearTimeout(timer);
    },
  };
}
