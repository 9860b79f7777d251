// The name an operator's or engineer's write is done as. The server takes it from the login
// and refuses any other (403), so a name field shows the login's name, read-only; only on a
// server that answers no /auth/me is it typed, and remembered between visits.

import { storageGet, storageSet } from "./storage.js";

const NAME_KEY = "shopfloor.operator";
let login = null; // the promise of the logged-in user's name ("" when none is known)

/** The logged-in user's name, or "" when the server names none (asked once a page). */
export function loginName(api) {
  login ??= api
    .get("/api/v1/auth/me")
    .then((me) => (typeof me?.name === "string" ? me.name : ""))
    .catch(() => "");
  return login;
}

/** Fill `input` with the acting user: the login's name (read-only), else the one remembered. */
export function bindActingUser(input, api) {
  input.value = storageGet(NAME_KEY) || "";
  input.addEventListener("change", () => storageSet(NAME_KEY, input.value.trim()));
  return loginName(api).then((name) => {
    if (!name) return;
    input.value = name;
    input.readOnly = true;
  });
}
