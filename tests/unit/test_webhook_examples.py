"""examples/webhooks/*.toml render the bodies that the receivers' public API documentation describes.

The expected shapes are written here from that documentation, not from the templates:
- Braze, REST API "Track users" (`POST /users/track`) and "Event object": a JSON object with an
  `events` array of at most 75 event objects; an event has `name` (string, required), `time`
  (datetime as an ISO 8601 string, required), one user identifier (here `external_id`, a string)
  and optional `properties` (an object); `Authorization: Bearer <REST API key>`.
- Customer.io, Track API v1 "Track a customer event" (`POST /api/v1/customers/{identifier}/events`):
  one event per request, the person's identifier in the path; the body has `name` (string,
  required), optional `data` (an object) and `timestamp` (integer Unix seconds); HTTP Basic auth.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest

from connectors.webhook import WebhookSinkConfig
from connectors.webhook_body import BatchTemplate, BodyTemplate, UrlTemplate
from engine.actions.trigger import SENT, Trigger
from engine.operators.settings import load_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "webhooks"

BRAZE_USERS_TRACK = {                   # "*": required; the rest optional
    "events": ["array", {"*name": "string", "*time": "iso8601", "external_id": "string", "user_alias": "object",
                         "braze_id": "string", "email": "string", "phone": "string", "app_id": "string",
                         "properties": "object", "_update_existing_only": "boolean"}],
    "attributes": ["array", "object"], "purchases": ["array", "object"],
}
BRAZE_MAX_EVENTS = 75
CUSTOMERIO_TRACK_EVENT = {"*name": "string", "data": "object", "timestamp": "unix_seconds", "type": "string",
                          "id": "string"}

TRIGGER = Trigger(
    trigger_id="5d0c8a3f1b2e4d6f8a9b0c1d2e3f4a5b", rule_id="cart-abandoned", customer_id="c-1029",
    action="cart-reminder", channel="email", status=SENT, reason=None, fired_at="2026-11-20T14:33:11.250Z",
    cause_event_id="e-81723", payload={"sku": "A-77", "value": 129.8},
)


def conforms(value: Any, shape: Any, where: str = "$") -> list[str]:
    """What in `value` the documented `shape` does not allow (an empty list: it conforms)."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {value!r}"]
        allowed = {k.lstrip("*"): s for k, s in shape.items()}
        problems = [f"{where}: missing required {k[1:]!r}" for k in shape if k.startswith("*") and k[1:] not in value]
        problems += [f"{where}: {k!r} is not in the documented object" for k in value if k not in allowed]
        return problems + [p for k, v in value.items() if k in allowed for p in conforms(v, allowed[k], f"{where}.{k}")]
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{where}: expected an array, got {value!r}"]
        return [p for i, v in enumerate(value) for p in conforms(v, shape[1], f"{where}[{i}]")]
    ok = {
        "string": lambda v: isinstance(v, str),
        "object": lambda v: isinstance(v, dict),
        "boolean": lambda v: isinstance(v, bool),
        "iso8601": lambda v: isinstance(v, str) and datetime.fromisoformat(v).tzinfo is not None,
        "unix_seconds": lambda v: isinstance(v, int) and not isinstance(v, bool) and 1e9 < v < 1e10,
    }[shape](value)
    return [] if ok else [f"{where}: expected {shape}, got {value!r}"]


def test_the_shape_checker_refuses_what_the_documentation_does_not_allow() -> None:
    assert conforms({"events": [{"name": "x", "time": "2026-11-20T14:33:11.250Z"}]}, BRAZE_USERS_TRACK) == []
    assert conforms({"events": [{"name": "x"}]}, BRAZE_USERS_TRACK) == ["$.events[0]: missing required 'time'"]
    assert conforms([{"name": "x"}], BRAZE_USERS_TRACK) != []                       # a bare array
    assert conforms({"name": "x", "timestamp": "2026-11-20T14:33:11Z"}, CUSTOMERIO_TRACK_EVENT) != []
    assert conforms({"name": "x", "timestamp": 1795185191250}, CUSTOMERIO_TRACK_EVENT) != []   # milliseconds
    assert conforms({"name": "x", "data": "{}"}, CUSTOMERIO_TRACK_EVENT) != []        # an object as text


def example(name: str) -> WebhookSinkConfig:
    config = load_settings(EXAMPLES / f"{name}.toml", env={}).sinks.webhook
    assert config is not None
    return config


def wire(value: Any) -> Any:
    """What the receiver parses: the body encoded as the sink encodes it, decoded back."""
    return msgspec.json.decode(msgspec.json.encode(value))


def test_braze_example_renders_users_track_events() -> None:
    config = example("braze")
    assert urlsplit(config.url).path == "/users/track" and config.headers["Authorization"].startswith("Bearer ")
    assert config.body is not None and config.batch_body is not None
    assert 1 < config.batch_size <= BRAZE_MAX_EVENTS
    triggers = [msgspec.structs.replace(TRIGGER, customer_id=f"c-{n}") for n in range(config.batch_size)]
    body = BodyTemplate(config.body)
    request = wire(BatchTemplate(config.batch_body).wrap([body.render(t) for t in triggers]))
    assert conforms(request, BRAZE_USERS_TRACK) == []
    assert len(request["events"]) == BRAZE_MAX_EVENTS
    assert request["events"][0] == {"external_id": "c-0", "name": "cart-reminder", "time": "2026-11-20T14:33:11.250Z",
                                    "properties": {"sku": "A-77", "value": 129.8}}


def test_customerio_example_renders_a_track_event_to_the_customers_url() -> None:
    config = example("customerio")
    assert config.batch_size == 1 and config.batch_body is None and config.body is not None
    assert config.headers["Authorization"].startswith("Basic ")
    parts = urlsplit(config.url)
    assert parts.hostname == "track.customer.io"
    odd = msgspec.structs.replace(TRIGGER, customer_id="jane@example.com")
    assert UrlTemplate(parts.path).path(odd) == "/api/v1/customers/jane%40example.com/events"
    request = wire(BodyTemplate(config.body).render(TRIGGER))
    assert conforms(request, CUSTOMERIO_TRACK_EVENT) == []
    assert request["name"] == "cart-reminder" and request["timestamp"] == 1795185191   # 2026-11-20T14:33:11Z
    assert request["data"]["payload"] == {"sku": "A-77", "value": 129.8}


@pytest.mark.parametrize("name", ["braze", "customerio"])
def test_every_key_of_the_examples_is_commented(name: str) -> None:
    lines = (EXAMPLES / f"{name}.toml").read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith(("#", "[", " ", "{", "}")) and not line.startswith('"'):
            above = lines[i - 1] if i else ""
            assert "#" in line or above.startswith("#"), f"{name}.toml:{i + 1}: {line!r} has no comment"
