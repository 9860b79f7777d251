// The frame every page shares (base.html): translates the navigation, whose strings are in
// i18n.js's own tables, and switches the language.

import { applyI18n, initLocale, locale } from "./i18n.js";
import { storageSet } from "./storage.js";

initLocale();
const bar = document.querySelector(".topbar");
if (bar) applyI18n(bar);

const select = document.getElementById("lang-select");
if (select) {
  select.value = locale();
  select.addEventListener("change", () => {
    // Remembered for the next visit; the page is loaded again so that every view, chart
    // and number format starts in the new language (no half-translated page).
    storageSet("shopfloor.lang", select.value);
    const url = new URL(location.href);
    url.searchParams.set("lang", select.value);
    location.assign(url);
  });
}
