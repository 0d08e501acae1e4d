"""A Python client of readiness.v1, as another team would write it.

Generates stubs from proto/ at run time (grpcio-tools), starts `readiness serve` on a temporary
SQLite file and free ports, sends signed webhooks, consumes StreamReportEvents until caught up,
disconnects, sends more, and resumes from a saved cursor: every report exactly once, in order.

Usage: python tests/python/stream_client.py path/to/readiness
"""

import hashlib
import hmac
import importlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import grpc
from grpc_tools import protoc
import grpc_tools

ROOT = pathlib.Path(__file__).resolve().parents[2]
SECRET = "python-client-secret"


def generate_stubs(out_dir):
    out_dir.mkdir(parents=True)
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    status = protoc.main([
        "grpc_tools.protoc",
        f"-I{ROOT / 'proto'}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(ROOT / "proto/readiness/v1/readiness.proto"),
    ])
    if status != 0:
        raise SystemExit(f"protoc failed with {status}")
    sys.path.insert(0, str(out_dir))
    return (importlib.import_module("readiness.v1.readiness_pb2"),
            importlib.import_module("readiness.v1.readiness_pb2_grpc"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deliver(http, body):
    raw = json.dumps(body).encode()
    signature = hmac.new(SECRET.encode(), raw, hashlib.sha512).hexdigest()
    request = urllib.request.Request(
        f"http://{http}/webhooks/argyle", data=raw, method="POST",
        headers={"Content-Type": "application/json", "X-Argyle-Signature": signature})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, response.status


def generated(user, report_id):
    return {"event": "reports.generated", "name": "python",
            "data": {"user": user, "type": "voie", "report_id": report_id}}


def read_until_caught_up(stream, pb):
    events = []
    for message in stream:
        kind = message.WhichOneof("message")
        if kind == "report_generated":
            events.append(message.report_generated)
        elif kind == "caught_up":
            return events, message.caught_up.cursor
    raise AssertionError("stream ended before the caught-up marker")


def main():
    binary = sys.argv[1]
    results = []

    def check(name, condition, detail=""):
        results.append(condition)
        print(f"{'ok  ' if condition else 'FAIL'} {name} {detail}".rstrip(), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        pb, pb_grpc = generate_stubs(pathlib.Path(tmp) / "stubs")
        http, grpc_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        env = dict(os.environ,
                   READINESS_DATABASE_URL=f"sqlite://{tmp}/readiness.db?mode=rwc",
                   READINESS_HTTP_ADDR=http, READINESS_GRPC_ADDR=grpc_addr,
                   READINESS_ARGYLE_SECRETS=SECRET, RUST_LOG="warn")
        server = subprocess.Popen([binary, "serve"], env=env)
        try:
            channel = grpc.insecure_channel(grpc_addr)
            grpc.channel_ready_future(channel).result(timeout=30)
            reports = pb_grpc.ReportServiceStub(channel)

            user = str(uuid.uuid4())
            ids = [f"py-report-{i}" for i in range(5)]
            for report_id in ids[:3]:
                deliver(http, generated(user, report_id))

            request = pb.StreamReportEventsRequest(
                start=pb.START_POSITION_BEGINNING, user_id=user)
            stream = reports.StreamReportEvents(request, timeout=30)
            first, marker = read_until_caught_up(stream, pb)
            stream.cancel()
            check("catch-up delivers the stored reports in order",
                  [e.report.argyle_report_id for e in first] == ids[:3])
            check("the caught-up marker carries the last cursor", marker == first[-1].cursor)

            saved = first[1].cursor
            for report_id in ids[3:]:
                deliver(http, generated(user, report_id))
            resumed = reports.StreamReportEvents(
                pb.StreamReportEventsRequest(after_cursor=saved, user_id=user), timeout=30)
            rest, _ = read_until_caught_up(resumed, pb)
            resumed.cancel()
            seen = [e.report.argyle_report_id for e in first[:2] + rest]
            check("resuming from a cursor gives every report exactly once", seen == ids, str(seen))

            live = reports.StreamReportEvents(
                pb.StreamReportEventsRequest(start=pb.START_POSITION_NOW, user_id=user), timeout=30)
            read_until_caught_up(live, pb)
            deliver(http, generated(user, "py-live"))
            message = next(live)
            live.cancel()
            check("a live event arrives after the marker",
                  message.report_generated.report.argyle_report_id == "py-live")

            try:
                next(reports.StreamReportEvents(
                    pb.StreamReportEventsRequest(after_cursor="not-a-cursor"), timeout=10))
                check("a bad cursor is refused", False)
            except grpc.RpcError as error:
                check("a bad cursor is refused", error.code() == grpc.StatusCode.INVALID_ARGUMENT)
            channel.close()
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=30)
        check("the server exits cleanly on SIGTERM", code == 0, f"(exit {code})")

    passed = sum(results)
    print(f"python-client: {passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
