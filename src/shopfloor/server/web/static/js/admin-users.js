// Users, roles and API tokens on the admin page, and "my account" (issue 8's API:
// /api/v1/users, /api/v1/tokens, /api/v1/auth/password, /api/v1/auth/totp). A server
// without it answers 404 and the section says user management is not available.
//
// A token's secret is in the creation's answer only: the page shows it once, with a copy
// button and a warning, and forgets it on the next creation. Revoking asks first
// (confirm.js) because a machine using the token stops working at once.

import { confirmDialog } from "./confirm.js";
import { formatWhen } from "./format.js";
import { t } from "./i18n.js";

const ROLES = ["viewer", "operator", "engineer", "admin"];
const when = (ns) => (ns == null ? "–" : formatWhen(ns / 1e6));
const sitesOf = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

function el(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function td(...children) {
  return el("td", {}, children);
}

/** The users, tokens and account forms; `$` finds the template's elements by id. */
export class UsersView {
  constructor(api, $, dialog) {
    this.api = api;
    this.$ = $;
    this.dialog = dialog;
    $("user-add").addEventListener("submit", (e) => this.addUser(e));
    $("token-add").addEventListener("submit", (e) => this.addToken(e));
    $("token-copy").addEventListener("click", () => this.copySecret());
    $("my-password").addEventListener("submit", (e) => this.changeOwnPassword(e));
    $("totp-begin").addEventListener("click", () => this.beginTotp());
    $("totp-confirm").addEventListener("submit", (e) => this.confirmTotp(e));
    $("totp-remove").addEventListener("submit", (e) => this.removeOwnTotp(e));
  }

  /** Say the outcome of an action (`ok` false: an error) in the section's message line. */
  say(id, text, ok = true) {
    const msg = this.$(id);
    msg.hidden = false;
    msg.dataset.outcome = ok ? "ok" : "error";
    msg.textContent = text;
  }

  /** Run `action`; a failure is said in `msgId` and makes it return false. */
  async attempt(msgId, action) {
    try {
      await action();
      return true;
    } catch (err) {
      this.say(msgId, t("admin.actionFailed", { error: err.message }), false);
      return false;
    }
  }

  /** Fill the lists; the section's data-state says the outcome. */
  async load() {
    const section = this.$("users");
    const msg = this.$("users-msg");
    let users;
    try {
      users = await this.api.get("/api/v1/users");
    } catch (err) {
      // 404: a server without user management; 403: not an admin ("my account" still works).
      const state = { 404: "unavailable", 403: "forbidden" }[err.status] ?? "failed";
      section.dataset.state = state;
      msg.textContent = {
        unavailable: t("admin.usersUnavailable"),
        forbidden: t("admin.usersForbidden"),
      }[state] ?? t("admin.failed", { error: err.message });
      return;
    }
    section.dataset.state = "available";
    msg.hidden = true;
    for (const id of ["users-table", "user-add", "tokens-title", "token-add"]) {
      this.$(id).hidden = false;
    }
    this.showUsers(Array.isArray(users) ? users : []);
    try {
      const tokens = await this.api.get("/api/v1/tokens");
      this.$("tokens-table").hidden = false;
      this.showTokens(Array.isArray(tokens) ? tokens : []);
    } catch (err) {
      this.say("tokens-msg", t("admin.failed", { error: err.message }), false);
    }
  }

  showUsers(users) {
    this.$("users-body").replaceChildren(...users.map((u) => this.userRow(u)));
    // the token form's "act as user" suggests the users' names
    this.$("user-names").replaceChildren(...users.map((u) => el("option", { value: u.name })));
  }

  userRow(u) {
    const tr = el("tr");
    tr.dataset.user = u.name;
    tr.dataset.disabled = String(u.disabled);
    const role = el("select", { className: "user-role" });
    role.setAttribute("aria-label", t("admin.colRole"));
    role.append(...ROLES.map((r) => el("option", { value: r, textContent: r, selected: r === u.role })));
    role.addEventListener("change", () => this.patchUser(u.name, { role: role.value }));
    const toggle = el("button", {
      type: "button",
      className: "admin-btn",
      textContent: u.disabled ? t("admin.enableUser") : t("admin.disableUser"),
    });
    toggle.dataset.action = u.disabled ? "enable-user" : "disable-user";
    toggle.addEventListener("click", () => this.patchUser(u.name, { disabled: !u.disabled }));
    const password = el("input", { type: "password", className: "user-password", autocomplete: "new-password" });
    password.setAttribute("aria-label", t("admin.newPassword"));
    const reset = el("button", { type: "button", className: "admin-btn", textContent: t("admin.resetPassword") });
    reset.dataset.action = "reset-password";
    reset.addEventListener("click", () => this.resetPassword(u.name, password));
    const sites = el("input", {
      className: "user-sites",
      value: (u.sites || []).join(", "),
      placeholder: t("admin.allSites"),
      maxLength: 2000,
      autocomplete: "off",
    });
    sites.setAttribute("aria-label", t("admin.sitesHelp"));
    const saveSites = el("button", { type: "button", className: "admin-btn", textContent: t("admin.saveSites") });
    saveSites.dataset.action = "save-sites";
    saveSites.addEventListener("click", () => this.patchUser(u.name, { sites: sitesOf(sites.value) }));
    const totp = td(u.totp ? t("admin.totpOnShort") : t("admin.totpOffShort"));
    totp.dataset.totp = String(Boolean(u.totp));
    if (u.totp) {
      const remove = el("button", { type: "button", className: "admin-btn", textContent: t("admin.removeTotp") });
      remove.dataset.action = "remove-totp";
      remove.addEventListener("click", () => this.removeTotp(u.name));
      totp.append(" ", remove);
    }
    tr.append(
      td(u.name),
      td(role),
      td(sites, " ", saveSites),
      td(u.locale ?? t("admin.browserLanguage")),
      totp,
      td(u.disabled ? t("admin.disabled") : t("admin.active"), " ", toggle),
      td(password, " ", reset),
    );
    return tr;
  }

  async removeTotp(name) {
    const ok = await confirmDialog(this.dialog, {
      title: t("admin.removeTotpTitle", { name }),
      text: t("admin.removeTotpText"),
      ok: t("admin.removeTotp"),
    });
    if (!ok) return;
    const done = await this.attempt("users-action-msg", () =>
      this.api.send("DELETE", `/api/v1/users/${encodeURIComponent(name)}/totp`),
    );
    if (done) this.say("users-action-msg", t("admin.totpRemoved", { name }));
    await this.load();
  }

  async patchUser(name, change) {
    const ok = await this.attempt("users-action-msg", () =>
      this.api.send("PATCH", `/api/v1/users/${encodeURIComponent(name)}`, change),
    );
    if (ok) this.say("users-action-msg", t("admin.userChanged", { name }));
    await this.load();
  }

  async resetPassword(name, input) {
    if (!input.value) {
      input.focus();
      return;
    }
    const ok = await this.attempt("users-action-msg", () =>
      this.api.put(`/api/v1/users/${encodeURIComponent(name)}/password`, { password: input.value }),
    );
    if (ok) {
      input.value = "";
      this.say("users-action-msg", t("admin.passwordSet", { name }));
    }
  }

  async addUser(event) {
    event.preventDefault();
    const form = event.target;
    const body = {
      name: form.elements.name.value.trim(),
      role: form.elements.role.value,
      password: form.elements.password.value,
      sites: sitesOf(form.elements.sites.value),
    };
    const ok = await this.attempt("users-action-msg", () => this.api.post("/api/v1/users", body));
    if (!ok) return;
    form.reset();
    this.say("users-action-msg", t("admin.userAdded", { name: body.name }));
    await this.load();
  }

  showTokens(tokens) {
    this.$("tokens-body").replaceChildren(
      ...tokens.map((tok) => {
        const tr = el("tr", {}, [
          td(tok.name),
          td(tok.role ?? ""),
          td(tok.user ?? t("admin.itself")),
          td(tok.owner ?? ""),
          td(tok.expires_ns == null ? t("admin.never") : when(tok.expires_ns)),
        ]);
        tr.dataset.token = tok.id;
        tr.dataset.revoked = String(tok.revoked_ns != null);
        if (tok.revoked_ns != null) {
          tr.append(td(t("admin.revoked", { time: when(tok.revoked_ns) })));
        } else {
          const revoke = el("button", { type: "button", className: "admin-btn", textContent: t("admin.revoke") });
          revoke.dataset.action = "revoke";
          revoke.addEventListener("click", () => this.revoke(tok));
          tr.append(td(t("admin.active"), " ", revoke));
        }
        return tr;
      }),
    );
  }

  async addToken(event) {
    event.preventDefault();
    const form = event.target;
    const days = Number(form.elements.expires.value);
    const user = form.elements.user.value.trim();
    const body = {
      name: form.elements.name.value.trim(),
      role: form.elements.role.value,
      expires_in_s: days > 0 ? days * 86400 : null,
      user: user || null,
    };
    this.$("token-secret-box").hidden = true;
    this.$("token-secret").textContent = "";
    let created;
    const ok = await this.attempt("tokens-msg", async () => {
      created = await this.api.post("/api/v1/tokens", body);
    });
    if (!ok) return;
    form.reset();
    this.$("tokens-msg").hidden = true;
    this.$("token-secret").textContent = created.secret;
    this.$("token-secret-box").hidden = false;
    await this.load();
  }

  async copySecret() {
    const secret = this.$("token-secret").textContent;
    try {
      await navigator.clipboard.writeText(secret);
      this.say("tokens-msg", t("admin.copied"));
    } catch {
      // No clipboard (plain http on another host): select the text for Ctrl+C instead.
      getSelection().selectAllChildren(this.$("token-secret"));
      this.say("tokens-msg", t("admin.copyManually"), false);
    }
  }

  async revoke(tok) {
    const ok = await confirmDialog(this.dialog, {
      title: t("admin.revokeTitle", { name: tok.name }),
      text: t("admin.revokeText"),
      ok: t("admin.revoke"),
    });
    if (!ok) return;
    const done = await this.attempt("tokens-msg", () =>
      this.api.send("DELETE", `/api/v1/tokens/${encodeURIComponent(tok.id)}`),
    );
    if (done) this.say("tokens-msg", t("admin.tokenRevoked", { name: tok.name }));
    await this.load();
  }

  async changeOwnPassword(event) {
    event.preventDefault();
    const form = event.target;
    const body = { current: form.elements.current.value, new: form.elements.new.value };
    const ok = await this.attempt("account-msg", () => this.api.post("/api/v1/auth/password", body));
    if (!ok) return;
    form.reset();
    this.say("account-msg", t("admin.ownPasswordChanged"));
  }

  async beginTotp() {
    let answer;
    const ok = await this.attempt("account-msg", async () => {
      answer = await this.api.post("/api/v1/auth/totp", {});
    });
    if (!ok) return;
    this.$("totp-secret").textContent = answer.secret;
    this.$("totp-uri").textContent = answer.uri;
    this.$("totp-box").hidden = false;
    this.$("account-msg").hidden = true;
  }

  async confirmTotp(event) {
    event.preventDefault();
    const form = event.target;
    const code = form.elements.code.value.trim();
    const ok = await this.attempt("account-msg", () =>
      this.api.post("/api/v1/auth/totp/confirm", { code }),
    );
    if (!ok) return;
    form.reset();
    this.$("totp-box").hidden = true;
    this.say("account-msg", t("admin.totpOn"));
  }

  async removeOwnTotp(event) {
    event.preventDefault();
    const form = event.target;
    const body = { password: form.elements.password.value, code: form.elements.code.value.trim() };
    const ok = await this.attempt("account-msg", () => this.api.send("DELETE", "/api/v1/auth/totp", body));
    if (!ok) return;
    form.reset();
    this.say("account-msg", t("admin.totpOff"));
  }
}
