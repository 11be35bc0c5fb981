"""An exported sampler's file, once: its name in a model directory, its format version, the digest of its
weights and the check of a file on disk. The exporter (engine.families.consingan.onnx_export) writes what
this module checks; engine.runtime runs what it accepted.

Importing it imports neither torch nor onnx (the registry lists models with it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from engine.errors import OnnxFileError
from engine.standalone import FORMAT, TEXT_KEYS

RESTYLER_FORMAT = "singan-studio-restyler"  # a CycleGAN generator (engine.families.cyclegan.onnx_export)
SET_GENERATOR_FORMAT = "singan-studio-set-generator"  # a SAGAN-style set generator (families.sagan)
SINGAN_STAGE_FORMAT = "singan-studio-singan-stage"  # one stage of a SinGAN pyramid (families.singan)
SAMPLER_FILE = "sampler.onnx"  # exported into a model directory on first use (engine.runtime.ensure_sampler)
FORMAT_VERSION = 1  # of exported samplers


def weights_digest(graph) -> str:
    """sha256 of the graph's initializers (names, shapes, bytes), recorded at export and checked on load.

    Damage inside the weights still parses as valid protobuf and would run and give wrong images; this
    turns it into an error. The initializers' raw bytes are hashed, not a re-serialisation, so the digest
    does not depend on the protobuf library's version.
    """
    h = hashlib.sha256()
    for tensor in sorted(graph.initializer, key=lambda t: t.name):
        h.update(f"{tensor.name}:{list(tensor.dims)}:{tensor.data_type}:".encode())
        h.update(tensor.raw_data)
    return h.hexdigest()


def verify_file(path: str | Path, format: str = FORMAT) -> dict:
    """Parse an exported file of `format` (a sampler, by default) and check its weights against the digest
    in its metadata.

    Returns the decoded metadata; OnnxFileError when the file is truncated, corrupted or not a sampler.
    """
    import onnx

    try:
        proto = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends
        raise OnnxFileError(
            f"{path} is not a readable ONNX file (truncated or corrupted?): export again"
        ) from e
    props = {p.key: p.value for p in proto.metadata_props}
    if props.get("format") != format:
        what = "a sampler" if format == FORMAT else "a generator"
        raise OnnxFileError(f"{path} is not {what} exported by `engine export`")
    if json.loads(props.get("format_version", "0")) > FORMAT_VERSION:
        raise OnnxFileError(f"{path} was exported by a newer engine ({props.get('engine_version')}): upgrade")
    if props.get("weights_digest") != weights_digest(proto.graph):
        raise OnnxFileError(f"{path} is corrupted (its weights do not match their checksum): export again")
    return {k: (v if k in TEXT_KEYS else json.loads(v)) for k, v in props.items()}
