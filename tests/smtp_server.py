"""A real SMTP server for otpgate's tests: Debian's aiosmtpd on a loopback port.

Every message it accepts is written whole into OUT as <arrival ns>-<n>.eml. A recipient whose
address starts with "reject" gets a permanent 550. With --tls-cert/--tls-key it
offers STARTTLS and requires it; with --user/--password it requires AUTH.
It prints "ready" once it listens and serves until killed.
"""

import argparse
import itertools
import os
import pathlib
import signal
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, out):
        self.out = out
        self.count = itertools.count()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        # Named by arrival time, so that a restarted server adds rather than overwrites.
        path = self.out / f"{time.time_ns()}-{next(self.count)}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(envelope.original_content or envelope.content)
        os.rename(tmp, path)
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--user")
    parser.add_argument("--password")
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
            return AuthResult(success=ok)

        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=bool(args.tls_cert),
        )

    # Only the main thread takes these, in sigwait below.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    controller = Controller(
        Handler(args.out), hostname="127.0.0.1", port=args.port, server_hostname="localhost", **kwargs
    )
    controller.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


if __name__ == "__main__":
    sys.exit(main())
