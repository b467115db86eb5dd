"""Optional Home Assistant MQTT discovery: one sensor per caption language, available while the room is online.

The sensor's state is the latest final caption, cut to Home Assistant's 255-character state limit by the
value template (partials keep the previous state).
"""

from __future__ import annotations

import json

from appliance.bus.schema import HA_STATE_CHARS, STATUS_OFFLINE, STATUS_ONLINE, Topics

DISCOVERY_PREFIX = "homeassistant"


def messages(topics: Topics, detail: dict, *, discovery_prefix: str = DISCOVERY_PREFIX) -> list[tuple[str, str]]:
    """(topic, retained JSON config) for each language in detail["languages"]."""
    room = topics.room
    node = f"{topics.prefix}_{room}".replace("/", "_")
    device = {"identifiers": [node], "name": f"Interpretation {detail.get('name') or room}",
              "manufacturer": "appliance", "sw_version": str(detail.get("version", ""))}
    out = []
    for lang in detail.get("languages") or []:
        uid = f"{node}_captions_{lang}"
        config = {
            "name": f"Captions {lang}",
            "unique_id": uid,
            "object_id": uid,
            "state_topic": topics.captions(lang),
            "value_template": ("{% if value_json.final %}{{ value_json.text[:" + str(HA_STATE_CHARS) + "] }}"
                               "{% else %}{{ this.state }}{% endif %}"),
            "availability_topic": topics.status,
            "payload_available": STATUS_ONLINE,
            "payload_not_available": STATUS_OFFLINE,
            "icon": "mdi:closed-caption",
            "device": device,
        }
        out.append((f"{discovery_prefix}/sensor/{uid}/config", json.dumps(config, ensure_ascii=False)))
    return out
