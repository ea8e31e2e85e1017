"""A loopback SMTP sink for the notification tests (needs `pip install aiosmtpd`).

Usage: python3 smtp_sink.py FOLDER
Listens on 127.0.0.1 on a port the OS picks, prints "smtp-sink listening on PORT", and
writes each received message to FOLDER as NNNNN.json with its envelope, headers and the
decoded text and HTML parts, so tests can assert on content without parsing MIME.
"""

import asyncio
import email
import email.policy
import json
import os
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, folder):
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = {"text/plain": None, "text/html": None}
        for part in msg.walk():
            if part.get_content_type() in parts and parts[part.get_content_type()] is None:
                parts[part.get_content_type()] = part.get_content()
        self.count += 1
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(msg["Subject"]),
            "from": str(msg["From"]),
            "message_id": str(msg["Message-ID"]),
            "text": parts["text/plain"],
            "html": parts["text/html"],
        }
        path = os.path.join(self.folder, f"{self.count:05d}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.rename(path + ".tmp", path)
        return "250 Message accepted"


async def main():
    sink = Sink(sys.argv[1])
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="localhost"), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    print(f"smtp-sink listening on {port}", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
