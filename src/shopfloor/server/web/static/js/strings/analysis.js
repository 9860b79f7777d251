// Strings shared by the analysis pages (analysis-common.js), English and Simplified Chinese.

import { registerStrings } from "../i18n.js";

registerStrings({
  en: {
    "duration.hm": "{h} h {m} min",
    "duration.ms": "{m} min {s} s",
    "duration.s": "{s} s",
  },
});
