"""Atomic file writes: a crash never leaves a half-written file under its final name."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success rename it over `final` (file or folder).

    The temporary name starts with '.' and ends in '.partial' so that nothing globbing for the
    final name ever sees it; on failure it is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def sweep_partials(folder: Path) -> int:
    """Delete the temporaries (`.*.partial`, files or folders) that a killed writer left anywhere
    under `folder` -> how many. A SIGKILL or power cut skips atomic_path's clean-up, so a stage that
    takes over a run folder sweeps it before writing, under the run's lock (facemark.runlock), so no
    other writer's temporary is touched."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    leftovers = [p for p in folder.rglob(".*.partial") if p.exists()]
    for leftover in leftovers:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return len(leftovers)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a folder (e.g. .mlpackage): relative names and contents, sorted."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_json_document(path: Path, schema: str, what: str, missing: str) -> dict:
    """Load a versioned facemark JSON file (manifest, report); every problem is an ArtifactError
    naming the file: `missing` when absent, invalid JSON, or a `schema` other than expected."""
    import json

    from facemark.errors import ArtifactError

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: {missing}")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: {what} is not valid JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("schema") != schema:
        raise ArtifactError(f"{path}: not a facemark {what} (expected schema {schema!r})")
    return document


def file_inside(folder: Path, name: object, origin: str | Path, key: str, root: Path | None = None,
                error: type[Exception] | None = None) -> Path:
    """`folder / name` for a file name that a document (`origin`: a manifest, a model card, a
    config's `_base_`) records at `key`, refused unless it stays inside `root` (default `folder`):
    not a non-empty relative name, or leading out once `..` and symlinks are resolved (archive
    extractors' "zip-slip" rule), is one `error` (default ArtifactError) naming the document, the
    key and the name. Existence is the caller's check."""
    from facemark.errors import ArtifactError

    error = error or ArtifactError
    root = Path(folder if root is None else root)
    if not isinstance(name, str) or not name.strip() or Path(name).is_absolute():
        raise error(f"{origin}: {key} {name!r} must be a file name relative to {folder}; refused")
    target = (Path(folder) / name).resolve()
    if target == root.resolve() or not target.is_relative_to(root.resolve()):
        raise error(f"{origin}: {key} {name!r} leads outside {root} (to {target}); refused")
    return Path(folder) / name
