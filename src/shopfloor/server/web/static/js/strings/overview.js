// The plant overview's strings (templates/overview.html, js/overview.js).

import { registerStrings } from "../i18n.js";

registerStrings({
  en: {
    "overview.title": "Plant overview",
    "overview.tree": "Asset tree",
    "overview.loading": "Loading the plant…",
    "overview.failed": "Could not load the plant: {error}",
    "overview.noAssets": "This server has no asset model: set [assets] plant.",
    "overview.summary": "{machines} machines on {lines} lines",
    "overview.scope": "Showing {scope}",
    "overview.showAll": "Show the whole plant",
    "overview.oee": "OEE",
    "overview.oeeTitle": "OEE of the shift {shift} so far",
    "overview.noOee": "no OEE",
    "overview.noState": "no state tag",
    "overview.alarms": "Alarms: {n}",
    "overview.alarmsTitle": "Standing alarms of this machine",
    "overview.open": "Open the machine page of {name}",
    "level.enterprise": "Enterprise",
    "level.site": "Site",
    "level.area": "Area",
    "level.line": "Line",
    "level.cell": "Cell",
    "level.equipment": "Equipment",
  },
});
