"""Alarm notifications: robots of DingTalk, WeCom and Feishu, webhooks and e-mail."""
