"""Protocol costs on one machine: a layer's round trip against plain memory copies; ping latency, throughput.

Run: python -m bench.bench_protocol [--side 4096] [--repeats 10] [--pings 2000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from editor_bridge import Client, frames
from editor_bridge.connection import new_key
from editor_bridge.protocol import (
    ChannelOrder,
    PingRequest,
    PongReply,
    ResultReply,
    TrainRequest,
)
from editor_bridge.server import BridgeServer, Request
from editor_bridge.signing import Signer, present_key
from editor_bridge.wire import WireCodec


def serve_echo(key: str, endpoint: str, ready: Any, stop: Any) -> None:
    """The daemon's stand-in, in its own process as the real one is: pings get pongs, and any request's
    image goes straight back as a result (zero-copy on both sides)."""
    with BridgeServer(key, endpoint, max_frame_bytes=1 << 30) as server:

        def handle(request: Request) -> None:
            content = request.content
            if isinstance(content, TrainRequest):
                server.reply(request, ResultReply(images=[content.image]), buffers=request.buffers)
            else:
                server.reply(request, PongReply())

        ready.send(server.endpoint)
        server.serve(handle, stop, poll_s=0.01)


class EchoServer:
    def __init__(self, key: str, endpoint: str) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold a zmq context
        self._ready, child_end = ctx.Pipe()
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=serve_echo, args=(key, endpoint, child_end, self._stop), daemon=True)
        self.endpoint = ""

    def __enter__(self) -> EchoServer:
        self._proc.start()
        self.endpoint = self._ready.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._proc.join(10)


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up: first-touch page faults and socket setup are not what we measure
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1e3:9.1f}"


def layer_rows(client: Client, side: int, repeats: int) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (side, side, 4), dtype=np.uint8)
    nbytes = image.nbytes
    dst = np.empty_like(image)
    buffers: list = []
    request = TrainRequest(base_model="m1", image=frames.attach(buffers, image, ChannelOrder.BGRA))

    def round_trip() -> None:
        reply = client.call(request, buffers, timeout=60)
        result = reply.content
        assert isinstance(result, ResultReply)
        back = reply.image(result.images[0])
        assert back.shape == image.shape

    copy = timed(lambda: np.copyto(dst, image), repeats)
    two_copies = [2 * t for t in copy]
    trip = timed(round_trip, repeats)
    signer = Signer(new_key())
    hmac_t = timed(lambda: signer.sign([memoryview(image).cast("B")]), repeats)
    codec = WireCodec(new_key(), max_frame_bytes=1 << 30)
    encode_decode = timed(lambda: codec.deserialize(codec.serialize(request, buffers=buffers)), repeats)
    mib = nbytes / 2**20
    overhead = statistics.median(trip) - statistics.median(two_copies)
    gbps = 2 * nbytes / statistics.median(trip) / 1e9
    label = f"{side}x{side} RGBA u8 ({mib:.0f} MiB)"
    return [
        (label, "memory copy (np.copyto), one way", ms(copy)),
        (label, "two memory copies (there and back)", ms(two_copies)),
        (label, "HMAC-SHA256 of the layer, one side", ms(hmac_t)),
        (label, "sign + verify + decode, no socket", ms(encode_decode)),
        (label, "protocol round trip over loopback", ms(trip)),
        (label, "  overhead vs two copies", f"{overhead * 1e3:9.1f}"),
        (label, "  effective throughput (GB/s, both ways)", f"{gbps:9.2f}"),
    ]


def ping_rows(client: Client, endpoint: str, key: str, pings: int) -> list[tuple[str, str, str]]:
    latencies = sorted(timed(client.ping, pings))
    p50 = latencies[len(latencies) // 2] * 1e6
    p99 = latencies[int(len(latencies) * 0.99)] * 1e6

    # Pipelined: many requests in flight on one socket, as a batch tool would send them.
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    present_key(sock, key)
    sock.connect(endpoint)
    codec = WireCodec(key)
    start = time.perf_counter()
    for _ in range(pings):
        sock.send_multipart(codec.serialize(PingRequest()))
    for _ in range(pings):
        codec.deserialize(sock.recv_multipart(copy=False))
    pipelined = pings / (time.perf_counter() - start)
    sock.close()
    ctx.term()
    return [
        ("ping", "latency p50 (us)", f"{p50:9.0f}"),
        ("ping", "latency p99 (us)", f"{p99:9.0f}"),
        ("ping", "sequential throughput (req/s)", f"{1e6 / p50:9.0f}"),
        ("ping", "pipelined throughput (req/s)", f"{pipelined:9.0f}"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, action="append", help="layer side in pixels (repeatable)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--pings", type=int, default=2000)
    args = parser.parse_args(argv)
    key = new_key()
    rows: list[tuple[str, str, str]] = []
    ipc = f"ipc://{tempfile.mkdtemp()}/engine.sock"
    for transport, endpoint in (("tcp", "tcp://127.0.0.1:0"), ("ipc", ipc)):
        with (
            EchoServer(key, endpoint) as server,
            Client(server.endpoint, key, max_frame_bytes=1 << 30) as client,
        ):
            for side in args.side or [2048, 4096]:
                rows += [(f"{transport} {c}", m, v) for c, m, v in layer_rows(client, side, args.repeats)]
            rows += [
                (f"{transport} {c}", m, v) for c, m, v in ping_rows(client, server.endpoint, key, args.pings)
            ]
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'measure':<42} {'ms / value':>10}")
    print("-" * (width + 55))
    for case, measure, value in rows:
        print(f"{case:<{width}}  {measure:<42} {value:>10}")


if __name__ == "__main__":
    main()
