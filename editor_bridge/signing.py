"""HMAC-SHA256 signatures over every part of a message, the replay guard, and the protocol version check."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from editor_bridge.errors import (
    AuthenticationError,
    ExpiredMessage,
    ReplayedMessage,
    UnsignedMessage,
    UnsupportedVersion,
)
from editor_bridge.protocol import PROTOCOL_VERSION

SIGNATURE_SCHEME = "hmac-sha256"

# Parts of at least LARGE_PART bytes (layers, masks) enter the HMAC as a digest of their CHUNK-sized pieces'
# SHA-256 digests, hashed on all cores (hashlib releases the GIL), instead of being streamed through one
# core: a 2048x2048 layer is signed in about half the time on 2 cores. Smaller parts are hashed as they are.
LARGE_PART = 1 << 20
CHUNK = 1 << 20
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _hash_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            workers = min(8, os.cpu_count() or 1)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="editor-bridge-hash")
        return _pool


def _sha256(chunk: memoryview) -> bytes:
    return hashlib.sha256(chunk).digest()


def _large_part_digests(views: list[memoryview]) -> list[bytes]:
    """Per view: SHA-256 over its byte length and the SHA-256 digests of its CHUNK-sized pieces, in order."""
    chunks = [view[i : i + CHUNK] for view in views for i in range(0, view.nbytes, CHUNK)]
    digests = iter(_hash_pool().map(_sha256, chunks) if len(chunks) > 1 else map(_sha256, chunks))
    out = []
    for view in views:
        tree = hashlib.sha256(b"editor-bridge-large-part" + view.nbytes.to_bytes(8, "big"))
        for _ in range(0, view.nbytes, CHUNK):
            tree.update(next(digests))
        out.append(tree.digest())
    return out


class Signer:
    """Signs and verifies the parts after the signature frame: header, parent, metadata, content, buffers."""

    def __init__(self, key: bytes | str, scheme: str = SIGNATURE_SCHEME) -> None:
        if scheme != SIGNATURE_SCHEME:
            raise AuthenticationError(
                f"signature scheme {scheme!r} is not supported; use {SIGNATURE_SCHEME!r}"
            )
        key = key.encode("ascii") if isinstance(key, str) else bytes(key)
        if not key:
            # An empty key would make every message "valid"; refuse rather than run unauthenticated.
            raise AuthenticationError("the signing key is empty; read it from the engine's connection file")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def sign(self, parts: Iterable[Any]) -> bytes:
        """Hex digest (ASCII bytes) over the parts in order; buffers are hashed in place, never copied.

        A part of LARGE_PART bytes or more is fed to the HMAC as its chunked SHA-256 digest (computed on
        several cores), every other part as its bytes. Part sizes are bound by the signed content (each
        image descriptor declares its frame's size), so the two forms cannot be confused.
        """
        views = [memoryview(part).cast("B") for part in parts]
        large = [v for v in views if v.nbytes >= LARGE_PART]
        digests = iter(_large_part_digests(large)) if large else iter(())
        mac = self._mac.copy()  # copying the keyed state is cheaper than re-keying, and thread-safe
        for view in views:
            mac.update(next(digests) if view.nbytes >= LARGE_PART else view)
        return mac.hexdigest().encode("ascii")

    def verify(self, signature: bytes | memoryview, parts: Iterable[Any]) -> None:
        if not signature:
            raise UnsignedMessage(
                "message is not signed; sign it with the key from the engine's connection file"
            )
        if not hmac.compare_digest(bytes(signature), self.sign(parts)):
            raise AuthenticationError(
                "message signature does not match; the key is not this engine's "
                "(re-read the connection file: the engine may have restarted)"
            )


# ZeroMQ's PLAIN handshake carries a password derived from the key (never the key itself): the daemon lets
# only peers that know the key past the handshake, so nobody else can make it buffer a single message.
PEER_USERNAME = "editor-bridge"


def peer_password(key: bytes | str) -> str:
    """The handshake password of peers that hold `key` (hex HMAC-SHA256 of a fixed label)."""
    key = key.encode("ascii") if isinstance(key, str) else bytes(key)
    return hmac.new(key, b"editor-bridge peer password", hashlib.sha256).hexdigest()


def present_key(socket: Any, key: bytes | str) -> None:
    """Give a client socket the handshake credentials for `key`, unless it already uses CurveZMQ (whose
    own keys admit it, on non-loopback endpoints)."""
    import zmq

    if socket.get(zmq.MECHANISM) == zmq.NULL:
        socket.plain_username = PEER_USERNAME.encode()
        socket.plain_password = peer_password(key).encode()


# What to do when the other side is older: the engine tells a plugin to update; a plugin, the engine.
UPDATE_PLUGIN = "update the plugin: `engine plugin install krita` (or gimp), then restart the editor"
UPDATE_ENGINE = "update the engine and restart `engine serve`"


def check_version(version: Any, older_peer: str = UPDATE_ENGINE) -> None:
    """Refuse a message of another protocol version; `older_peer` says what to do when the peer's is
    older than this side's. The exception keeps an older peer's version (`peer_version`), so that the
    refusal can be sent in a header that peer reads."""
    if version == PROTOCOL_VERSION:
        return
    older = isinstance(version, int) and not isinstance(version, bool) and 0 < version < PROTOCOL_VERSION
    exc = UnsupportedVersion(
        f"the other side speaks protocol {version!r}, this one {PROTOCOL_VERSION}: "
        + (older_peer if older else "update the plugin and the engine to the same release")
    )
    exc.peer_version = version if older else None
    raise exc


class ReplayGuard:
    """Refuses a message seen before, or one older than `max_age_s`.

    Remembers the last `max_entries` signatures. When one is evicted, its date becomes a floor below which
    everything is refused, so eviction can never reopen a window for replays.
    """

    def __init__(
        self,
        max_entries: int = 65536,
        max_age_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1 or max_age_s <= 0:
            raise ValueError("max_entries and max_age_s must be positive")
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._floor = float("-inf")
        self._lock = threading.Lock()  # the server's outbox thread and its loop may both check

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, signature: bytes, date: datetime) -> None:
        """Record `signature`; raise if it was seen or `date` is too old (or too far in the future)."""
        stamp = date.timestamp()
        now = self._clock()
        if stamp < now - self.max_age_s:
            raise ExpiredMessage(
                f"message is {now - stamp:.0f} s old (limit {self.max_age_s:.0f} s); "
                "check the clock, or send a fresh request"
            )
        if stamp > now + self.max_age_s:
            raise ExpiredMessage("message is dated in the future; check the system clock")
        key = bytes(signature)
        with self._lock:
            if key in self._seen or stamp <= self._floor:
                raise ReplayedMessage("message was already received (replay); send each request once")
            self._seen[key] = stamp
            horizon = now - self.max_age_s
            while self._seen:
                oldest_key, oldest = next(iter(self._seen.items()))
                if len(self._seen) > self.max_entries:
                    del self._seen[oldest_key]
                    self._floor = max(self._floor, oldest)
                elif oldest < horizon:
                    del self._seen[oldest_key]  # refused by its age anyway
                else:
                    break
