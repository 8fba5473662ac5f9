"""Pack a bundle directory into one deterministic tar archive (the TUF target).

Only what the bundle's manifest lists goes in (``manifest.json`` and its ``files``),
as plain files with fixed owner, mode and time, in sorted order: the same bundle
always packs to the same bytes, so publishing it twice gives the same target hash.
The device unpacks it with :func:`edgerec.runtime.slots.unpack_bundle`, which refuses
anything but plain files inside the slot.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from edgerec.bundle import MANIFEST, Manifest

__all__ = ["pack_bundle"]


def pack_bundle(manifest: Manifest, out: Path) -> int:
    """Write ``manifest``'s bundle to the tar file ``out``; returns its size in bytes."""
    names = sorted({MANIFEST, *manifest.files})
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            src = manifest.path(name)
            info = tarfile.TarInfo(name)
            info.size = src.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with src.open("rb") as fh:
                tar.addfile(info, fh)
    return out.stat().st_size
