#!/usr/bin/env python3
"""Runs the README's first set-up command and its worked example exactly as written, and checks
that every output the README shows is what the commands print.

The README marks what to run with HTML comments (invisible when rendered) just before a fenced
block:

  <!-- readme: serve -->     the block starts the service; it runs in the background until the
                              end, on the default ports (which must be free), from the repository
                              root, and must answer /readyz
  <!-- readme: background --> the block starts a helper (a second service, a fake of Argyle's
                              API) that runs in the background until the end; it must not exit
                              before then (the blocks after it wait for it themselves)
  <!-- readme: run -->       the block runs with bash from the repository root and must exit 0
  <!-- readme: stream N -->  the block runs for N seconds and is then interrupted (a stream)
  <!-- readme: output -->    the block is what the previous run/stream block printed; compared
                              line by line after masking what differs from run to run (times)
  <!-- readme: output (ids vary) -->
                              the same, with UUIDs masked too (ids made from times or at random)

Files the example creates in the repository root are removed afterwards; an existing
`readiness.db` is set aside for the run and put back. Exit status 0 when everything matched.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = re.compile(
    r"^\s*<!-- readme: (serve|background|run|stream \d+|output(?: \(ids vary\))?) -->\s*$")
FENCE = re.compile(r"^(\s*)```")
# RFC 3339 times as grpcurl and the service print them.
TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PORTS = [("HTTP", 8080), ("gRPC", 50051), ("the report pipeline example's HTTP", 8081),
         ("the report pipeline example's gRPC", 50052), ("the fake Argyle API", 8090)]
DB_FILES = ["readiness.db", "readiness.db-wal", "readiness.db-shm"]


def blocks(text):
    """(marker, code) for every marked fenced block, in order."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        mark = MARK.match(lines[i])
        if not mark:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        opening = FENCE.match(lines[j]) if j < len(lines) else None
        if not opening:
            sys.exit(f"README line {i + 1}: a readme marker must be followed by a code block")
        indent = len(opening.group(1))
        body, k = [], j + 1
        while not FENCE.match(lines[k]):
            body.append(lines[k][indent:])
            k += 1
        found.append((mark.group(1), "\n".join(body) + "\n", i + 1))
        i = k + 1
    return found


def mask(text, ids=False):
    lines = [TIME.sub("<time>", line.rstrip()) for line in text.strip("\n").splitlines()]
    return [UUID.sub("<uuid>", line) for line in lines] if ids else lines


def port_free(port, seconds=70):
    """Whether the port can be bound within `seconds`: an earlier outgoing connection that got
    it as its local port holds it for TIME_WAIT (60 s on Linux), a listener until it stops."""
    deadline = time.time() + seconds
    while True:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
                return True
            except OSError:
                if time.time() >= deadline:
                    return False
        time.sleep(1)


def wait_ready(server, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if server.poll() is not None:
            return False
        try:
            with urllib.request.urlopen("http://127.0.0.1:8080/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def default_sigint():
    """In a child before exec: SIGINT back to its default, so that Ctrl-C (our SIGINT) reaches
    the block even when this runner was started with SIGINT ignored (a background job of a
    non-interactive shell is), which every child would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(code, seconds=None):
    """Runs a block with bash; returns (status, stdout, stderr). With `seconds`, interrupts it
    then (SIGINT, as Ctrl-C would) and reports status 0 if it was still running."""
    process = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", code],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=default_sigint,
    )
    try:
        out, err = process.communicate(timeout=seconds if seconds else 600)
        return process.returncode, out, err
    except subprocess.TimeoutExpired:
        if not seconds:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            return 124, out, err
        os.killpg(process.pid, signal.SIGINT)
        try:
            out, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            # Still running 10 s after Ctrl-C: a stuck block must not hang the run.
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            return 124, out, err
        return 0, out, err


def main():
    with open(os.path.join(ROOT, "README.md")) as readme:
        steps = blocks(readme.read())
    if not steps or steps[0][0] != "serve":
        sys.exit("the README's first marked block must start the service (readme: serve)")
    for name, port in PORTS:
        if not port_free(port):
            subprocess.run(["ss", "-tanp", f"sport = :{port}"])
            sys.exit(f"port {port} ({name}) is taken: the README's commands use the default ports; "
                     "stop whatever listens there and run again")

    before = set(os.listdir(ROOT))
    aside = tempfile.mkdtemp(prefix="readme-db-")
    for name in DB_FILES:
        if os.path.exists(os.path.join(ROOT, name)):
            os.rename(os.path.join(ROOT, name), os.path.join(aside, name))

    log = tempfile.NamedTemporaryFile(prefix="readme-serve-", suffix=".log", delete=False)
    server = subprocess.Popen(["bash", "-c", steps[0][1]], cwd=ROOT, stdout=log, stderr=log,
                              start_new_session=True)
    failures, last, helpers = [], None, []
    try:
        print(f"$ {steps[0][1].strip()}   (README line {steps[0][2]}, in the background)")
        if not wait_ready(server, 900):
            log.flush()
            sys.exit("the service from the README's first command did not become ready:\n"
                     + open(log.name).read()[-4000:])
        for kind, code, line in steps[1:]:
            if kind.startswith("output"):
                if last is None:
                    failures.append(f"README line {line}: an output block with no command before it")
                    continue
                ids = kind != "output"
                expected, actual = mask(code, ids), mask(last, ids)
                if expected != actual:
                    failures.append(
                        f"README line {line}: the output differs (times masked)\n"
                        + "--- README\n" + "\n".join(expected) + "\n+++ actual\n" + "\n".join(actual))
                last = None
                continue
            if kind == "background":
                print(f"$ {code.strip()}   (README line {line}, in the background)")
                helper_log = tempfile.NamedTemporaryFile(
                    prefix="readme-helper-", suffix=".log", delete=False)
                helper = subprocess.Popen(["bash", "-c", code], cwd=ROOT, stdout=helper_log,
                                          stderr=helper_log, start_new_session=True,
                                          preexec_fn=default_sigint)
                helpers.append((helper, helper_log.name, line))
                last = None
                continue
            seconds = int(kind.split()[1]) if kind.startswith("stream") else None
            print(f"$ {code.strip()}   (README line {line})")
            status, out, err = run(code, seconds)
            sys.stdout.write(out)
            if status != 0:
                failures.append(f"README line {line}: exited {status}\n{err[-2000:]}")
            last = out
    finally:
        for helper, helper_log, line in helpers:
            if helper.poll() is not None:
                failures.append(f"README line {line}: the background block exited "
                                f"{helper.returncode} early; log: {helper_log}")
                continue
            os.killpg(helper.pid, signal.SIGINT)
            try:
                helper.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(helper.pid, signal.SIGKILL)
                helper.wait()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        for name in set(os.listdir(ROOT)) - before:
            path = os.path.join(ROOT, name)
            if os.path.isfile(path):
                os.remove(path)
        for name in os.listdir(aside):
            os.rename(os.path.join(aside, name), os.path.join(ROOT, name))
        os.rmdir(aside)
    if server.returncode != 0:
        failures.append(f"the service exited {server.returncode} after SIGTERM; log: {log.name}")
    if failures:
        print("\n\n".join(failures), file=sys.stderr)
        sys.exit(1)
    outputs = sum(k.startswith("output") for k, _, _ in steps)
    print(f"the README's commands ran as written; {outputs} outputs matched")


if __name__ == "__main__":
    main()
