// The asset hierarchy as tag paths spell it: enterprise/site/area/line/cell/equipment/tag.

/** The asset a tag belongs to: its path without the last segment. */
export function assetOf(path) {
  const cut = path.lastIndexOf("/");
  return cut < 0 ? "" : path.slice(0, cut);
}

export function nameOf(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** Is `path` equal to `prefix` or below it? An empty prefix contains everything. */
export function within(path, prefix) {
  return !prefix || path === prefix || path.startsWith(prefix + "/");
}

/** Tags grouped by the asset (machine) that owns them, assets and tags sorted by path. */
export function groupByAsset(tags) {
  const groups = new Map();
  const sorted = [...tags].sort((a, b) => a.path.localeCompare(b.path, undefined, { numeric: true }));
  for (const tag of sorted) {
    const asset = tag.asset ?? assetOf(tag.path);
    if (!groups.has(asset)) groups.set(asset, []);
    groups.get(asset).push(tag);
  }
  return groups;
}

/**
 * A tree of nodes {name, path, children: Map, tag} from tag metadata. A node with a `tag` is
 * a leaf; every other node is an asset.
 */
export function buildTree(tags) {
  const root = { name: "", path: "", children: new Map(), tag: null };
  for (const tag of tags) {
    const segments = tag.path.split("/");
    let node = root;
    segments.forEach((segment, i) => {
      const path = segments.slice(0, i + 1).join("/");
      let child = node.children.get(segment);
      if (!child) {
        child = { name: segment, path, children: new Map(), tag: null };
        node.children.set(segment, child);
      }
      if (i === segments.length - 1) child.tag = tag;
      node = child;
    });
  }
  return root;
}

/** Children of a node in display order: assets first, then tags, each by natural order. */
export function sortedChildren(node) {
  return [...node.children.values()].sort((a, b) => {
    const leafA = a.tag && a.children.size === 0;
    const leafB = b.tag && b.children.size === 0;
    if (leafA !== leafB) return leafA ? 1 : -1;
    return a.name.localeCompare(b.name, undefined, { numeric: true });
  });
}
