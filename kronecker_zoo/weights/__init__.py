"""Registry of published weight files: a manifest, not code.

``manifest.json`` maps ``model name -> tag -> entry``; an entry holds ``file``
(relative to this folder), ``sha256``, ``dataset``, ``recipe``, ``epochs``,
metrics, ``params``, ``macs`` and, optionally, ``url``.

`entry_path` gives the file to load, verified by SHA-256: the packaged file when
its hash matches; otherwise, for an entry with a ``url``, a download of it into
the cache (``keras.utils.get_file`` into `cache_folder()`, verified before
use; the packaged file is never modified); otherwise an error.
"""

import hashlib
import json
import os
import re

_HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(_HERE, "manifest.json")
# Downloads go to CACHE_DIR / CACHE_SUBDIR; CACHE_DIR None: $KERAS_HOME, else ~/.keras.
CACHE_DIR = None
CACHE_SUBDIR = "kronecker_zoo_weights"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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


def check_sha256(sha256):
    """``sha256`` in lower case; ValueError unless it is 64 hex digits."""
    if not isinstance(sha256, str) or not _SHA256.match(sha256.lower()):
        raise ValueError(f"A SHA-256 must be 64 hexadecimal digits. Received: {sha256!r}")
    return sha256.lower()


def verified_path(path, sha256, advice=None):
    """Returns ``path`` after checking its SHA-256; raises ValueError on a mismatch.

    ``advice`` ends the error message (default: what to do with a packaged file).
    """
    sha256 = check_sha256(sha256)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weight file not found: {path}")
    actual = sha256_of(path)
    if actual != sha256:
        raise ValueError(
            f"Weight file {path} failed its SHA-256 check (expected {sha256}, got {actual}): "
            "it is truncated, corrupted or not the expected file. "
            + (advice or "Reinstall kronecker_zoo to restore the published file.")
        )
    return path


def find_published(sha256):
    """``(name, tag)`` of the manifest entry with this SHA-256, or `None`."""
    for name, tags in manifest().items():
        for tag, entry in tags.items():
            if entry.get("sha256") == sha256:
                return name, tag
    return None


def cache_folder():
    """The folder downloaded weight files are kept in."""
    base = CACHE_DIR or os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return os.path.join(os.path.abspath(os.path.expanduser(base)), CACHE_SUBDIR)


def download(url, sha256, file_name):
    """``url`` fetched into the cache as ``file_name``, SHA-256 verified; its path.

    A cached copy with the right hash is reused. A download with another hash is
    deleted and refused (ValueError); a failed fetch raises OSError naming ``url``.
    """
    import keras

    sha256 = check_sha256(sha256)
    target = os.path.join(cache_folder(), os.path.basename(file_name))
    try:
        # An absolute cache_subdir is where get_file puts the file.
        path = keras.utils.get_file(
            fname=os.path.basename(file_name), origin=url, file_hash=sha256,
            hash_algorithm="sha256", cache_subdir=cache_folder())
    except ValueError as error:  # downloaded, but the hash differs
        if os.path.isfile(target):
            os.remove(target)
        raise ValueError(
            f"The weight file downloaded from {url} failed its SHA-256 check (expected "
            f"{sha256}); it was deleted and is not used. ({error})") from None
    except Exception as error:  # get_file raises a bare Exception on HTTP/URL errors
        raise OSError(f"Could not download weight file {file_name} from {url}: {error}") from error
    return verified_path(path, sha256, advice=f"Delete {path} and try again.")


def entry_path(entry):
    """The verified local file of a manifest ``entry`` (see the module docstring).

    Raises:
        FileNotFoundError: the packaged file is missing and the entry has no ``url``.
        ValueError: the packaged file fails its SHA-256 check and there is no ``url``,
            or the download fails it.
        OSError: the download itself failed.
    """
    local = file_path(entry["file"])
    sha256 = check_sha256(entry["sha256"])
    if os.path.isfile(local) and sha256_of(local) == sha256:
        return local
    url = entry.get("url")
    if url:
        return download(url, sha256, entry["file"])
    if not os.path.isfile(local):
        raise FileNotFoundError(
            f"Weight file not found: {local} (its manifest entry has no `url` to download "
            "it from). Reinstall kronecker_zoo to restore the published file.")
    return verified_path(local, sha256)
