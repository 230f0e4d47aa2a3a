"""A real SMTP server for otpgate's tests: Debian's aiosmtpd on a loopback port.

Every message it accepts is written whole into OUT as <arrival ns>-<n>.eml. A recipient whose
address starts with "reject" gets a permanent 550; one that starts with "busyN-" gets a
451 the first N times it is given. With --tls-cert/--tls-key it offers STARTTLS and
requires it; with --user/--password it requires AUTH. With --drop N it keeps the first
N messages and then drops the connection before saying 250. With --hold PATH it holds
every RCPT while PATH exists.
It prints "ready PORT" once it listens and serves until killed.
"""

import argparse
import asyncio
import collections
import itertools
import os
import pathlib
import re
import signal
import ssl
import sys
import time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    def __init__(self, out, drop, hold):
        self.out = out
        self.count = itertools.count()
        self.drop = drop
        self.hold = hold
        self.tried = collections.Counter()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        while self.hold and self.hold.exists():
            await asyncio.sleep(0.01)
        if address.startswith("reject"):
            return "550 5.1.1 No such user here"
        busy = re.match(r"busy(\d+)-", address)
        if busy:
            self.tried[address] += 1
            if self.tried[address] <= int(busy.group(1)):
                return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        # Named by arrival time, so that a restarted server adds rather than overwrites.
        path = self.out / f"{time.time_ns()}-{next(self.count)}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(envelope.original_content or envelope.content)
        os.rename(tmp, path)
        if self.drop > 0:
            # Kept, but the sender never hears so: it will send it again.
            self.drop -= 1
            server.transport.abort()
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--drop", type=int, default=0)
    parser.add_argument("--hold", type=pathlib.Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    kwargs = {}
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        kwargs.update(tls_context=context, require_starttls=True)
    if args.user:
        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == args.user
                and auth_data.password.decode() == args.password
            )
            # handled=False: aiosmtpd itself answers 535 to a failure.
            return AuthResult(success=ok, handled=False)

        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=bool(args.tls_cert),
        )

    loop = asyncio.new_event_loop()
    handler = Handler(args.out, args.drop, args.hold)
    # Port 0 takes a free port, said in the "ready" line: no port is handed over.
    server = loop.run_until_complete(
        loop.create_server(
            lambda: SMTP(handler, hostname="localhost", loop=loop, **kwargs),
            host="127.0.0.1",
            port=args.port,
        )
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, loop.stop)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    loop.run_forever()
    server.close()

if __name__ == "__main__":
    sys.exit(main())
