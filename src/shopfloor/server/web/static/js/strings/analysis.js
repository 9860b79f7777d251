// Strings shared by the analysis pages (analysis-common.js), English and Simplified Chinese.

import { registerStrings } from "../i18n.js";

registerStrings({
  en: {
    "duration.hm": "{h} h {m} min",
    "duration.ms": "{m} min {s} s",
    "duration.s": "{s} s",
  },
  "zh-CN": {
    "duration.hm": "{h} 小时 {m} 分",
    "duration.ms": "{m} 分 {s} 秒",
    "duration.s": "{s} 秒",
  },
});
