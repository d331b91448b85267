"""Model artifacts: a folder of JSON files + safetensors weights + a sha256 manifest.

No pickle anywhere. ``write_artifact`` writes into a temporary folder and renames
it into place, so a reader never sees half an artifact; ``read_artifact``
verifies every file's sha256 against the manifest and refuses a partial or
tampered artifact with an ``ArtifactError`` that names the file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hmum._version import __version__
from hmum.exceptions import ArtifactError

MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"




def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_artifact(
    out_dir: str | Path, *, json_files: dict[str, dict], tensors: dict[str, torch.Tensor]
) -> Path:
    """Write ``name.json`` for each entry of json_files, the weights and the manifest.

    An existing artifact at ``out_dir`` is replaced; an existing file, or a folder
    holding anything but an artifact, is refused (ArtifactError) before any write.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out}: expected a folder for the model artifact, got a file")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        # never rmtree a folder we did not write (a typo'd --out could be a home folder)
        raise ArtifactError(f"{out}: a folder that is not an hmum artifact (no {MANIFEST}); "
                            "refusing to replace it")
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, payload in json_files.items():
        (tmp / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / WEIGHTS)
    files = sorted(p.name for p in tmp.iterdir())
    manifest = {
        "format": "hmum-artifact/1",
        "hmum_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {name: sha256_file(tmp / name) for name in files},
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def verify_artifact(path: str | Path) -> dict:
    """Check the manifest's sums; return the manifest. Raises ArtifactError."""
    p = Path(path)
    if not p.is_dir():
        raise ArtifactError(f"model artifact not found: {p} is not a folder")
    mpath = p / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{p}: no {MANIFEST}; not an hmum artifact or only partly written")
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError) as e:
        raise ArtifactError(f"{mpath}: unreadable manifest ({e!r})") from e
    for name, digest in files.items():
        f = p / name
        if not f.is_file():
            raise ArtifactError(f"{p}: file {name!r} listed in the manifest is missing (partial)")
        if sha256_file(f) != digest:
            raise ArtifactError(
                f"{p}: file {name!r} does not match its sha256 in the manifest (tampered or "
                "corrupted); refusing to load it"
            )
    return manifest


def read_artifact(path: str | Path) -> tuple[dict[str, dict], dict[str, torch.Tensor]]:
    """Verify, then return ({json name: payload}, weights)."""
    p = Path(path)
    manifest = verify_artifact(p)
    jsons = {
        name[: -len(".json")]: json.loads((p / name).read_text())
        for name in manifest["files"]
        if name.endswith(".json")
    }
    if WEIGHTS not in manifest["files"]:
        raise ArtifactError(f"{p}: the manifest lists no {WEIGHTS}")
    return jsons, load_file(p / WEIGHTS)
