"""Plain words for a data file that torch, safetensors or NumPy refused.

The readers' own messages describe their internals ("pop from empty list",
"failed finding central directory … internal miniz error", an empty
``EOFError``).  A user needs to know what the file is: empty, cut short, or not
the kind of file its name says.  The first bytes tell which.
"""

from __future__ import annotations

from pathlib import Path

#: A zip archive (torch.save since 1.6, NumPy's .npz).
ZIP_MAGIC = b"PK\x03\x04"
#: A pickle of protocol 2 or later (torch.save's legacy format).
PICKLE_MAGIC = b"\x80"
NPY_MAGIC = b"\x93NUMPY"


def describe_damage(path: Path, exc: BaseException) -> str:
    """What is wrong with ``path``, which a reader refused with ``exc``: without the file's name."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot be read ({exc.strerror})"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if size == 0:
        return "the file is empty (0 bytes)"
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        if size < 8:
            return f"too short for a safetensors file ({size} bytes)"
        return f"not a valid safetensors file ({_last_line(exc)})"
    if suffix == ".npy":
        if not head.startswith(NPY_MAGIC):
            return "not a NumPy .npy file (it does not start with the .npy header)"
        if "pickle" in str(exc):
            return (
                "refused: it holds pickled Python objects (a NumPy object array), which are never "
                "loaded; save a numeric array"
            )
        return f"a damaged or truncated .npy file ({_last_line(exc)})"
    if suffix == ".npz":
        if not head.startswith(ZIP_MAGIC):
            return "not a NumPy .npz archive (it is not a zip file)"
        return f"a damaged or truncated .npz archive ({_last_line(exc)})"
    # .pt .pth .bin .ckpt: torch.save writes a zip archive, or a pickle in the legacy format.
    if head.startswith(ZIP_MAGIC):
        return f"a damaged or truncated torch.save archive, or a zip file torch.save did not write ({size} bytes)"
    if head.startswith(PICKLE_MAGIC):
        return f"a damaged or truncated torch.save file in the legacy pickle format ({size} bytes)"
    return "not a file written by torch.save (it is neither a zip archive nor a pickle)"


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
