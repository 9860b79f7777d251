// The frame every page shares (base.html): translates the navigation, whose strings are in
// i18n.js's own tables, and switches the language.

import { applyI18n, initLocale, locale, rememberLocale } from "./i18n.js";

await initLocale();
const bar = document.querySelector(".topbar");
if (bar) applyI18n(bar);
const title = document.querySelector("title[data-i18n]");
if (title) applyI18n(document.head);

const select = document.getElementById("lang-select");
if (select) {
  select.value = locale();
  select.addEventListener("change", async () => {
    // Remembered for the next visit (and by the server, which renders the next page in it;
    // with the account too, when logged in);
    // the page is loaded again so that every view, chart and number format starts in the
    // new language (no half-translated page).
    await rememberLocale(select.value);
    const url = new URL(location.href);
    url.searchParams.set("lang", select.value);
    location.assign(url);
  });
}
