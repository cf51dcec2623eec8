#!/usr/bin/env python3
"""A SOC's alert receiver for the lab: a real HTTP(S) server that verifies each alert's
X-Zone-Agent-Signature (HMAC-SHA256 of the body) and, with --ocsf, validates the body as an
OCSF Detection Finding (py-ocsf-models). Every request is appended to --out as one JSON line:
{"path", "signature_ok", "valid", "error", "body"}.

Outage modes for delivery tests: --fail-first N answers HTTP 500 to the first N requests;
--hang-first N holds the first N requests for --hang-seconds before answering 500; a file
named by --down-while-exists makes every request fail with 503 while it exists.
"""
import argparse
import hashlib
import hmac
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, help="ADDR:PORT")
    ap.add_argument("--out", required=True)
    ap.add_argument("--secret-file")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--client-ca", help="require a client certificate signed by this CA")
    ap.add_argument("--ocsf", action="store_true")
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--hang-first", type=int, default=0)
    ap.add_argument("--hang-seconds", type=float, default=5.0)
    ap.add_argument("--down-while-exists")
    args = ap.parse_args()

    secret = open(args.secret_file, "rb").read().strip() if args.secret_file else None
    model = None
    if args.ocsf:
        from py_ocsf_models.events.findings.detection_finding import DetectionFinding

        model = DetectionFinding
    lock = threading.Lock()
    state = {"requests": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                state["requests"] += 1
                n = state["requests"]
            if args.down_while_exists and os.path.exists(args.down_while_exists):
                return self.answer(503)
            if n <= args.hang_first:
                time.sleep(args.hang_seconds)
                return self.answer(500)
            if n <= args.hang_first + args.fail_first:
                return self.answer(500)
            rec = {"path": self.path, "signature_ok": None, "valid": True, "error": None}
            if secret is not None:
                want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
                got = self.headers.get("X-Zone-Agent-Signature", "")
                rec["signature_ok"] = hmac.compare_digest(want, got)
            try:
                rec["body"] = json.loads(body)
                if model is not None:
                    model.model_validate(rec["body"])
            except Exception as e:  # a body a SOC could not parse
                rec["valid"] = False
                rec["error"] = str(e)[:500]
                rec["body"] = body.decode("utf-8", "replace")
            with lock:
                with open(args.out, "a") as f:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            ok = rec["valid"] and rec["signature_ok"] is not False
            self.answer(200 if ok else 400)

        def answer(self, code):
            self.send_response(code)
            self.send_header("content-length", "0")
            self.end_headers()

    host, port = args.listen.rsplit(":", 1)
    srv = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(args.client_ca)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("listening", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
