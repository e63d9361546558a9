"""Reading files of older format versions as the current one (3).

Version 2 had no checksums and no entropy coding: its metadata gains empty ``checksums``
and ``coding`` entries, and the reader is told that no checksum is recorded.

Version 1 named two kinds in its layout: a codebook could borrow another weight's
codebook (``"codebook_from"``), and a relaxed weight stored its tensors under their
PyTorch parametrization names (``x.parametrizations.weight.original``,
``x.parametrizations.weight.0.lora_A``). Version 2 stores every shared weight's parts
as ``<weight>.<part>`` and expresses a shared part as a tie. The upgrade only renames;
the version 2 validator then checks the result as if it had been written so.
"""

from __future__ import annotations

import copy
from dataclasses import replace

from ..errors import FormatError
from .header import TensorInfo
from .schema import FORMAT_VERSION, check_version


def upgrade(meta: dict, infos: dict[str, TensorInfo],
            path: str) -> tuple[dict, dict[str, TensorInfo], bool]:
    """(metadata, tensor table, legacy) of a file, in the current version's form; legacy
    is True when the file's version recorded no checksums. Each upgraded TensorInfo keeps
    the name it is stored under. FormatError for versions this weightshare cannot read."""
    version = check_version(meta, path)
    if version == FORMAT_VERSION:
        return meta, infos, False
    if version == 1:
        try:
            meta, infos = _upgrade_v1(copy.deepcopy(meta), infos)
        except (AttributeError, KeyError, TypeError, ValueError):
            raise FormatError(f"{path}: the format version 1 metadata is corrupt; save the model "
                              "again") from None
    for key in ("checksums", "coding"):  # version 2: neither existed
        if key in meta:
            raise FormatError(f"{path}: format_version {version} metadata has a {key!r} entry; "
                              "the file is corrupt")
    meta = {**meta, "format_version": FORMAT_VERSION, "checksums": {}, "coding": {}}
    return meta, infos, True


def _raw_prefix(fqn: str) -> str:
    head, _, attr = fqn.rpartition(".")
    return f"{head}.parametrizations.{attr}." if head else f"parametrizations.{attr}."


def _upgrade_v1(meta: dict, infos: dict[str, TensorInfo]) -> tuple[dict, dict[str, TensorInfo]]:
    schemes, ties = meta.get("schemes"), meta.get("ties")
    if not isinstance(schemes, dict) or not isinstance(ties, dict):
        return meta, infos  # the validator names the problem
    rename: dict[str, str] = {}
    for fqn, scheme in schemes.items():
        if not isinstance(scheme, dict):
            continue
        scheme["version"] = 1
        borrowed = scheme.pop("codebook_from", None)
        if scheme.get("kind") == "codebook" and isinstance(borrowed, str):
            ties[f"{fqn}.codebook"] = f"{borrowed}.codebook"
        if scheme.get("kind") == "relaxed":
            prefix = _raw_prefix(fqn)
            rename[prefix + "original"] = f"{fqn}.shared"
            for part in ("lora_A", "lora_B", "delta"):
                rename[f"{prefix}0.{part}"] = f"{fqn}.{part}"
    meta["ties"] = {rename.get(a, a): rename.get(s, s) for a, s in ties.items()}
    upgraded = {}
    for name, info in infos.items():
        new = rename.get(name, name)
        if new in upgraded:
            raise ValueError(f"two tensors upgrade to {new}")
        upgraded[new] = replace(info, name=new, key=name)
    return meta, upgraded
