// The strings of the navigation every page shares (templates/base.html).

import { registerStrings } from "../i18n.js";

registerStrings({
  en: {
    "menu.label": "Pages",
    "menu.live": "Live",
    "menu.overview": "Overview",
    "menu.oee": "OEE",
    "menu.trends": "Trends",
    "menu.alarms": "Alarms",
    "menu.language": "Language",
  },
  "zh-CN": {
    "menu.label": "页面",
    "menu.live": "实时",
    "menu.overview": "总览",
    "menu.oee": "OEE",
    "menu.trends": "趋势",
    "menu.alarms": "报警",
    "menu.language": "语言",
  },
});
