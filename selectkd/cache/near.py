"""The cached entry nearest to a wanted key: which option a user forgot (`--no-compute` names it)."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.rows import Rows
from ..errors import CacheError
from .store import Entry, Store

# key inputs a user sets with an option, and that option
OPTIONS = {"split": "--split", "limit": "--limit", "max_length": "--max-length", "text_field": "--text-field",
           "text_pair_field": "--text-pair-field", "label_field": "--label-field", "cls_states": "--cls-states",
           "untrained_head_seed": "--allow-untrained-head", "head": "--student-head", "numerics": "--device",
           "teachers": "--teacher"}


FLAGS = {"cls_states", "untrained_head_seed"}  # on/off options: the fix adds or drops the flag


NOT_OPTIONS = ("data", "tokenizer")  # no option brings these back: the entry must be scored


@dataclass
class NearEntry:
    """A complete entry of the same kind and model whose key inputs differ from the wanted ones."""

    key: str
    diff: dict  # key input -> (cached value, asked value)

    @property
    def forgotten(self) -> bool:
        """Only options a user forgets differ: worth a warning before scoring anew. Another split or
        teacher is chosen on purpose, and distill sets the [CLS] states itself (--pt-alpha)."""
        return bool(self.diff) and set(self.diff) <= set(OPTIONS) - {"split", "teachers", "cls_states"}

    def described(self) -> str:
        parts = []
        for name, (cached, asked) in self.diff.items():
            if name == "tokenizer":
                parts.append("the tokenizer")
            elif name == "data" and cached == asked:
                parts.append(f"--data (the rows of {cached} changed since)")
            else:
                option = "--data" if name == "data" else OPTIONS[name]
                parts.append(f"{option} (cached {_shown(name, cached)}, asked {_shown(name, asked)})")
        return " and ".join(parts)

    def fix(self) -> str:
        """The options that bring the wanted key back to this entry's, or '' when none does."""
        steps = []
        for name, (cached, _) in self.diff.items():
            option = OPTIONS.get(name)
            if name in NOT_OPTIONS:
                continue
            if name == "teachers":
                steps.append("give the --teacher options it was scored with")
            elif name == "numerics":
                steps.append(f"add --device {'cpu' if cached == 'float32' else 'cuda'}")
            elif name in FLAGS or cached is None:
                steps.append(f"{'add' if cached not in (None, False) else 'drop'} {option}")
            else:
                steps.append(f"add {option} {cached}")
        return ", ".join(steps)


def _shown(name: str, value) -> str:
    if name in FLAGS:
        return "on" if value not in (None, False) else "off"
    if name == "teachers":
        return "[" + ", ".join(str(k)[:12] for k in value or []) + "]"
    return "none" if value is None else str(value)


def _place(source: dict | None) -> str:
    """Where rows come from, whatever the split: a file or folder path, a built-in or hub name."""
    source = source or {}
    return str(next((source[k] for k in ("file", "folder", "builtin", "hub") if k in source), "?"))


def key_differences(wanted: dict, manifest: dict, rows: Rows) -> dict:
    """Key inputs that differ, as {input: (cached, asked)}, in terms of what the user can change.

    The data fingerprint folds in split and limit, so another --split or --limit of the same
    source is not reported as other data; the teacher keys of a student follow from the teacher
    options, so they are named only when nothing else differs.
    """
    cached = manifest.get("inputs") or {}
    names = [n for n in (*OPTIONS, "tokenizer") if cached.get(n) != wanted.get(n)]
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
    """The complete entry of ``entry``'s kind and model whose inputs differ from ``inputs`` in the fewest fields."""
    import json

    from .store import FORMAT_VERSION, canonical_json

    wanted = json.loads(canonical_json(inputs))
    best = None
    for other in store.entries():
        if other.kind != entry.kind or other.key == entry.key:
            continue
        try:
            manifest = other.manifest()
        except CacheError:
            continue
        cached = manifest.get("inputs") or {}
        if (not manifest.get("complete") or manifest.get("format_version") != FORMAT_VERSION
                or cached.get("model") != wanted.get("model")):
            continue
        diff = key_differences(wanted, manifest, rows)
        if diff and (best is None or len(diff) < len(best.diff)):
            best = NearEntry(other.key, diff)
    return best
