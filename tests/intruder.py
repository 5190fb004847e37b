"""What a hostile local user runs against a cluster (started by tests as another user).

intruder.py pose ADDRESS SERVER_KEY|- NODE PATH SECONDS
    For SECONDS, connect to a node's listening socket again and again as node NODE — a
    plaintext DEALER with routing id NODE, and (given the server's public key) a CURVE
    DEALER with a key of its own — and send what a member could: a Tell of "intruder" to
    PATH, and a Halt of PATH. Prints a JSON summary.
intruder.py poll STOP_FILE BASE PATH...
    Until STOP_FILE exists, try to list or read each PATH; print as JSON how many tries
    there were, which ones succeeded, and whether BASE could be listed (it can: the test's
    own directory is open to everyone, so the check means something).
"""

from __future__ import annotations

import json
import os
import sys
import time

import zmq


def pose(address: str, server_key: str, node: str, path: str, seconds: float) -> dict[str, object]:
    from flotilla.nodes.cluster.codec import Codec, Halt, Tell

    codec = Codec(1 << 20)
    body, typed = codec.encode_body("intruder")
    frames = [codec.encode(Tell(path, body, typed)), codec.encode(Halt(path, "urn:intruder", 0.0))]
    context = zmq.Context()
    sent = attempts = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sockets = []
            for curve in (False, True) if server_key != "-" else (False,):
                for routing_id in (node.encode(), f"{node}/intruder".encode()):
                    sock = context.socket(zmq.DEALER)
                    sock.linger = 0
                    sock.routing_id = routing_id
                    if curve:
                        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
                        sock.curve_serverkey = server_key.encode()
                    sock.connect(address)
                    sockets.append(sock)
                    attempts += 1
            end = min(deadline, time.monotonic() + 0.3)
            while time.monotonic() < end:
                for sock in sockets:
                    try:
                        sock.send_multipart(frames, zmq.NOBLOCK)
                        sent += 1
                    except zmq.Again:
                        pass
                time.sleep(0.02)
            for sock in sockets:
                sock.close(0)
    finally:
        context.term()
    return {"attempts": attempts, "sent": sent}


def poll(stop_file: str, base: str, paths: list[str]) -> dict[str, object]:
    tries = 0
    base_listed = False
    succeeded: dict[str, int] = {}
    while not os.path.exists(stop_file):
        tries += 1
        try:
            os.listdir(base)
            base_listed = True
        except OSError:
            pass
        for path in paths:
            try:
                if os.path.isdir(path):
                    os.listdir(path)
                else:
                    with open(path, "rb") as f:
                        f.read(1)
            except OSError:
                continue
            succeeded[path] = succeeded.get(path, 0) + 1
        if tries == 1:
            print("polling", flush=True)
        time.sleep(0.001)
    return {"tries": tries, "base_listed": base_listed, "succeeded": succeeded}


def main(argv: list[str]) -> int:
    if argv[0] == "pose":
        print(json.dumps(pose(argv[1], argv[2], argv[3], argv[4], float(argv[5]))))
    elif argv[0] == "poll":
        print(json.dumps(poll(argv[1], argv[2], argv[3:])))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
