"""HMAC signing, constant-time comparison, the replay guard and the version check."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone

import pytest

from editor_bridge import signing
from editor_bridge.errors import (
    AuthenticationError,
    ExpiredMessage,
    ReplayedMessage,
    UnsignedMessage,
    UnsupportedVersion,
)
from editor_bridge.protocol import PROTOCOL_VERSION, ErrorCode
from editor_bridge.signing import ReplayGuard, Signer, check_version

PARTS = [b"header", b"parent", b"meta", b"content", memoryview(b"\x00" * 1000)]


def test_sign_and_verify_all_parts():
    signer = Signer("secret")
    signature = signer.sign(PARTS)
    assert len(signature) == 64 and bytes.fromhex(signature.decode())
    assert signature == hmac.new(b"secret", b"".join(bytes(p) for p in PARTS), "sha256").hexdigest().encode()
    signer.verify(signature, PARTS)


@pytest.mark.parametrize("index", range(len(PARTS)))
def test_any_tampered_part_fails(index):
    signer = Signer("secret")
    signature = signer.sign(PARTS)
    tampered = list(PARTS)
    tampered[index] = bytes(PARTS[index]) + b"!"
    with pytest.raises(AuthenticationError, match="does not match") as err:
        signer.verify(signature, tampered)
    assert err.value.code is ErrorCode.BAD_SIGNATURE


def test_other_key_and_unsigned_fail():
    with pytest.raises(AuthenticationError, match="re-read the connection file"):
        Signer("other").verify(Signer("secret").sign(PARTS), PARTS)
    with pytest.raises(UnsignedMessage) as err:
        Signer("secret").verify(b"", PARTS)
    assert err.value.code is ErrorCode.UNSIGNED


def test_comparison_is_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(signing.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    signer = Signer("secret")
    signer.verify(signer.sign(PARTS), PARTS)
    assert calls == [1]


def test_empty_key_and_unknown_scheme_are_refused():
    with pytest.raises(AuthenticationError, match="empty"):
        Signer("")
    with pytest.raises(AuthenticationError, match="hmac-md5"):
        Signer("k", scheme="hmac-md5")


def test_version_check():
    check_version(PROTOCOL_VERSION)
    for bad in (PROTOCOL_VERSION + 1, 0, None, "1"):
        with pytest.raises(UnsupportedVersion, match="update the plugin and the engine") as err:
            check_version(bad)
        assert err.value.code is ErrorCode.UNSUPPORTED_VERSION


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_replays_are_refused():
    guard = ReplayGuard(clock=Clock(T0.timestamp()))
    guard.check(b"sig-a", T0)
    guard.check(b"sig-b", T0)
    with pytest.raises(ReplayedMessage, match="replay") as err:
        guard.check(b"sig-a", T0)
    assert err.value.code is ErrorCode.REPLAYED


def test_old_and_future_messages_are_refused():
    guard = ReplayGuard(max_age_s=60, clock=Clock(T0.timestamp()))
    guard.check(b"fresh", _at(-59))
    with pytest.raises(ExpiredMessage, match="61 s old") as err:
        guard.check(b"old", _at(-61))
    assert err.value.code is ErrorCode.EXPIRED
    with pytest.raises(ExpiredMessage, match="future"):
        guard.check(b"future", _at(3600))


def test_memory_is_bounded_and_eviction_opens_no_replay_window():
    clock = Clock(T0.timestamp())
    guard = ReplayGuard(max_entries=3, max_age_s=60, clock=clock)
    for i in range(10):
        guard.check(f"sig{i}".encode(), _at(i * 0.1))
    assert len(guard) == 3
    with pytest.raises(ReplayedMessage):
        guard.check(b"sig0", _at(0))  # evicted, but refused: it is below the floor
    guard.check(b"sig-new", _at(1.0))


def test_expired_entries_are_dropped():
    clock = Clock(T0.timestamp())
    guard = ReplayGuard(max_entries=100, max_age_s=10, clock=clock)
    for i in range(5):
        guard.check(f"old{i}".encode(), T0)
    clock.now += 30
    guard.check(b"new", _at(30))
    assert len(guard) == 1


def test_guard_rejects_nonsense_limits():
    with pytest.raises(ValueError):
        ReplayGuard(max_entries=0)


def test_large_parts_enter_the_hmac_as_their_chunked_digest():
    big = memoryview(bytes(range(256)) * (3 * signing.CHUNK // 256 + 7))  # 3 chunks and a partial one
    parts = [b"header", b"parent", b"meta", b"content", big, b"\x01" * 10]
    chunks = [
        hashlib.sha256(big[i : i + signing.CHUNK]).digest() for i in range(0, big.nbytes, signing.CHUNK)
    ]
    assert len(chunks) == 4
    tree = hashlib.sha256(b"editor-bridge-large-part" + big.nbytes.to_bytes(8, "big") + b"".join(chunks))
    expected = hmac.new(b"secret", b"headerparentmetacontent" + tree.digest() + b"\x01" * 10, "sha256")
    signer = Signer("secret")
    signature = signer.sign(parts)
    assert signature == expected.hexdigest().encode()
    signer.verify(signature, parts)
    for offset in (0, signing.CHUNK - 1, signing.CHUNK, big.nbytes - 1):  # any byte of any chunk counts
        tampered = bytearray(big)
        tampered[offset] ^= 1
        with pytest.raises(AuthenticationError, match="does not match"):
            signer.verify(signature, [*parts[:4], memoryview(tampered), parts[5]])
    with pytest.raises(AuthenticationError, match="does not match"):  # nor may a part grow or shrink
        signer.verify(signature, [*parts[:4], big[:-1], parts[5]])
