// Writing a set point from the machine page: a "Set" control on each tag the server may
// write (GET /api/v1/writes). Writing asks first (POST /api/v1/writes {path, value, user}),
// which reads the present value from the device; the dialog shows old → new; confirming
// writes and the row shows what the device reads back. Whether writes are on for the
// tag's connector is the admin's switch (/admin): while off, the server refuses and the
// row says so.

import { confirmDialog } from "./confirm.js";
import { formatNumber, unitLabel } from "./format.js";
import { t } from "./i18n.js";
import { bindActingUser } from "./acting-user.js";


function show(value, unit) {
  if (value === null || value === undefined) return t("value.none");
  const text = typeof value === "number" ? formatNumber(value) : String(value);
  return unit ? `${text} ${unitLabel(unit)}` : text;
}

/**
 * What was typed as the API takes it: a flag true/false, a number for a numeric tag, the
 * text itself for a state label or a text tag (the server checks it against the tag).
 */
export function parseValue(tag, text) {
  if (tag.data_type === "string") return text;
  if (tag.data_type === "bool" && /^(true|false)$/i.test(text)) return text.toLowerCase() === "true";
  if (Object.values(tag.states || {}).includes(text)) return text;
  const number = Number(text);
  return text !== "" && Number.isFinite(number) ? number : text;
}

export class WriteControls {
  /** @param api the ApiClient; `dialog` the page's confirmation <dialog>. */
  constructor(api, dialog) {
    this.api = api;
    this.dialog = dialog;
  }

  /** The writable tags under `machinePath`, by path; none when the server writes nothing. */
  async writableUnder(machinePath) {
    let body;
    try {
      body = await this.api.get("/api/v1/writes");
    } catch (err) {
      if (err.status === 404) return new Map(); // this server runs no connector that writes
      throw err;
    }
    return new Map(
      body.tags.filter((tag) => tag.path.startsWith(machinePath + "/")).map((tag) => [tag.path, tag]),
    );
  }

  /**
   * The Set button's cell for the tag's row, and the row to put under it: the value and
   * name fields (opened by the button) and the outcome of the last write.
   */
  controls(tag, currentValue, span) {
    const td = document.createElement("td");
    td.className = "set-cell";
    const row = document.createElement("tr");
    row.className = "set-row";
    row.dataset.setFor = tag.path;
    row.hidden = true;
    const wide = document.createElement("td");
    wide.colSpan = span;
    row.append(wide);
    const open = document.createElement("button");
    open.type = "button";
    open.className = "admin-btn admin-btn-small";
    open.dataset.set = tag.path;
    open.textContent = t("machine.set");
    const form = document.createElement("form");
    form.className = "set-form";
    form.hidden = true;
    const value = document.createElement("input");
    value.name = "value";
    value.inputMode = "decimal";
    value.required = true;
    value.setAttribute("aria-label", t("machine.setValue", { unit: unitLabel(tag.unit) }));
    const user = document.createElement("input");
    user.name = "user";
    user.required = true;
    user.placeholder = t("machine.setUser");
    user.setAttribute("aria-label", t("machine.setUser"));
    bindActingUser(user, this.api);
    const go = document.createElement("button");
    go.type = "submit";
    go.className = "admin-btn admin-btn-small admin-btn-primary";
    go.textContent = t("machine.write");
    form.append(value, user, go);
    const result = document.createElement("span");
    result.className = "set-result";
    result.setAttribute("role", "status");
    td.append(open);
    wide.append(form, result);
    // the row opens the trend; clicks and keys in here are the write's, not the row's
    for (const kind of ["click", "keydown"]) td.addEventListener(kind, (event) => event.stopPropagation());
    open.addEventListener("click", () => {
      form.hidden = !form.hidden;
      if (!form.hidden) row.hidden = false;
      if (!form.hidden) {
        const now = currentValue();
        value.value = typeof now === "number" ? String(Math.round(now * 1000) / 1000) : "";
        value.focus();
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.write(tag, value.value.trim(), user.value.trim(), { form, go, result });
    });
    return { cell: td, row };
  }

  async write(tag, text, user, { form, go, result }) {
    const value = parseValue(tag, text);
    go.disabled = true;
    try {
      const asked = await this.api.post("/api/v1/writes", { path: tag.path, value, user });
      const ok = await confirmDialog(this.dialog, {
        title: t("machine.confirmTitle", { tag: tag.path.slice(tag.path.lastIndexOf("/") + 1) }),
        text: [
          tag.path,
          t("machine.confirmChange", { old: show(asked.old, asked.unit), new: show(asked.new, asked.unit) }),
        ],
        ok: t("machine.confirmWrite"),
      });
      if (!ok) {
        result.dataset.outcome = "cancelled";
        result.textContent = t("machine.writeCancelled");
        return;
      }
      const done = await this.api.post("/api/v1/writes", { confirmation: asked.confirmation, user });
      result.dataset.outcome = "written";
      result.dataset.readBack = String(done.new);
      result.textContent = t("machine.written", { old: show(done.old, done.unit), new: show(done.new, done.unit) });
      form.hidden = true;
    } catch (err) {
      result.dataset.outcome = "error";
      result.textContent =
        err.code === "writes_disabled" ? t("machine.writesOff") : t("machine.writeFailed", { error: err.message });
    } finally {
      go.disabled = false;
    }
  }
}
