"""The folders every export is written into: numbered versions under a base folder (TF
Serving's layout), each written atomically, and the provenance every export's metadata
starts with. Shared by the SavedModel export (`kemdy_tf.export`) and the LiteRT one
(`kemdy_tf.litert`), which otherwise know nothing of each other.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import tempfile
from pathlib import Path

import kemdy_tf
from kemdy_tf.config import RunConfig

_VERSION = re.compile(r"^[0-9]+$")


class ExportError(RuntimeError):
    """An export cannot be written or read (missing run files, existing version, not an export)."""


# === Versions (TF Serving layout: numbered folders under a base folder) ===


def versions(base: str | os.PathLike) -> list[int]:
    """The version numbers present under `base` (folders named by digits only), ascending."""
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and _VERSION.match(p.name))


def next_version(base: str | os.PathLike) -> int:
    """One past the highest version under `base`; 1 for a new base folder."""
    present = versions(base)
    return present[-1] + 1 if present else 1


def write_version(out: str | os.PathLike, version: int | None, write) -> Path:
    """`write(folder)` into a hidden temporary folder under `out`, then rename it to `out/<version>`.

    TF Serving (which polls the base folder) never sees a partial version, an
    interrupted write leaves no version folder, and an existing version is never
    overwritten.

    Raises:
        ExportError: the version exists or is negative.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if version is None:
        version = next_version(out)
    elif int(version) < 0:
        raise ExportError(f"version must be a non-negative integer, got {version}")
    target = out / str(int(version))
    if target.exists():
        raise ExportError(f"{target} already exists; an export is never overwritten "
                          f"(omit --version to use the next free one, {next_version(out)})")

    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=out))
    try:
        write(partial)
        partial.chmod(0o755)  # mkdtemp makes it private; TF Serving may run as another user
        os.rename(partial, target)  # atomic; fails if the version appeared meanwhile
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


# === Metadata ===


def provenance(kind: str, config: RunConfig, classes, source, untrained) -> dict:
    """The metadata every export kind starts with: what wrote it, from what, predicting what."""
    import tensorflow as tf

    return {
        "format": kind,
        "kemdy_tf_version": kemdy_tf.__version__,
        "tensorflow_version": tf.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "preset": config.preset,
        "classes": list(classes),
        "ratings_trained": [name for name in ("arousal", "valence") if name not in untrained],
    }
