"""Any folder (or zip) of face images, searched recursively."""

from __future__ import annotations

from pathlib import PurePosixPath

from facegan.data.images import IMAGE_SUFFIXES, has_image_suffix
from facegan.data.plan import Plan
from facegan.data.sources import SourceTree, ZipTree, is_junk
from facegan.errors import FaceganError


def plan_folder(tree: SourceTree, source: str) -> Plan:
    """Every supported image under `tree`; other files are listed as skipped, litter is counted."""
    files = tree.list_files()
    plan = Plan(source=source, kind="folder", layout="zip" if isinstance(tree, ZipTree) else "folder", tree=tree)
    litter = 0
    for rel in files:
        if is_junk(rel):
            litter += 1
        elif has_image_suffix(rel):
            plan.files.append(rel)
            plan.names.append(rel)
        else:
            suffix = PurePosixPath(rel).suffix or "no suffix"
            plan.skipped.append({"file": rel, "reason": f"not a supported image type ({suffix})"})
    if not files:
        raise FaceganError(f"{tree.path} is empty; put face images in it (any of {', '.join(IMAGE_SUFFIXES)}).")
    if not plan.files:
        raise FaceganError(
            f"{tree.path} holds {len(files)} files but no images; "
            f"expected files ending in {', '.join(IMAGE_SUFFIXES)}, searched recursively."
        )
    plan.info["ignored_system_files"] = litter
    return plan
