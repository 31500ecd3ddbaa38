"""The cached entry nearest to a wanted key: which option a user forgot (`--no-compute` names it)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..data.rows import Rows
from ..errors import CacheError
from .keys import option_of
from .files import canonical_json
from .store import FORMAT_VERSION, Entry, Store

# key inputs a user chooses on purpose, or that distill sets itself (--pt-alpha asks for [CLS] states):
# a cached entry differing in these is no sign of a forgotten option
ON_PURPOSE = {"split", "teachers", "cls_states"}
NO_FIX = {"data", "tokenizer"}  # no option brings these back: the entry must be scored


@dataclass
class NearEntry:
    """A complete entry of the same kind and model whose key inputs differ from the wanted ones."""

    key: str
    diff: dict  # key input -> (cached value, asked value)
    older: int | None = None  # the cache format of an entry written by an older selectkd

    @property
    def forgotten(self) -> bool:
        """Only options a user forgets differ: worth a warning before scoring anew. Another split or
        teacher is chosen on purpose, and distill sets the [CLS] states itself (--pt-alpha)."""
        return bool(self.diff) and all(option_of(n) and n not in ON_PURPOSE | NO_FIX for n in self.diff)

    def described(self) -> str:
        parts = []
        for name, (cached, asked) in self.diff.items():
            if name == "tokenizer":
                parts.append("the tokenizer")
            elif name == "data" and cached == asked:
                parts.append(f"--data (the rows of {cached} changed since)")
            else:
                option = option_of(name) or name
                parts.append(f"{option} (cached {_shown(name, cached)}, asked {_shown(name, asked)})")
        return " and ".join(parts)

    def fix(self) -> str:
        """The options that bring the wanted key back to this entry's, or '' when none does."""
        steps = []
        for name, (cached, _) in self.diff.items():
            option = option_of(name)
            if name in NO_FIX or option is None:
                continue
            if name == "teachers":
                steps.append("give the --teacher options it was scored with")
            elif name == "numerics":
                steps.append(f"add --device {'cpu' if cached == 'float32' else 'cuda'}")
            elif isinstance(cached, bool) or cached is None:
                steps.append(f"{'add' if cached not in (None, False) else 'drop'} {option}")
            else:
                steps.append(f"add {option} {cached}")
        return ", ".join(steps)


def _shown(name: str, value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if name == "teachers":
        return "[" + ", ".join(str(k)[:12] for k in value or []) + "]"
    return "none" if value is None else str(value)


def _place(source: dict | None) -> str:
    """Where rows come from, whatever the split: a file or folder path, a built-in or hub name."""
    source = source or {}
    return str(next((source[k] for k in ("file", "folder", "builtin", "hub") if k in source), "?"))


UNSHOWN = {"role", "model", "data", "num_labels"}  # the same model by choice; the data is compared below


def key_differences(wanted: dict, manifest: dict, rows: Rows) -> dict:
    """Key inputs that differ, as {input: (cached, asked)}, in terms of what the user can change.

    The data fingerprint folds in split and limit, so another --split or --limit of the same
    source is not reported as other data; the teacher keys of a student follow from the teacher
    options, so they are named only when nothing else differs.
    """
    cached = manifest.get("inputs") or {}
    names = [n for n in {**cached, **wanted} if n not in UNSHOWN and cached.get(n) != wanted.get(n)]
    if "teachers" in names and len(names) > 1:
        names.remove("teachers")
    diff = {n: (cached.get(n), wanted.get(n)) for n in names}
    if cached.get("data") != wanted.get("data") or cached.get("num_labels") != wanted.get("num_labels"):
        here, there = _place(rows.source), _place(manifest.get("data_source"))
        same_rows = cached.get("data") == rows.fingerprint_for(cached.get("split"), cached.get("limit"))
        other_split = "split" in names and "file" not in rows.source  # a dataset's splits: fingerprints of their own
        if here != there or not (same_rows or other_split):
            diff["data"] = (there, here)
    return diff


def nearest_entry(store: Store, entry: Entry, inputs: dict, rows: Rows) -> NearEntry | None:
    """The complete entry of ``entry``'s kind and model whose inputs differ from ``inputs`` in the fewest
    fields; failing that, one of an older cache format (``older`` set: no options find it, it is re-scored)."""
    wanted = json.loads(canonical_json(inputs))
    best = older = None
    for other in store.entries():
        if other.kind != entry.kind or other.key == entry.key:
            continue
        try:
            manifest = other.manifest(current=False)
        except CacheError:
            continue
        if not manifest.get("complete") or (manifest.get("inputs") or {}).get("model") != wanted.get("model"):
            continue
        if manifest.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            older = older or NearEntry(other.key, {}, older=manifest["format_version"])
            continue
        diff = key_differences(wanted, manifest, rows)
        if diff and (best is None or len(diff) < len(best.diff)):
            best = NearEntry(other.key, diff)
    return best or older
