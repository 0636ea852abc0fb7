// A lazily expanded tree: rows arrive from the kernel only when a node is opened.
const CSS = `
.fi-tree{font:12.5px/1.5 var(--jp-code-font-family,ui-monospace,Menlo,monospace);color:var(--jp-content-font-color1,#1f2328)}
.fi-tree .fi-search{width:100%;box-sizing:border-box;margin:0 0 6px;padding:3px 6px;border:1px solid var(--jp-border-color1,#d1d9e0);
 border-radius:4px;background:var(--jp-input-background,var(--jp-layout-color0,#fff));color:inherit;font:inherit}
.fi-tree .fi-list{max-height:480px;overflow:auto}
.fi-tree .fi-row{display:flex;gap:6px;white-space:nowrap;cursor:default;padding:0 4px;border-radius:3px}
.fi-tree .fi-row:hover{background:var(--jp-layout-color2,#eef1f4)}
.fi-tree .fi-row.fi-sel{background:var(--jp-brand-color3,#ddf4ff);outline:1px solid var(--jp-brand-color1,#0969da)}
.fi-tree .fi-tw{width:1em;text-align:center;cursor:pointer;color:var(--jp-content-font-color2,#59636e);user-select:none}
.fi-tree .fi-name{font-weight:600}
.fi-tree .fi-sum{color:var(--jp-content-font-color2,#59636e);overflow:hidden;text-overflow:ellipsis}
.fi-tree .fi-spark{color:var(--jp-brand-color1,#0969da);letter-spacing:-1px}
.fi-tree .fi-leaf .fi-name{cursor:pointer;text-decoration:underline dotted}
.fi-tree .fi-bad .fi-sum,.fi-tree .fi-bad .fi-name{color:var(--jp-error-color1,#cf222e)}
.fi-tree .fi-first{outline:2px solid var(--jp-error-color1,#cf222e)}
.fi-tree .fi-changed .fi-sum{color:var(--jp-warn-color1,#9a6700)}
.fi-tree .fi-added .fi-sum{color:var(--jp-success-color1,#1a7f37)}
.fi-tree .fi-unchanged{opacity:.7}
.fi-tree .fi-more{cursor:pointer;color:var(--jp-brand-color1,#0969da)}
.fi-tree .fi-kids{margin-left:14px}
.fi-tree .fi-flash{animation:fi-flash 1.2s}
@keyframes fi-flash{from{background:var(--jp-warn-color3,#fff8c5)}to{background:transparent}}
`;

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "fi-tree";
  const style = document.createElement("style");
  style.textContent = CSS;
  const search = document.createElement("input");
  search.className = "fi-search";
  search.type = "search";
  search.placeholder = model.get("placeholder") || "filter: substring or glob (params/**/kernel)";
  const list = document.createElement("div");
  list.className = "fi-list";
  root.append(style, search, list);
  el.appendChild(root);

  const rowsById = new Map(); // id -> {row element, kids container}
  let searchSeq = 0;
  let pendingReveal = null;

  function rowEl(r) {
    const wrap = document.createElement("div");
    const line = document.createElement("div");
    line.className = "fi-row" + (r.leaf ? " fi-leaf" : "") + (r.bad ? " fi-bad" : "") + (r.cls ? " fi-" + r.cls : "");
    line.dataset.id = r.id;
    if (r.more) {
      line.classList.add("fi-more");
      line.textContent = r.name;
      line.addEventListener("click", () => {
        model.send({ kind: "children", id: r.parent, offset: r.offset });
        wrap.remove();
      });
      wrap.appendChild(line);
      return wrap;
    }
    const tw = document.createElement("span");
    tw.className = "fi-tw";
    tw.textContent = r.n ? "▸" : "";
    const name = document.createElement("span");
    name.className = "fi-name";
    name.textContent = r.name; // text only: names are user-controlled
    const sum = document.createElement("span");
    sum.className = "fi-sum";
    sum.textContent = r.summary;
    line.append(tw, name, sum);
    if (r.spark) {
      const sp = document.createElement("span");
      sp.className = "fi-spark";
      sp.textContent = r.spark;
      line.appendChild(sp);
    }
    const kids = document.createElement("div");
    kids.className = "fi-kids";
    kids.hidden = true;
    wrap.append(line, kids);
    const entry = { line, kids, tw, loaded: false, row: r };
    rowsById.set(r.id, entry);
    if (r.n) {
      const toggle = () => setOpen(entry, kids.hidden);
      tw.addEventListener("click", toggle);
      if (!r.leaf) name.addEventListener("click", toggle);
    }
    if (r.leaf) name.addEventListener("click", () => select(r.id));
    if (r.children) {
      fill(kids, r.children);
      entry.loaded = true;
      setOpen(entry, true);
    }
    return wrap;
  }

  function setOpen(entry, open) {
    entry.kids.hidden = !open;
    entry.tw.textContent = open ? "▾" : "▸";
    if (open && !entry.loaded) {
      entry.loaded = true;
      model.send({ kind: "children", id: entry.row.id, offset: 0 });
    }
  }

  function fill(container, rows) {
    const frag = document.createDocumentFragment();
    for (const r of rows) frag.appendChild(rowEl(r));
    container.appendChild(frag);
  }

  function select(id) {
    for (const e of list.querySelectorAll(".fi-sel")) e.classList.remove("fi-sel");
    const entry = rowsById.get(id);
    if (entry) entry.line.classList.add("fi-sel");
    model.send({ kind: "select", id });
  }

  function showTree() {
    list.replaceChildren();
    rowsById.clear();
    fill(list, model.get("initial"));
  }

  function reveal(id) {
    const entry = rowsById.get(id);
    if (!entry) {
      if (search.value) {
        search.value = "";
        showTree();
        if (rowsById.has(id)) return reveal(id);
      }
      pendingReveal = id;
      for (const m of list.querySelectorAll(":scope > div > .fi-more")) m.parentElement.remove();
      const loaded = list.querySelectorAll(":scope > div > .fi-row").length;
      model.send({ kind: "reveal", id, loaded });
      return;
    }
    pendingReveal = null;
    entry.line.scrollIntoView({ block: "center" });
    entry.line.classList.add("fi-flash");
    setTimeout(() => entry.line.classList.remove("fi-flash"), 1300);
    select(id);
  }

  let timer = null;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const q = search.value.trim();
      if (!q) return showTree();
      searchSeq += 1;
      model.send({ kind: "search", query: q, seq: searchSeq });
    }, 150);
  });

  model.on("msg:custom", (msg) => {
    if (msg.kind === "children") {
      const target = msg.id === "" ? list : rowsById.get(msg.id)?.kids;
      if (target) fill(target, msg.rows);
      if (pendingReveal && rowsById.has(pendingReveal)) reveal(pendingReveal);
    } else if (msg.kind === "search" && msg.seq === searchSeq) {
      list.replaceChildren();
      rowsById.clear();
      const info = document.createElement("div");
      info.className = "fi-sum fi-count";
      info.textContent = msg.total + " match" + (msg.total === 1 ? "" : "es") +
        (msg.total > msg.rows.length ? " (first " + msg.rows.length + " shown)" : "");
      list.appendChild(info);
      fill(list, msg.rows);
    } else if (msg.kind === "reveal") {
      reveal(msg.id);
    }
  });
  model.on("change:initial", showTree);
  showTree();
}

export default { render };
