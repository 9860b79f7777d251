// The header: connection state of the live channel and the server's health figures.

import { formatCount, formatNumber, formatRate, formatTime } from "./format.js";
import { t } from "./i18n.js";

const POLL_MS = 5000;

export class StatusView {
  constructor(elements, api) {
    this.el = elements;
    this.api = api;
    this.timer = null;
    this.previous = null; // {written, atMs} from the last poll, to derive points/s
  }

  /** Show the websocket's state: "connecting", "live" or "reconnecting". */
  showConnection({ state, retryInMs }) {
    this.el.conn.dataset.state = state;
    if (state === "reconnecting" && retryInMs > 1500) {
      this.el.connLabel.textContent = t("conn.reconnectingIn", { s: Math.round(retryInMs / 1000) });
    } else {
      this.el.connLabel.textContent = t(`conn.${state}`);
    }
  }

  showUpdated(ms) {
    if (ms) this.el.updated.textContent = t("cards.updated", { time: formatTime(ms) });
  }

  start() {
    const tick = async () => {
      await this.poll();
      this.timer = setTimeout(tick, POLL_MS);
    };
    tick();
  }

  async poll() {
    let health;
    try {
      health = await this.api.healthz();
    } catch {
      this.el.version.textContent = t("health.unreachable");
      this.previous = null;
      return;
    }
    const historian = health.historian || {};
    const written = Number(historian.points_written);
    const now = performance.now();
    // The demo reports its own rate; otherwise derive it from the historian's counter.
    let rate = Number(health.demo?.points_per_s);
    if (!(rate > 0) && this.previous && Number.isFinite(written)) {
      const seconds = (now - this.previous.atMs) / 1000;
      if (seconds > 0 && written >= this.previous.written) {
        rate = (written - this.previous.written) / seconds;
      }
    }
    if (Number.isFinite(written)) this.previous = { written, atMs: now };
    this.el.rate.textContent = formatRate(rate);
    this.el.stored.textContent = formatCount(historian.points_written);
    this.el.stored.title = Number.isFinite(written) ? formatNumber(written) : "";
    this.el.tags.textContent = formatCount(historian.tags);
    this.el.version.textContent = health.version
      ? t("health.version", { version: health.version })
      : "";
    const pending = Number(historian.points_pending);
    this.el.pending.textContent = pending > 0 ? t("health.pending", { n: formatCount(pending) }) : "";
  }
}
