// Every string the page shows, per locale. Keys are stable; add a locale by adding a table
// with the same keys (a missing key falls back to English, then to the key itself).
// State labels are not here: they come from each tag's `states` in the API.

import { storageGet } from "./storage.js";

const STRINGS = {
  en: {
    "app.subtitle": "Live plant",
    "nav.toggle": "Show or hide the asset tree",
    "health.rate": "Points/s",
    "health.stored": "Stored",
    "health.tags": "Tags",
    "health.version": "shopfloor {version}",
    "health.pending": "{n} pending",
    "health.unreachable": "server unreachable",
    "conn.connecting": "Connecting…",
    "conn.live": "Live",
    "conn.reconnecting": "Reconnecting…",
    "conn.reconnectingIn": "Reconnecting in {s} s",
    "alarms.label": "Alarms",
    "alarms.title": "Standing alarms",
    "alarms.open": "Show the standing alarms",
    "alarms.close": "Close",
    "alarms.operator": "Operator",
    "alarms.summary": "{standing} standing, {waiting} to acknowledge",
    "alarms.updated": "{summary} · updated {time}",
    "alarms.stale": "Could not refresh: {error}",
    "alarms.none": "No standing alarm.",
    "alarms.needName": "Enter your name to acknowledge.",
    "alarms.failed": "Not acknowledged: {error}",
    "alarms.acknowledge": "Acknowledge",
    "alarms.colAlarm": "Alarm",
    "alarms.colPriority": "Priority",
    "alarms.colState": "State",
    "alarms.colSince": "Since",
    "alarms.state.unacknowledged": "Unacknowledged",
    "alarms.state.acknowledged": "Acknowledged",
    "alarms.state.returned": "Returned, unacknowledged",
    "alarms.state.shelved": "Shelved",
    "alarms.state.suppressed": "Suppressed",
    "alarms.state.outOfService": "Out of service",
    "alarms.priority.critical": "Critical",
    "alarms.priority.high": "High",
    "alarms.priority.medium": "Medium",
    "alarms.priority.low": "Low",
    "connectors.label": "Connections",
    "connectors.title": "Connections",
    "connectors.open": "Show the state of each connection",
    "connectors.close": "Close",
    "connectors.summary": "{active} of {total} connections active",
    "connectors.updated": "{summary} · updated {time}",
    "connectors.stale": "Could not refresh: {error}",
    "connectors.colName": "Connection",
    "connectors.colState": "State",
    "connectors.colRate": "Reads/s",
    "connectors.colLatency": "Last read",
    "connectors.colErrors": "Errors",
    "connectors.colReconnects": "Reconnects",
    "connectors.totals": "{reads} reads, {points} points since start",
    "connectors.lastError": "Last error",
    "connectors.state.starting": "Starting",
    "connectors.state.active": "Active",
    "connectors.state.idle": "Idle",
    "connectors.state.degraded": "Degraded",
    "connectors.state.stopped": "Stopped",
    "unit.millis": "{n} ms",
    "unit.seconds": "{n} s",
    "tree.title": "Assets",
    "tree.filter": "Filter tags",
    "tree.all": "All equipment",
    "tree.noMatch": "No tag matches",
    "scope.all": "All equipment",
    "scope.count": "{n} machines",
    "scope.countOne": "1 machine",
    "cards.loading": "Loading tags…",
    "cards.none": "No tags yet. Values appear here as soon as a connector reports them.",
    "cards.loadFailed": "Could not load tags: {error}. Retrying…",
    "cards.stateTitle": "Machine state — click for its trend",
    "cards.updated": "Updated {time}",
    "quality.bad": "BAD",
    "quality.uncertain": "UNCERTAIN",
    "quality.badTitle": "Bad quality (status 0x{code}): the value is not trustworthy",
    "quality.uncertainTitle": "Uncertain quality (status 0x{code})",
    "value.none": "—",
    "value.on": "ON",
    "value.off": "OFF",
    "state.unknown": "UNKNOWN",
    "trend.range": "Time range",
    "trend.close": "Close trend",
    "trend.loading": "Loading…",
    "trend.noData": "No values in this range",
    "trend.failed": "Could not load the trend: {error}",
    "trend.noLibrary": "The chart library is missing (run 'make web-assets' on the server).",
    "trend.raw": "raw values, extending live",
    "trend.bucketed": "{bucket} buckets: average with min–max band, extending live",
    "trend.bucketedState": "{bucket} buckets: highest state code per bucket, extending live",
    "trend.avg": "avg",
    "trend.min": "min",
    "trend.max": "max",
    "trend.value": "value",
    "legend.running": "Running",
    "legend.idle": "Idle",
    "legend.setup": "Setup",
    "legend.down": "Down",
    "legend.unknown": "Unknown",
  },
  "zh-CN": {
    "app.subtitle": "实时工厂",
    "nav.toggle": "显示或隐藏资产树",
    "health.rate": "点/秒",
    "health.stored": "已存储",
    "health.tags": "标签",
    "health.version": "shopfloor {version}",
    "health.pending": "{n} 待写入",
    "health.unreachable": "服务器无法访问",
    "conn.connecting": "正在连接…",
    "conn.live": "实时",
    "conn.reconnecting": "正在重新连接…",
    "conn.reconnectingIn": "{s} 秒后重新连接",
    "alarms.label": "报警",
    "alarms.title": "当前报警",
    "alarms.open": "显示当前报警",
    "alarms.close": "关闭",
    "alarms.operator": "操作员",
    "alarms.summary": "{standing} 条报警，{waiting} 条待确认",
    "alarms.updated": "{summary} · 更新于 {time}",
    "alarms.stale": "无法刷新：{error}",
    "alarms.none": "当前没有报警。",
    "alarms.needName": "请输入您的姓名后再确认。",
    "alarms.failed": "确认失败：{error}",
    "alarms.acknowledge": "确认",
    "alarms.colAlarm": "报警",
    "alarms.colPriority": "优先级",
    "alarms.colState": "状态",
    "alarms.colSince": "开始时间",
    "alarms.state.unacknowledged": "未确认",
    "alarms.state.acknowledged": "已确认",
    "alarms.state.returned": "已恢复，未确认",
    "alarms.state.shelved": "已搁置",
    "alarms.state.suppressed": "已抑制",
    "alarms.state.outOfService": "停用",
    "alarms.priority.critical": "紧急",
    "alarms.priority.high": "高",
    "alarms.priority.medium": "中",
    "alarms.priority.low": "低",
    "connectors.label": "连接",
    "connectors.title": "连接状态",
    "connectors.open": "显示每个连接的状态",
    "connectors.close": "关闭",
    "connectors.summary": "{total} 个连接中 {active} 个正常",
    "connectors.updated": "{summary} · 更新于 {time}",
    "connectors.stale": "无法刷新：{error}",
    "connectors.colName": "连接",
    "connectors.colState": "状态",
    "connectors.colRate": "读取/秒",
    "connectors.colLatency": "读取耗时",
    "connectors.colErrors": "错误",
    "connectors.colReconnects": "重连",
    "connectors.totals": "启动以来读取 {reads} 次，{points} 个点",
    "connectors.lastError": "最近错误",
    "connectors.state.starting": "启动中",
    "connectors.state.active": "正常",
    "connectors.state.idle": "空闲",
    "connectors.state.degraded": "异常",
    "connectors.state.stopped": "已停止",
    "unit.millis": "{n} 毫秒",
    "unit.seconds": "{n} 秒",
    "tree.title": "资产",
    "tree.filter": "筛选标签",
    "tree.all": "全部设备",
    "tree.noMatch": "没有匹配的标签",
    "scope.all": "全部设备",
    "scope.count": "{n} 台设备",
    "scope.countOne": "1 台设备",
    "cards.loading": "正在加载标签…",
    "cards.none": "暂无标签。连接器上报数值后将显示在这里。",
    "cards.loadFailed": "无法加载标签：{error}。正在重试…",
    "cards.stateTitle": "设备状态 — 点击查看趋势",
    "cards.updated": "更新于 {time}",
    "quality.bad": "坏值",
    "quality.uncertain": "不确定",
    "quality.badTitle": "质量为坏（状态码 0x{code}）：该数值不可信",
    "quality.uncertainTitle": "质量不确定（状态码 0x{code}）",
    "value.none": "—",
    "value.on": "开",
    "value.off": "关",
    "state.unknown": "未知",
    "trend.range": "时间范围",
    "trend.close": "关闭趋势",
    "trend.loading": "正在加载…",
    "trend.noData": "此时间范围内没有数值",
    "trend.failed": "无法加载趋势：{error}",
    "trend.noLibrary": "缺少图表库（请在服务器上运行 'make web-assets'）。",
    "trend.raw": "原始值，实时延伸",
    "trend.bucketed": "{bucket} 分桶：平均值及最小–最大范围，实时延伸",
    "trend.bucketedState": "{bucket} 分桶：每桶最高状态码，实时延伸",
    "trend.avg": "平均",
    "trend.min": "最小",
    "trend.max": "最大",
    "trend.value": "数值",
    "legend.running": "运行",
    "legend.idle": "空闲",
    "legend.setup": "调试",
    "legend.down": "停机",
    "legend.unknown": "未知",
  },
};

const FALLBACK = "en";
let current = FALLBACK;

/** Pick the locale: `?lang=` in the URL, then a saved choice, then the browser's languages. */
export function initLocale() {
  const wanted = [
    new URLSearchParams(location.search).get("lang"),
    storageGet("shopfloor.lang"),
    ...(navigator.languages || [navigator.language]),
  ];
  for (const tag of wanted) {
    const found = matchLocale(tag);
    if (found) {
      current = found;
      break;
    }
  }
  document.documentElement.lang = current;
  return current;
}

function matchLocale(tag) {
  if (!tag) return null;
  if (STRINGS[tag]) return tag;
  const lower = tag.toLowerCase();
  // zh, zh-Hans, zh-SG read Simplified Chinese; zh-TW / zh-HK do not get it by default.
  if (lower === "zh" || lower.startsWith("zh-hans") || lower === "zh-sg") return "zh-CN";
  const base = lower.split("-")[0];
  return Object.keys(STRINGS).find((key) => key.toLowerCase() === base) || null;
}

export function locale() {
  return current;
}

/** Translate `key`, replacing `{name}` placeholders from `vars`. */
export function t(key, vars) {
  const text = STRINGS[current]?.[key] ?? STRINGS[FALLBACK][key] ?? key;
  if (!vars) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

/**
 * Fill `data-i18n` (text), `data-i18n-placeholder`, `data-i18n-title` and
 * `data-i18n-aria-label` under `root`.
 */
export function applyI18n(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
    if (el.tagName === "BUTTON") el.title = t(el.dataset.i18nAriaLabel);
  }
}
