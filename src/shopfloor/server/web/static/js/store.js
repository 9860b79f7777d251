// What the page knows: tag metadata and each tag's latest point. Views listen to "values".

/** Convert one API point to the page's form: `ts` in epoch milliseconds. */
export function toPoint(raw) {
  return {
    ts: typeof raw.ts === "number" ? raw.ts : Date.parse(raw.ts),
    value: raw.value ?? null,
    quality: raw.quality ?? 0,
    text: raw.text ?? null,
  };
}

export class Store extends EventTarget {
  constructor() {
    super();
    this.tags = new Map(); // path -> tag metadata from /api/v1/tags
    this.values = new Map(); // path -> latest point
    this.lastDataTs = null; // newest point time seen, epoch ms (data time, not this tablet's)
  }

  /** Resolve once any point has arrived, or after `timeoutMs` (to `null`). */
  whenData(timeoutMs) {
    if (this.lastDataTs !== null) return Promise.resolve(this.lastDataTs);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.removeEventListener("values", done);
        resolve(this.lastDataTs);
      };
      const timer = setTimeout(done, timeoutMs);
      this.addEventListener("values", done);
    });
  }

  setTags(tags) {
    this.tags = new Map(tags.map((tag) => [tag.path, tag]));
    this.dispatchEvent(new CustomEvent("tags"));
  }

  /**
   * Merge points; emit "values" with the paths whose shown value or quality changed, every
   * point applied (for trends) and the paths no tag metadata knows yet.
   */
  apply(rawValues) {
    const changed = [];
    const points = [];
    const unknown = [];
    for (const raw of rawValues) {
      if (!raw || typeof raw.path !== "string") continue;
      const point = toPoint(raw);
      const old = this.values.get(raw.path);
      if (old && point.ts < old.ts) continue; // a late duplicate must not roll the value back
      this.values.set(raw.path, point);
      points.push([raw.path, point]);
      if (
        !old ||
        old.value !== point.value ||
        old.quality !== point.quality ||
        old.text !== point.text
      ) {
        changed.push(raw.path);
      }
      if (!this.tags.has(raw.path)) unknown.push(raw.path);
    }
    if (points.length) {
      for (const [, point] of points) {
        if (!(point.ts <= this.lastDataTs)) this.lastDataTs = point.ts;
      }
      this.dispatchEvent(new CustomEvent("values", { detail: { changed, points, unknown } }));
    }
  }
}
