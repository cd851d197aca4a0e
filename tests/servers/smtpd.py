"""A real SMTP server for vigil's email handler tests: aiosmtpd (Debian's
python3-aiosmtpd) with STARTTLS or implicit TLS and AUTH, as a mail
provider's submission port would be.

Every message it accepts is parsed with Python's email package (strict
policy) and printed on stdout as one JSON line: envelope, headers, the
decoded text body and the parser's defects, so the test checks that the
mail is well formed, not only that bytes arrived. Every AUTH attempt is
printed too ({"auth": user, "ok": bool}). The line "listening PORT" comes
first ({"listening": PORT}), once the server accepts connections.

Usage: smtpd.py --port N --tls starttls|tls|off --cert C --key K
                [--user U --password-file P]
"""

import argparse
import asyncio  # noqa: F401  (aiosmtpd's runtime)
import email
import email.policy
import json
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Handler:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.strict)
        body = msg.get_body(preferencelist=("plain",))
        emit({
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "headers": {k: str(v) for k, v in msg.items()},
            "content_type": msg.get_content_type(),
            "body": body.get_content() if body is not None else None,
            "defects": [repr(d) for d in msg.defects] + (
                [repr(d) for d in body.defects] if body is not None else []),
            # STARTTLS sets session.ssl; implicit TLS shows on the transport.
            "tls": (session.ssl is not None
                    or server.transport.get_extra_info("ssl_object") is not None),
            "authenticated": bool(session.authenticated),
        })
        return "250 OK queued"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls", choices=["starttls", "tls", "off"], required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--user")
    ap.add_argument("--password-file")
    args = ap.parse_args()

    context = None
    if args.tls != "off":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    kwargs = {}
    if args.user:
        with open(args.password_file) as f:
            password = f.read().rstrip("\r\n")

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword)
                  and auth_data.login.decode() == args.user
                  and auth_data.password.decode() == password)
            emit({"auth": auth_data.login.decode() if isinstance(auth_data, LoginPassword) else None,
                  "ok": ok})
            # handled=False: aiosmtpd answers 535 itself.
            return AuthResult(success=ok, handled=False)

        kwargs.update(auth_required=True, authenticator=authenticator,
                      auth_require_tls=(args.tls == "starttls"))
    if args.tls == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)

    controller = Controller(
        Handler(), hostname="127.0.0.1", port=args.port,
        ssl_context=context if args.tls == "tls" else None,
        server_hostname="localhost",
        **kwargs)
    controller.start()
    emit({"listening": args.port})
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
