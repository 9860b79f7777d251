// Strings of the trend explorer (/trends), English and Simplified Chinese.

import { registerStrings } from "../i18n.js";

registerStrings({
  en: {
    "trends.pageTitle": "shopfloor · Trend explorer",
    "trends.tags": "Tags",
    "trends.filter": "Filter tags",
    "trends.range": "Time range",
    "trends.from": "From",
    "trends.to": "To",
    "trends.apply": "Show",
    "trends.zoomOut": "Zoom out",
    "trends.csv": "CSV",
    "trends.parquet": "Parquet",
    "trends.exportTitle": "Download the shown range ({format})",
    "trends.pick": "Pick one or more tags from the tree.",
    "trends.loading": "Loading…",
    "trends.failed": "Could not load the history: {error}",
    "trends.noLibrary": "The chart library is missing (run 'make web-assets' on the server).",
    "trends.noData": "No value in this range.",
    "trends.badRange": "The end must be after the start.",
    "trends.raw": "{start} – {end} · raw points",
    "trends.bucketed": "{start} – {end} · averages per {bucket}",
    "trends.bucketedStates": "{start} – {end} · averages per {bucket}; machine states: the highest per {bucket}",
    "trends.tooMany": "At most {n} tags at once.",
    "trends.noUnit": "no unit",
  },
});
