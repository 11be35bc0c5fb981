"""Folders given as URLs (s3://, gs://, abfs://, hdfs://, file://) for `engine batch --cluster`, through
pyarrow's filesystems (what Ray Data itself reads and writes with; pyarrow comes with ray[data]).

Only file:// is tested here (no object store is reachable from this project's CI). Writes go to the
object in one upload (an object store shows an object only once it is complete); on a local or mounted
filesystem through a temporary file and a rename, as every other write of the engine.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from engine.errors import BadInputError
from engine.files import atomic_write_bytes
from engine.imageio import IMAGE_SUFFIXES


def is_url(text: str | Path | None) -> bool:
    return text is not None and "://" in str(text)


def resolve(url: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it); a URL pyarrow cannot open is one line."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(url)
    except Exception as exc:  # ArrowInvalid, OSError (credentials, network) ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"cannot open {url} ({first}): check the URL and the credentials") from None


def join(url: str, name: str) -> str:
    return f"{url.rstrip('/')}/{name}"


def list_images(url: str, flag: str) -> list[str]:
    """URLs of the images in the folder `url` (not recursive, hidden files skipped, by extension), sorted."""
    import pyarrow.fs

    fs, path = resolve(url)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=False))
    except (FileNotFoundError, OSError) as exc:
        raise BadInputError(f"{flag} {url} is not a folder that can be listed ({exc})") from None
    names = sorted(
        PurePosixPath(info.path).name
        for info in infos
        if info.type == pyarrow.fs.FileType.File
        and not PurePosixPath(info.path).name.startswith(".")
        and PurePosixPath(info.path).suffix.lower() in IMAGE_SUFFIXES
    )
    return [join(url, name) for name in names]


def existing(urls: list[str]) -> set[str]:
    """The URLs of `urls` that name a file already (all on one filesystem)."""
    import pyarrow.fs

    if not urls:
        return set()
    fs, _ = resolve(urls[0])
    paths = [resolve(u)[1] for u in urls]
    infos = fs.get_file_info(paths)
    return {u for u, info in zip(urls, infos, strict=True) if info.type == pyarrow.fs.FileType.File}


def read_bytes(url: str) -> bytes:
    fs, path = resolve(url)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(url: str, data: bytes) -> None:
    import pyarrow.fs

    fs, path = resolve(url)
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        atomic_write_bytes(Path(path), data)
        return
    with fs.open_output_stream(path) as f:
        f.write(data)
