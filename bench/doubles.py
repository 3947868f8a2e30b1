"""`python -m bench.doubles DIR [CPS MPS]`: the Twilio and FCM doubles for the benchmark, in a process of
their own (so their work is not the daemon's), answering at once: no call flow, no status callbacks.
With CPS and MPS, Twilio's own queues instead (calls per second for the account, texts per second
for the sender), with the call flow and signed status callbacks: the storm at 1 call/s.

Writes DIR/doubles.json (their URLs, the Twilio account, the FCM service-account file) when ready,
and serves what they received at `GET /_bench/received`: one [channel, incident, page key or leg,
wall time] per request, the time being when the double's handler had the request in hand; and at
`GET /_bench/twilio` what became of each call ([incident, page key, state, placed wall time or null])
and text ([incident, page key, status, error code]).
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


async def main(folder: Path, cps: float | None = None, mps: float | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with TwilioDouble() as twilio, FcmDouble() as fcm:
        twilio.quiet = cps is None
        twilio.cps, twilio.mps = cps, mps

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

        async def fates(_: web.Request) -> web.Response:
            calls = []
            for c in twilio.calls:
                q = _query(c.form["Url"])
                calls.append([q.get("incident", ""), q.get("key", ""), c.state, None if c.placed is None else c.received + c.placed - c.created])
            texts = []
            for m in twilio.messages:
                q = _query(m.form.get("StatusCallback", ""))
                texts.append([q.get("incident", ""), q.get("key", ""), m.status, m.error_code])
            return web.json_response({"calls": calls, "texts": texts})

        app = web.Application()
        app.router.add_get("/_bench/received", received)
        app.router.add_get("/_bench/twilio", fates)
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
    rates = [float(a) for a in sys.argv[2:4]]
    asyncio.run(main(Path(sys.argv[1]), *rates))
