"""A real HTTPS server for vigil's webhook tests: Python's http.server
with ssl on 127.0.0.1, standing for PagerDuty's Events API, a Slack
incoming webhook or any JSON receiver.

It answers each POST with the next entry of its script (the last one
repeats); an entry is STATUS or STATUS:RETRY_AFTER_SECONDS, and the body
of a non-2xx answer is "error line for STATUS\nsecond line". Every request
is printed on stdout as one JSON line (path, headers, body), after the
line {"listening": PORT}.

Usage: https_hook.py --port N --cert C --key K --script 503:1,202
"""

import argparse
import http.server
import json
import ssl
import sys
import threading


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--script", default="202")
    args = ap.parse_args()
    script = args.script.split(",")
    lock = threading.Lock()
    count = [0]

    class Hook(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode("utf-8", "replace")
            with lock:
                entry = script[min(count[0], len(script) - 1)]
                count[0] += 1
            status, _, retry_after = entry.partition(":")
            status = int(status)
            emit({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                  "body": body, "answered": status})
            if 200 <= status < 300:
                payload = b'{"status":"success","message":"Event processed"}'
            else:
                payload = ("error line for %d\nsecond line\n" % status).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            if retry_after:
                self.send_header("Retry-After", retry_after)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Hook)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    emit({"listening": args.port})
    server.serve_forever()


if __name__ == "__main__":
    main()
