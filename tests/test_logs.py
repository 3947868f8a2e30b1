"""The logs of a full walk with real channels: JSON lines, incident ids, no phone number, no secret."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re

from escalator import logs
from tests.harness import eventually, publish
from tests.test_engine import ladders, nats_server, urgent  # noqa: F401 - fixtures
from tests.test_twilio import ALICE, BOB, code_in, sms_url, stack

PHONE = re.compile(r"\+[1-9]\d{7,14}")


def test_a_full_walk_logs_json_with_incident_ids_and_no_phone_or_secret(ladders, db_url, nats_server, tmp_path) -> None:
    out = io.StringIO()
    handler = logs.handler("json", out)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            double.answer[ALICE] = "voicemail"
            double.answer[BOB] = "2"
            push.fail["alice"] = "UNREGISTERED"
            await publish(nats_server.url, "incidents.urgent", urgent("log-1", "slow", caller="+14155550123"))
            await eventually(lambda: any(c.to == BOB for c in double.calls), timeout=20)  # voicemail, then the window
            await eventually(lambda: len(double.messages) >= 3)
            code = code_in(double.messages[-1].body)
            await double.post(sms_url(daemon), {"From": "+14155550103", "Body": f"ACK {code}"})  # right code, wrong number
            await double.post(sms_url(daemon), {"From": double.messages[-1].to, "Body": f"ACK {code}"})
            await eventually(lambda: daemon.store.get("log-1").status == "acknowledged", timeout=20)
            await publish(nats_server.url, "incidents.urgent", b"{broken")
            await asyncio.sleep(0.5)
            key = (tmp_path / "data" / "push-signing.key").read_text()
            sample = daemon.metrics.registry.get_sample_value
            return double.auth_token, key, sample("escalator_time_to_acknowledge_seconds_count"), sample("escalator_ingest_lag_seconds_count")

    try:
        token, key, acks_timed, lags = asyncio.run(scenario())
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = out.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) > 20
    assert PHONE.findall(text) == []  # every number masked, including the caller's
    assert token not in text and key not in text
    about_incidents = [
        line for line in lines
        if line["logger"].startswith(("escalator.channels", "escalator.webhooks")) or "log-1" in line["message"]
    ]
    assert len(about_incidents) >= 5
    assert all(line.get("incident_id") == "log-1" for line in about_incidents), [
        line for line in about_incidents if line.get("incident_id") != "log-1"
    ]
    assert any("+1415*****01" in line["message"] for line in lines)
    assert any(line["logger"] == "escalator.ingest" and "invalid JSON" in line["message"] for line in lines)
    assert acks_timed == 1 and lags >= 2
