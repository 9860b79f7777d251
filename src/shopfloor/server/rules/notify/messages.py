"""What each channel kind receives: the documented request of each robot API.

* DingTalk custom robot: ``{"msgtype": "text", "text": {"content": ...}}``; signed robots
  add ``timestamp`` (ms) and ``sign`` = URL-encoded base64 HMAC-SHA256, keyed by the
  secret, of ``"{timestamp}\\n{secret}"`` to the query. Success: ``errcode`` 0.
* WeCom (企业微信) group robot: ``{"msgtype": "text", "text": {"content": ...}}``; the
  key is in the URL. Success: ``errcode`` 0.
* Feishu (飞书) custom bot: ``{"msg_type": "text", "content": {"text": ...}}``; signed
  bots add ``timestamp`` (s) and ``sign`` = base64 HMAC-SHA256 keyed by
  ``"{timestamp}\\n{secret}"`` of an empty message. Success: ``code`` 0.
* webhook: the alarm as JSON (:func:`alarm_document`), for any system of the plant's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from dataclasses import dataclass
from typing import Any

from shopfloor.model.timefmt import format_ns
from shopfloor.server.rules.alarms import Transition
from shopfloor.server.rules.engine import AlarmRule

__all__ = ["Notice", "alarm_document", "http_request", "text_of", "text_request"]

_PRIORITY_ZH = {"critical": "紧急", "high": "高", "medium": "中", "low": "低"}
_EVENT_ZH = {
    "activated": "报警",
    "cleared": "恢复",
    "acknowledged": "已确认",
    "shelved": "已搁置",
    "returned_to_service": "恢复服务",
}


@dataclass(frozen=True, slots=True)
class Notice:
    """One message to send: a transition of an alarm, maybe an escalation of it."""

    transition: Transition
    rule: AlarmRule
    escalation: bool = False


def alarm_document(notice: Notice) -> dict[str, Any]:
    """The alarm as a JSON document (the webhook body)."""
    t, rule = notice.transition, notice.rule
    return {
        "alarm": t.alarm,
        "event": t.event.value,
        "escalation": notice.escalation,
        "state": t.after.value,
        "priority": rule.priority,
        "tag": rule.tag,
        "kind": rule.kind,
        "limit": rule.limit,
        "value": t.value,
        "message": rule.text(t.value if t.value is not None else t.status.value),
        "time": format_ns(t.ts_ns),
        "user": t.user,
        "comment": t.comment,
    }


def text_of(notice: Notice) -> str:
    """A short text for chat robots and e-mail, Chinese first (the plant's people) then
    English: ``[高 high] 报警 activated · message · tag · time``."""
    doc = alarm_document(notice)
    prefix = "【升级 ESCALATED】" if notice.escalation else ""
    priority = f"[{_PRIORITY_ZH.get(doc['priority'], '')} {doc['priority']}]"
    event = f"{_EVENT_ZH.get(doc['event'], '')} {doc['event']}".strip()
    lines = [f"{prefix}{priority} {event}: {doc['message']}", f"{doc['tag']}", f"{doc['time']}"]
    if doc["user"]:
        lines.append(f"{doc['user']}: {doc['comment']}".rstrip(": "))
    return "\n".join(lines)


def http_request(
    kind: str, url: str, notice: Notice, *, secret: str | None, now_ms: int
) -> tuple[str, dict[str, Any]]:
    """The URL and JSON body to POST for ``notice`` on a channel of ``kind``."""
    if kind == "webhook":
        return url, alarm_document(notice)
    return text_request(kind, url, text_of(notice), secret=secret, now_ms=now_ms)


def text_request(
    kind: str, url: str, text: str, *, secret: str | None, now_ms: int
) -> tuple[str, dict[str, Any]]:
    """The URL and JSON body to POST ``text`` to a chat robot of ``kind`` (signed when
    ``secret`` is given): alarms and report summaries alike."""
    if kind in {"dingtalk", "wecom"}:
        body: dict[str, Any] = {"msgtype": "text", "text": {"content": text}}
        if kind == "dingtalk" and secret:
            sign = _b64_hmac(secret.encode(), f"{now_ms}\n{secret}".encode())
            query = urllib.parse.urlencode({"timestamp": now_ms, "sign": sign})
            url = f"{url}{'&' if '?' in url else '?'}{query}"
        return url, body
    if kind == "feishu":
        body = {"msg_type": "text", "content": {"text": text}}
        if secret:
            seconds = now_ms // 1000
            body = {
                "timestamp": str(seconds),
                "sign": _b64_hmac(f"{seconds}\n{secret}".encode(), b""),
                **body,
            }
        return url, body
    raise ValueError(f"not an HTTP channel kind: {kind}")


def robot_error(kind: str, answer: Any) -> str | None:
    """What a robot's JSON answer says went wrong, or None for success."""
    if kind in {"dingtalk", "wecom"}:
        code = answer.get("errcode") if isinstance(answer, dict) else None
        return None if code == 0 else f"errcode {code}: {answer.get('errmsg', '')}"
    if kind == "feishu":
        code = answer.get("code", answer.get("StatusCode")) if isinstance(answer, dict) else None
        return None if code == 0 else f"code {code}: {answer.get('msg', '')}"
    return None


def _b64_hmac(key: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
