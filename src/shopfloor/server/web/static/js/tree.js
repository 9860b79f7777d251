// The asset tree in the sidebar: collapsible levels, a filter box, a state dot per machine.
// Choosing an asset narrows the machine cards to it; choosing a tag opens its trend.

import { buildTree, nameOf, sortedChildren } from "./assets.js";
import { humanize, stateKey, unitLabel } from "./format.js";
import { t } from "./i18n.js";

export class AssetTree {
  constructor(container, filterInput, { onSelectAsset, onSelectTag }) {
    this.container = container;
    this.filterInput = filterInput;
    this.onSelectAsset = onSelectAsset;
    this.onSelectTag = onSelectTag;
    this.rows = new Map(); // path -> tree-row button
    this.dots = new Map(); // state tag path -> dot element
    this.items = []; // [{li, node, ancestors}] for filtering
    this.active = "";
    this.expandedBeforeFilter = null;
    filterInput.addEventListener("input", () => this.applyFilter());
    container.addEventListener("click", (event) => this.onClick(event));
  }

  render(tags) {
    const root = buildTree(tags);
    this.rows.clear();
    this.dots.clear();
    this.items = [];
    const top = document.createElement("ul");
    top.className = "tree-list tree-root";
    top.append(this.allItem());
    // A chain of single assets at the top (one enterprise, one site) reads better as one row.
    let node = root;
    const chain = [];
    while (node.children.size === 1) {
      const only = [...node.children.values()][0];
      if (only.tag || only.children.size === 0) break;
      chain.push(only.name);
      node = only;
    }
    if (chain.length > 1) {
      top.append(this.item(node, chain.map(humanize).join(" / "), []));
    } else {
      for (const child of sortedChildren(root)) top.append(this.item(child, null, []));
    }
    this.container.replaceChildren(top);
    this.setActive(this.active);
    if (this.filterInput.value) this.applyFilter();
  }

  allItem() {
    const li = document.createElement("li");
    li.className = "tree-node";
    const row = document.createElement("div");
    row.className = "tree-row";
    const spacer = document.createElement("span");
    spacer.className = "twisty-spacer";
    const label = document.createElement("button");
    label.type = "button";
    label.className = "tree-label tree-all";
    label.dataset.path = "";
    label.dataset.kind = "asset";
    label.textContent = t("tree.all");
    row.append(spacer, label);
    li.append(row);
    this.rows.set("", label);
    return li;
  }

  item(node, labelText, ancestors) {
    const isTag = Boolean(node.tag) && node.children.size === 0;
    const li = document.createElement("li");
    li.className = "tree-node";
    li.dataset.kind = isTag ? "tag" : "asset";
    const row = document.createElement("div");
    row.className = "tree-row";

    const label = document.createElement("button");
    label.type = "button";
    label.className = "tree-label";
    label.dataset.path = node.path;
    label.dataset.kind = isTag ? "tag" : "asset";
    label.title = node.tag?.description ? `${node.path}\n${node.tag.description}` : node.path;

    if (isTag) {
      const spacer = document.createElement("span");
      spacer.className = "twisty-spacer";
      row.append(spacer);
      if (node.tag.data_type === "string") label.disabled = true;
    } else {
      const twisty = document.createElement("button");
      twisty.type = "button";
      twisty.className = "twisty";
      // Machines (whose children are all tags) start folded so the tree stays short.
      const leafParent = [...node.children.values()].every((c) => c.tag && c.children.size === 0);
      twisty.setAttribute("aria-expanded", String(!leafParent));
      twisty.setAttribute("aria-label", node.name);
      row.append(twisty);
      const stateTag = node.children.get("state")?.tag;
      if (stateTag) {
        const dot = document.createElement("span");
        dot.className = "state-dot";
        dot.dataset.state = "unknown";
        label.append(dot);
        this.dots.set(stateTag.path, dot);
      }
    }
    const name = document.createElement("span");
    name.className = "tree-name";
    name.textContent = labelText ?? humanize(node.name);
    label.append(name);
    if (isTag && node.tag.unit) {
      const unit = document.createElement("span");
      unit.className = "tree-unit";
      unit.textContent = unitLabel(node.tag.unit);
      label.append(unit);
    }
    row.append(label);
    li.append(row);
    this.rows.set(node.path, label);
    this.items.push({ li, node, ancestors, isTag });

    if (!isTag) {
      const list = document.createElement("ul");
      list.className = "tree-list";
      const next = [...ancestors, li];
      for (const child of sortedChildren(node)) list.append(this.item(child, null, next));
      li.append(list);
    }
    return li;
  }

  onClick(event) {
    const twisty = event.target.closest(".twisty");
    if (twisty) {
      const open = twisty.getAttribute("aria-expanded") === "true";
      twisty.setAttribute("aria-expanded", String(!open));
      return;
    }
    const label = event.target.closest(".tree-label");
    if (!label || label.disabled) return;
    if (label.dataset.kind === "tag") this.onSelectTag(label.dataset.path);
    else {
      // Choosing a folded asset also unfolds it: people click the name, not the chevron.
      const twistyOfRow = label.parentElement.querySelector(".twisty");
      if (twistyOfRow) twistyOfRow.setAttribute("aria-expanded", "true");
      this.onSelectAsset(label.dataset.path);
    }
  }

  /** Mark the chosen asset or tag. */
  setActive(path) {
    this.active = path;
    for (const [rowPath, row] of this.rows) {
      if (rowPath === path) row.setAttribute("aria-current", "true");
      else row.removeAttribute("aria-current");
    }
  }

  markTag(path) {
    for (const [rowPath, row] of this.rows) {
      row.classList.toggle("is-trended", rowPath === path && row.dataset.kind === "tag");
    }
  }

  /** Recolour the machine dots whose state tags changed. */
  updateStates(store, changed) {
    for (const path of changed) {
      const dot = this.dots.get(path);
      if (dot) {
        dot.dataset.state = stateKey(store.values.get(path)?.value);
        dot.title = nameOf(path);
      }
    }
  }

  refreshAllStates(store) {
    this.updateStates(store, this.dots.keys());
  }

  applyFilter() {
    const query = this.filterInput.value.trim().toLowerCase();
    const visible = new Set();
    for (const { li, node, ancestors, isTag } of this.items) {
      const hit = !query || (isTag && node.path.toLowerCase().includes(query));
      if (hit) {
        visible.add(li);
        for (const a of ancestors) visible.add(a);
      }
    }
    let any = false;
    for (const { li, isTag } of this.items) {
      li.hidden = query !== "" && !visible.has(li);
      if (query && !isTag) li.classList.toggle("force-open", visible.has(li));
      else li.classList.remove("force-open");
      any ||= !li.hidden && isTag;
    }
    this.container.classList.toggle("no-match", Boolean(query) && !any);
    this.container.dataset.noMatch = t("tree.noMatch");
  }
}
