// Users, roles and API tokens on the admin page, read from issue 8's API (/api/v1/users,
// /api/v1/tokens, /api/v1/auth/me). A server without it answers 404 and the section says
// user management is not available; the lists are read-only here (managing them is the
// API's, and the page's once the lead wires the forms).

import { formatWhen } from "./format.js";
import { t } from "./i18n.js";

function row(dataset, values) {
  const tr = document.createElement("tr");
  Object.assign(tr.dataset, dataset);
  for (const text of values) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.append(td);
  }
  return tr;
}

const when = (ns) => (ns == null ? "–" : formatWhen(ns / 1e6));

/** Fill the section from /api/v1/users and /api/v1/tokens; its data-state says the outcome. */
export async function showUsers(api, { section, msg, users, tokens }) {
  let list;
  try {
    list = await api.get("/api/v1/users");
  } catch (err) {
    section.dataset.state = err.status === 404 ? "unavailable" : "failed";
    msg.textContent = err.status === 404 ? t("admin.usersUnavailable") : t("admin.failed", { error: err.message });
    return;
  }
  section.dataset.state = "available";
  msg.hidden = true;
  const [usersTable, usersBody] = users;
  usersTable.hidden = false;
  usersBody.replaceChildren(
    ...(Array.isArray(list) ? list : []).map((u) =>
      row({ user: u.name }, [
        u.name,
        u.role ?? "",
        (u.sites || []).join(", ") || t("admin.allSites"),
        u.disabled ? t("admin.disabled") : t("admin.active"),
      ]),
    ),
  );
  const [tokensTable, tokensBody, tokensTitle] = tokens;
  let list2;
  try {
    list2 = await api.get("/api/v1/tokens");
  } catch {
    return; // users without tokens: the token list stays hidden
  }
  tokensTable.hidden = tokensTitle.hidden = false;
  tokensBody.replaceChildren(
    ...(Array.isArray(list2) ? list2 : []).map((tok) =>
      row({ token: tok.id }, [
        tok.name,
        tok.role ?? "",
        tok.owner ?? "",
        tok.expires_ns == null ? t("admin.never") : when(tok.expires_ns),
        tok.revoked_ns == null ? t("admin.active") : t("admin.revoked", { time: when(tok.revoked_ns) }),
      ]),
    ),
  );
}
