// The REST client: one place that knows the API's URLs and turns failures into ApiError.
// Logged in by the session cookie: every change sends the session's CSRF token (the
// readable shopfloor_csrf cookie) as X-CSRF-Token, and a 401 sends the user to the login page.

const CSRF_COOKIE = "shopfloor_csrf";
const CSRF_HEADER = "X-CSRF-Token";

/** The session's CSRF token, from its cookie ("" before a login). */
export function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === CSRF_COOKIE) return decodeURIComponent(rest.join("="));
  }
  return "";
}

export class ApiError extends Error {
  constructor(message, { status = 0, url = "", code = "" } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.url = url;
    this.code = code; // the envelope's `code` (`writes_disabled`, …) when the API sent one
  }
}

/** Encode a tag path segment by segment, so its slashes stay path separators. */
export function encodeTagPath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

export class ApiClient {
  /** @param {string} base the server's root path ("" unless behind a path prefix). */
  constructor(base = "", { timeoutMs = 15000 } = {}) {
    this.base = base.replace(/\/$/, "");
    this.timeoutMs = timeoutMs;
  }

  async get(path, params, { signal } = {}) {
    const url = new URL(this.base + path, location.origin);
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
    }
    const combined = withTimeout(signal, this.timeoutMs);
    let response;
    try {
      response = await fetch(url, { headers: { Accept: "application/json" }, signal: combined });
    } catch (err) {
      if (signal?.aborted) throw err; // the caller cancelled: not an API failure
      throw new ApiError(err.name === "TimeoutError" ? "timed out" : "network error", {
        url: url.pathname,
      });
    }
    if (!response.ok) {
      this.loginIfNeeded(response);
      throw await apiError(response, url);
    }
    return response.json();
  }

  /** A 401 means the session ended (logout, timeout, password change): log in again. */
  loginIfNeeded(response) {
    if (response.status !== 401) return;
    const here = location.pathname + location.search;
    location.assign(`${this.base}/login?next=${encodeURIComponent(here)}`);
  }

  /** Who is logged in: name, role, permissions, sites. */
  me() {
    return this.get("/api/v1/auth/me");
  }

  /** End the session, then show the login page. */
  async logout() {
    await this.post("/api/v1/auth/logout", {}).catch(() => {});
    location.assign(`${this.base}/login`);
  }

  healthz() {
    return this.get("/healthz");
  }

  async tags() {
    return (await this.get("/api/v1/tags")).tags || [];
  }

  async latest() {
    return (await this.get("/api/v1/values/latest")).values || [];
  }

  /** Health rows of the connectors the server runs itself (an empty list when none). */
  async connectors() {
    return (await this.get("/api/v1/connectors")).connectors || [];
  }

  /** Standing alarms (every alarm not normal), most urgent first. */
  alarms() {
    return this.get("/api/v1/alarms");
  }

  /** POST `body` as JSON; an error answer becomes an ApiError naming the problem. */
  post(path, body, { headers } = {}) {
    return this.send("POST", path, body, { headers });
  }

  /** PUT `body` as JSON (a stop's reason, a writes switch); errors as for `post`. */
  put(path, body, { headers } = {}) {
    return this.send("PUT", path, body, { headers });
  }

  /** Send `body` as JSON with `method`; every write of the page goes through here. */
  async send(method, path, body, { headers } = {}) {
    const url = new URL(this.base + path, location.origin);
    let response;
    try {
      response = await fetch(url, {
        method,
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json",
          [CSRF_HEADER]: csrfToken(),
          ...headers,
        },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      throw new ApiError(err.name === "TimeoutError" ? "timed out" : "network error", {
        url: url.pathname,
      });
    }
    if (!response.ok) {
      this.loginIfNeeded(response);
      throw await apiError(response, url);
    }
    return response.status === 204 ? null : response.json();
  }

  // The server takes the acting user from the login; a `user` sent must be that name
  // (else 403), so the journal cannot name someone else.

  /** Acknowledge an alarm as `user`; the journal keeps who did it. */
  acknowledge(alarm, user, comment = "") {
    return this.post("/api/v1/alarms/acknowledge", { alarm, user, comment });
  }

  /** Shelve an alarm for `duration` ("15m", "1h", "8h"; at most 24 h), with the reason. */
  shelve(alarm, user, duration, comment = "") {
    return this.post("/api/v1/alarms/shelve", { alarm, user, duration, comment });
  }

  /** End a shelve now. */
  unshelve(alarm, user, comment = "") {
    return this.post("/api/v1/alarms/unshelve", { alarm, user, comment });
  }

  /** A note on an alarm in the journal (the comment is required). */
  comment(alarm, user, comment) {
    return this.post("/api/v1/alarms/comment", { alarm, user, comment });
  }

  /**
   * Journal entries newest first, filtered by `alarm` (its exact name) and time
   * (`start`/`end`: ISO or relative, "-8h"); page back with `beforeSeq`, the oldest `seq` seen.
   */
  alarmJournal({ alarm, start, end, beforeSeq, limit, signal } = {}) {
    return this.get(
      "/api/v1/alarms/journal",
      { alarm, start, end, before_seq: beforeSeq, order: "desc", limit },
      { signal },
    );
  }

  /** Alarm performance of a period: rate per 10 minutes, floods, bad actors, chattering. */
  alarmKpis({ start, end, signal } = {}) {
    return this.get("/api/v1/alarms/kpis", { start, end }, { signal });
  }

  /**
   * A tag's history. `start` may be ISO or relative ("-15m"); with `bucket` the answer holds
   * the aggregates named in `agg` per bucket instead of raw values.
   */
  series(path, { start, end, bucket, agg, signal } = {}) {
    return this.get(
      `/api/v1/tags/${encodeTagPath(path)}/series`,
      { start, end, bucket, agg },
      { signal },
    );
  }

  /** The websocket URL of the live channel, on the same host and scheme as the page. */
  liveUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${this.base}/api/v1/ws`;
  }
}

function withTimeout(signal, ms) {
  const timeout = AbortSignal.timeout(ms);
  if (!signal) return timeout;
  if (AbortSignal.any) return AbortSignal.any([signal, timeout]);
  // Older tablet browsers: forward both into one controller.
  const controller = new AbortController();
  const forward = (source) => () => controller.abort(source.reason);
  signal.addEventListener("abort", forward(signal), { once: true });
  timeout.addEventListener("abort", forward(timeout), { once: true });
  return controller.signal;
}

async function apiError(response, url) {
  const { text, code } = await errorText(response);
  return new ApiError(text, { status: response.status, url: url.pathname, code });
}

async function errorText(response) {
  // The API answers errors with one JSON envelope; show its message when there is one.
  try {
    const body = await response.json();
    const code = typeof body?.error?.code === "string" ? body.error.code : "";
    const message = body?.error?.message ?? body?.detail ?? body?.message;
    const field = body?.error?.field;
    if (typeof message === "string") {
      // The envelope names the field at fault; say it unless the sentence already does.
      const where = typeof field === "string" && field && !message.includes(field) ? ` (${field})` : "";
      return { text: `${response.status}: ${message}${where}`, code };
    }
  } catch {
    // not JSON: fall through to the status line
  }
  return { text: `${response.status} ${response.statusText}`.trim(), code: "" };
}
