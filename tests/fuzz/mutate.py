"""Mutations of weightshare files, as an attacker would try them.

Byte mutations (flips, interesting values, truncation, insertions, a forged length) and
field mutations: the header is parsed, one field of the tensor table or of the
weightshare metadata (schemes, ties, checksums, coding, the transformers config) is
replaced by a hostile value, and the file is written back consistently (length prefix
fixed; optionally every checksum recomputed, so the mutation reaches the checks behind
them, as a forger would do). ``flip_data`` is the one mutation that must always be
caught: a changed byte of the data section with the checksums left as written.
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Callable
from typing import Any

INTERESTING_INTS = [0, 1, -1, 2, 3, 7, 8, 16, 17, 255, 256, 2**15, 2**16, 2**31 - 1, 2**31,
                    2**32, 2**40, 2**53, 2**63, -(2**31), 10**9, 10**12]
INTERESTING = INTERESTING_INTS + [
    None, True, False, 0.5, -0.0, 1e308, "", "x", "codebook", "relaxed", "float32", "uint8",
    "per_group", "transformers", "torch", "crc32:00000000", "ans32", "0.weight", "emb.weight",
    "a" * 300, [], {}, [1], [0, 0], [2**31, 2**31], [-1], [[[[]]]], {"kind": "codebook"},
    {"coder": "ans32", "words": 0}, "__metadata__", "U8", "F32", "BOOL"]


def split(data: bytes) -> tuple[dict, bytes] | None:
    """(header, data section) of a well-formed file, else None."""
    if len(data) < 8:
        return None
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError:
        return None
    return (header, data[8 + n:]) if isinstance(header, dict) else None


def join(header: dict, body: bytes, fix_checksums: bool = False) -> bytes:
    if fix_checksums:
        header = _fixed_checksums(header, body)
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


def _fixed_checksums(header: dict, body: bytes) -> dict:
    try:
        meta = json.loads(header["__metadata__"]["weightshare"])
        sums = {}
        for name, entry in header.items():
            if name != "__metadata__":
                a, b = entry["data_offsets"]
                sums[name] = f"crc32:{zlib.crc32(body[a:b]) & 0xFFFFFFFF:08x}"
        meta["checksums"] = sums
        header = {**header, "__metadata__": {**header["__metadata__"],
                                             "weightshare": json.dumps(meta)}}
    except (KeyError, TypeError, ValueError, AttributeError):
        pass
    return header


def _paths(node: Any, prefix: tuple = (), depth: int = 0) -> list[tuple]:
    """Every path to a value inside a JSON document (bounded depth)."""
    out = [prefix]
    if depth > 6:
        return out
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,), depth + 1)
    elif isinstance(node, list):
        for i, v in enumerate(node[:8]):
            out += _paths(v, prefix + (i,), depth + 1)
    return out


def _value(rng: random.Random, old: Any) -> Any:
    r = rng.random()
    if isinstance(old, int) and not isinstance(old, bool) and r < 0.4:
        return rng.choice([old + 1, old - 1, old * 2, old * 1000, -old, old + 2**32])
    if isinstance(old, str) and r < 0.3:
        return rng.choice([old + "x", old[:-1], old.upper(), old + ".weight", old * 3])
    if isinstance(old, list) and old and r < 0.3:
        return rng.choice([old[:-1], old + old[-1:], list(reversed(old)), [old]])
    return rng.choice(INTERESTING)


def _set(doc: Any, path: tuple, value: Any, delete: bool = False) -> None:
    node = doc
    for key in path[:-1]:
        node = node[key]
    if delete and isinstance(node, dict):
        node.pop(path[-1], None)
    elif delete and isinstance(node, list):
        node.pop(path[-1])
    else:
        node[path[-1]] = value


def mutate_json(rng: random.Random, doc: Any) -> Any:
    """One hostile change somewhere in a JSON document (a copy)."""
    doc = json.loads(json.dumps(doc))
    paths = [p for p in _paths(doc) if p]
    if not paths:
        return rng.choice(INTERESTING)
    path = rng.choice(paths)
    old: Any = doc
    for key in path:
        old = old[key]
    choice = rng.random()
    if choice < 0.15:
        _set(doc, path, None, delete=True)
    elif choice < 0.25 and isinstance(old, dict) and old:  # rename or duplicate a key
        key = rng.choice(list(old))
        new = rng.choice([key + "x", key.rsplit(".", 1)[0], "", key + ".weight",
                          rng.choice(list(old))])
        old[new] = old.pop(key) if rng.random() < 0.5 else old[key]
    elif choice < 0.32 and isinstance(old, dict):
        old[rng.choice(["surprise", "version", "kind", "shape", "bits", "0.weight"])] = \
            rng.choice(INTERESTING)
    else:
        _set(doc, path, _value(rng, old))
    return doc


def _mutate_value(rng: random.Random, value: Any) -> Any:
    """``value`` with one hostile change inside it (or replaced)."""
    return mutate_json(rng, {"v": value}).get("v", rng.choice(INTERESTING))


def field_mutation(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    parsed = split(data)
    if parsed is None:
        return byte_mutation(rng, data)
    header, body = parsed
    fix = rng.random() < 0.7
    target = rng.random()
    meta_text = header.get("__metadata__", {}).get("weightshare")
    if target < 0.3 or not isinstance(meta_text, str):
        names = [n for n in header if n != "__metadata__"]
        if names and rng.random() < 0.8:
            name = rng.choice(names)
            header[name] = _mutate_value(rng, header[name])
            if rng.random() < 0.2:  # rename a tensor
                header[name + rng.choice(["x", ".codes", ".codebook", ""])] = header.pop(name)
        else:
            header = mutate_json(rng, header)
        return join(header, body, fix), "field:tensor-table"
    meta = json.loads(meta_text)
    part = rng.choice(["schemes", "ties", "model", "checksums", "coding", "top"])
    if part == "model" and isinstance(meta.get("model"), dict) \
            and isinstance(meta["model"].get("config"), dict) and rng.random() < 0.7:
        meta["model"]["config"] = mutate_json(rng, meta["model"]["config"])
    elif part in meta and part != "top":
        meta[part] = _mutate_value(rng, meta[part])
    else:
        meta = mutate_json(rng, meta)
    header["__metadata__"]["weightshare"] = json.dumps(meta)
    return join(header, body, fix and part != "checksums"), f"field:{part}"


def byte_mutation(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    raw = bytearray(data)
    op = rng.randrange(6)
    if op == 0 or not raw:
        cut = rng.randrange(len(raw) + 1)
        return bytes(raw[:cut]), "byte:truncate"
    if op == 1:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(raw))
            raw[i] ^= 1 << rng.randrange(8)
        return bytes(raw), "byte:flip-any"
    if op == 2:
        i = rng.randrange(len(raw))
        raw[i] = rng.choice([0, 0xFF, 0x7F, 0x80, ord("{"), ord('"'), ord("9")])
        return bytes(raw), "byte:set"
    if op == 3:
        i = rng.randrange(len(raw) + 1)
        return bytes(raw[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
                     + raw[i:]), "byte:insert"
    if op == 4:
        i = rng.randrange(len(raw))
        return bytes(raw[:i] + raw[i + rng.randint(1, 16):]), "byte:delete"
    n = rng.choice([0, 1, 7, len(raw), len(raw) - 8, 2**31, 2**63, 100_000_001])
    return n.to_bytes(8, "little") + bytes(raw[8:]), "byte:length"


def flip_data(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """One changed byte of the data section, checksums as written: must be detected."""
    n = int.from_bytes(data[:8], "little")
    start = 8 + n
    if start >= len(data):
        return byte_mutation(rng, data)
    raw = bytearray(data)
    i = rng.randrange(start, len(raw))
    raw[i] ^= rng.randrange(1, 256)
    return bytes(raw), "flip-data"


def splice(rng: random.Random, data: bytes, other: bytes) -> tuple[bytes, str]:
    """Tensor data or metadata of another file (checksums recomputed)."""
    a, b = split(data), split(other)
    if a is None or b is None:
        return byte_mutation(rng, data)
    (ha, da), (hb, db) = a, b
    if rng.random() < 0.5:
        ha["__metadata__"] = hb.get("__metadata__", {})
        return join(ha, da, True), "splice:metadata"
    return join(ha, db, True), "splice:data"


MUTATIONS: list[tuple[float, Callable]] = [(0.2, flip_data), (0.3, byte_mutation),
                                           (0.45, field_mutation)]


def mutate(rng: random.Random, data: bytes, others: list[bytes]) -> tuple[bytes, str]:
    """One random mutation of ``data`` (the other seeds feed splices)."""
    r = rng.random()
    for weight, fn in MUTATIONS:
        if r < weight:
            return fn(rng, data)
        r -= weight
    return splice(rng, data, rng.choice(others))
