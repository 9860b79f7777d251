// The operator's actions on one alarm: acknowledge (with an optional comment), shelve for
// 15 min / 1 h / 8 h with a reason, unshelve, comment. One form above the table serves them
// all, so the table can be redrawn on every poll without losing what is being typed.
// An error answer stays in the form, as the API worded it, until the operator acts again.

import { t } from "./i18n.js";

// What each action asks for and says. `comment`: "required", "optional".
const ACTIONS = Object.freeze({
  acknowledge: {
    title: "alarms.do.acknowledge",
    submit: "alarms.action.acknowledge",
    comment: "optional",
    label: "alarms.commentOptional",
  },
  shelve: {
    title: "alarms.do.shelve",
    submit: "alarms.action.shelve",
    comment: "required",
    label: "alarms.reason",
    missing: "alarms.needReason",
  },
  unshelve: {
    title: "alarms.do.unshelve",
    submit: "alarms.action.unshelve",
    comment: "optional",
    label: "alarms.commentOptional",
  },
  comment: {
    title: "alarms.do.comment",
    submit: "alarms.action.comment",
    comment: "required",
    label: "alarms.comment",
    missing: "alarms.needComment",
  },
});

export class AlarmActions {
  /**
   * @param form the #alarm-action form of the page.
   * @param api the ApiClient; `operator()` returns the name (focusing its field when empty);
   *   `done()` runs after an action succeeded.
   */
  constructor(form, { api, operator, done }) {
    this.form = form;
    this.api = api;
    this.operator = operator;
    this.done = done;
    this.action = null;
    this.alarm = null;
    this.opener = null;
    this.busy = false;
    const $ = (id) => document.getElementById(id);
    this.el = {
      title: $("alarm-action-title"),
      durationField: $("alarm-action-duration-field"),
      duration: $("alarm-action-duration"),
      commentLabel: $("alarm-action-comment-label"),
      comment: $("alarm-action-comment"),
      error: $("alarm-action-error"),
      submit: $("alarm-action-submit"),
      cancel: $("alarm-action-cancel"),
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.el.cancel.addEventListener("click", () => this.close());
    // What the operator types answers the complaint: it goes until the next try.
    this.el.comment.addEventListener("input", () => this.setError(""));
    // Ctrl+Enter sends from the comment box (Enter alone starts a new line).
    this.el.comment.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.submit();
      }
    });
  }

  get isOpen() {
    return !this.form.hidden;
  }

  /** Open the form for `action` on `alarm`; `opener` gets the focus back on close. */
  open(action, alarm, opener = null) {
    const spec = ACTIONS[action];
    if (!spec) return;
    const same = this.isOpen && this.action === action && this.alarm?.name === alarm.name;
    this.action = action;
    this.alarm = alarm;
    this.opener = opener;
    this.form.dataset.action = action;
    this.el.title.textContent = t(spec.title, { alarm: alarm.message || alarm.name });
    this.el.title.title = alarm.name;
    this.el.durationField.hidden = action !== "shelve";
    this.el.commentLabel.textContent = t(spec.label);
    this.el.comment.required = spec.comment === "required";
    this.el.submit.textContent = t(spec.submit);
    if (!same) {
      this.el.comment.value = "";
      this.setError("");
    }
    this.form.hidden = false;
    (action === "shelve" ? this.el.duration : this.el.comment).focus();
  }

  close() {
    if (!this.isOpen) return;
    const hadFocus = this.form.contains(document.activeElement);
    this.form.hidden = true;
    this.setError("");
    this.action = null;
    this.alarm = null;
    if (hadFocus && this.opener?.isConnected) this.opener.focus();
    this.opener = null;
  }

  /** After a poll: an alarm that left the list, or left the state the action needs, closes it. */
  refresh(alarms) {
    if (!this.isOpen || this.busy) return;
    const now = alarms.find((a) => a.name === this.alarm.name);
    if (!now) {
      this.close();
      return;
    }
    this.alarm = now;
  }

  setError(text) {
    this.el.error.textContent = text;
    this.el.error.hidden = !text;
  }

  async submit() {
    if (this.busy || !this.action) return;
    const spec = ACTIONS[this.action];
    const user = this.operator();
    if (!user) {
      this.setError(t("alarms.needName"));
      return;
    }
    const comment = this.el.comment.value.trim();
    if (spec.comment === "required" && !comment) {
      this.setError(t(spec.missing));
      this.el.comment.focus();
      return;
    }
    const name = this.alarm.name;
    this.busy = true;
    this.el.submit.disabled = true;
    try {
      if (this.action === "acknowledge") await this.api.acknowledge(name, user, comment);
      else if (this.action === "shelve") {
        await this.api.shelve(name, user, this.el.duration.value, comment);
      } else if (this.action === "unshelve") await this.api.unshelve(name, user, comment);
      else await this.api.comment(name, user, comment);
    } catch (err) {
      this.setError(t("alarms.failed", { error: err.message }));
      return;
    } finally {
      this.busy = false;
      this.el.submit.disabled = false;
    }
    this.close();
    this.done();
  }
}
