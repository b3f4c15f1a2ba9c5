"""Registry of published weight files: a manifest, not code.

``manifest.json`` maps ``model name -> tag -> entry``; an entry holds ``file``
(relative to this folder, or ``url``), ``sha256``, ``dataset``, ``recipe``,
``epochs``, metrics, ``params`` and ``macs``. Files are verified by SHA-256 before
they are loaded.
"""

import hashlib
import json
import os

_HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(_HERE, "manifest.json")


def manifest():
    """The whole manifest as a dict (``name -> tag -> entry``)."""
    with open(MANIFEST, encoding="utf-8") as f:
        return json.load(f)


def published(name=None):
    """Tags with weights for model ``name`` (``{tag: entry}``), or the whole manifest."""
    data = manifest()
    return data if name is None else dict(data.get(name, {}))


def file_path(file_name):
    """Where the weight file ``file_name`` (a manifest "file") lives: beside the manifest."""
    return os.path.join(os.path.dirname(MANIFEST), file_name)


def sha256_of(path, chunk=1 << 20):
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_path(path, sha256):
    """Returns ``path`` after checking its SHA-256; raises ValueError on a mismatch."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weight file not found: {path}")
    actual = sha256_of(path)
    if actual != sha256:
        raise ValueError(
            f"Weight file {path} failed its SHA-256 check (expected {sha256}, got {actual}): "
            "it is truncated, corrupted or not the published file. Reinstall kronecker_zoo "
            "or delete the file so it is downloaded again."
        )
    return path
