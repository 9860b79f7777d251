// The login page: POST the name and password to the API, then go where the user was headed.
// The session cookie is HttpOnly; the CSRF cookie is read by api.js on every change.
// The server renders the form in the request's language; the module speaks the same one.

import "./strings/login.js";
import { applyI18n, initLocale, t } from "./i18n.js";

await initLocale();
applyI18n(document);

const base = (document.body.dataset.base || "").replace(/\/$/, "");

/** Only a path on this server is a place to return to (never another site). */
function nextPath() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  return next.startsWith("/") && !next.startsWith("//") && !next.includes("\\") ? next : "/";
}

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");
const submit = document.getElementById("login-submit");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  submit.disabled = true;
  try {
    const response = await fetch(`${base}/api/v1/auth/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({
        name: form.elements.name.value.trim(),
        password: form.elements.password.value,
        code: form.elements.code.value.trim() || null,
      }),
      credentials: "same-origin",
    });
    if (response.ok) {
      location.assign(base + nextPath());
      return;
    }
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json())?.error?.message || message;
    } catch {
      // not JSON: keep the status line
    }
    error.textContent = message;
  } catch {
    error.textContent = t("login.unreachable");
  }
  error.hidden = false;
  submit.disabled = false;
  form.elements.password.select();
});
