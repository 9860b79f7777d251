// The 404 page: only its strings to translate.

import "./strings/machine.js";
import { applyI18n, initLocale } from "./i18n.js";

initLocale();
applyI18n(document);
