"""The generic templates: "New secure message" / "Open the app to view.", ids only, no message content.

`mutable-content: 1` lets an iOS notification service extension fetch and decrypt the message on the
device (the "fetch content from server" pattern); Android does the same from the data payload.
"""
from __future__ import annotations

GENERIC_TITLE = "New secure message"
GENERIC_BODY = "Open the app to view."

_APNS_PAYLOAD = """{
  "aps": {
    "alert": {"title": "New secure message", "body": "Open the app to view."},
    "badge": {{ unread_count }},
    "sound": "default",
    "mutable-content": 1,
    "category": "stream.chat"
  },
  "stream": {
    "sender": "stream.chat",
    "type": "message.new",
    "version": "v2",
    "id": "{{ message.id }}",
    "cid": "{{ channel.cid }}"
  }
}"""

DEFAULT_TEMPLATES: dict[tuple[str, str], str] = {
    ("apn", "notification"): _APNS_PAYLOAD,
    ("firebase", "notification"): """{
  "title": "New secure message",
  "body": "Open the app to view.",
  "sound": "default"
}""",
    ("firebase", "data"): """{
  "sender": "stream.chat",
  "type": "message.new",
  "version": "v2",
  "id": "{{ message.id }}",
  "cid": "{{ channel.cid }}",
  "channel_type": "{{ channel.type }}",
  "channel_id": "{{ channel.id }}",
  "receiver_id": "{{ receiver.id }}"
}""",
    ("firebase", "apn"): _APNS_PAYLOAD,
}
