"""`python -m bench.doubles DIR`: the Twilio and FCM doubles for the benchmark, in a process of their
own (so their work is not the daemon's), answering at once: no call flow, no status callbacks.

Writes DIR/doubles.json (their URLs, the Twilio account, the FCM service-account file) when ready,
and serves what they received at `GET /_bench/received`: one [channel, incident, page key or leg,
wall time] per request, the time being when the double's handler had the request in hand.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from tests.fcm_double import FcmDouble
from tests.harness import free_port
from tests.twilio_double import TwilioDouble


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def main(folder: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with TwilioDouble() as twilio, FcmDouble() as fcm:
        twilio.quiet = True

        async def received(_: web.Request) -> web.Response:
            out = []
            for call in twilio.calls:
                q = _query(call.form["Url"])
                out.append(["voice", q.get("incident", ""), q.get("key", ""), call.received])
            for message in twilio.messages:
                q = _query(message.form.get("StatusCallback", ""))
                out.append(["sms", q.get("incident", ""), q.get("key", ""), message.received])
            for message, arrived in zip(fcm.messages, fcm.arrivals):
                data = message.get("data", {})
                out.append(["push", data.get("incident_id", ""), data.get("leg", ""), arrived])
            return web.json_response(out)

        app = web.Application()
        app.router.add_get("/_bench/received", received)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        (folder / "doubles.json").write_text(json.dumps({
            "twilio_url": twilio.url, "twilio_sid": twilio.account_sid, "twilio_token": twilio.auth_token,
            "fcm_url": fcm.url, "fcm_credentials": str(fcm.service_account(folder)), "received_url": f"http://127.0.0.1:{port}",
        }))
        await stop.wait()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
