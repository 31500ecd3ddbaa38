"""`selectkd cache ls | info | verify | rm | gc | weights-free`: look after the store's entries and the selections,
and take cached teacher logits to a machine without the teacher's weights."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from selectkd.cli.options import CacheDirOption, ConfigOption, err, out
from selectkd.errors import SelectKDError

cache_app = typer.Typer(help="Look after the cache store: list, inspect, verify and remove its entries and "
                        "selections; list what nothing needs any more (gc); copy a teacher without its weights "
                        "(weights-free), so that its cached logits travel.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")


SELECTION_PREFIX = "selection:"


def _entry_cells(e) -> list[str]:
    """One `cache ls` row; an entry whose manifest cannot be read is listed as damaged, not fatal."""
    from selectkd.cache.store import FORMAT_VERSION

    try:
        m = e.manifest(current=False)
    except SelectKDError:
        return [e.kind, e.key, *["?"] * 6, "damaged"]
    version = m.get("format_version", FORMAT_VERSION)
    complete = "yes" if m.get("complete") is True else "no"
    if version != FORMAT_VERSION:
        complete = "old format"
    inputs, src = m["inputs"], m.get("data_source", {})
    data = src.get("builtin") or src.get("file") or src.get("folder") or src.get("hub") or "?"
    limit = inputs.get("limit")
    return [e.kind, e.key, str(m.get("model_name", "?")), f"{Path(str(data)).name}:{inputs.get('split')}",
            str(inputs.get("max_length", "?")), "none" if limit is None else str(limit), f"{m.get('num_rows', 0):,}",
            f"{e.size_bytes() / 1e6:.1f} MB", complete]


def _selection_cells(root: Path, name: str) -> list[str]:
    """One row of `cache ls`'s selections: what made it, from which data and cache keys."""
    from selectkd.selection.saved import read_provenance

    try:
        prov = read_provenance(root, name)
    except SelectKDError:
        return [name, "?", "?", "?", "damaged (`selectkd cache verify` says why)"]
    d, c = prov["data"], prov["cache"]
    keys = ", ".join([f"student/{c['student'][:12]}", *(f"teacher/{k[:12]}" for k in c["teachers"])])
    rows = prov.get("rows")
    return [name, prov.get("strategy", "?"), "?" if rows is None else f"{rows:,}",
            f"{Path(d['data']).name}:{d['split']}", keys]


@cache_app.command("ls")
def cache_ls(cache_dir: Optional[Path] = CacheDirOption, config: Optional[Path] = ConfigOption) -> None:
    """List cache entries (kind, key, model, data, max length, row limit, rows, size, complete) and selections."""
    from selectkd.cache.store import Store
    from selectkd.selection.saved import list_selections

    store = Store(cache_dir)
    entries = store.entries()
    table = Table("kind", "key", "model", "data", "max len", "limit", "rows", "size", "complete")
    rows = [_entry_cells(e) for e in entries]
    for row in rows:
        table.add_row(*row)
    out.print(table)
    old = [f"{kind}/{key}" for kind, key, *_, complete in rows if complete == "old format"]
    if old:
        out.print(f"{len(old)} entries of an older cache format, never reused: remove them with `selectkd cache rm "
                  f"{' '.join(k.split('/')[1] for k in old)}` ({', '.join(old)})", highlight=False, markup=False)
    names = list_selections(store.root)
    if names:
        sel = Table("selection", "strategy", "rows", "data", "made from")
        for name in names:
            sel.add_row(*_selection_cells(store.root, name))
        out.print(sel)
    out.print(f"{len(entries)} entries and {len(names)} selections in {store.root}")


def _selection_or_entry(store, name: str):
    """NAME of `cache info`/`cache verify`: ``selection:NAME`` is a selection; a bare NAME is the selection of
    exactly that name if one exists, else a cache key or a unique prefix of one. Returns the name or the Entry."""
    from selectkd.selection.saved import check_name, list_selections

    store.check_root()
    if name.startswith(SELECTION_PREFIX):
        return check_name(name[len(SELECTION_PREFIX):])
    if name in list_selections(store.root):
        return name
    return store.find(name)


@cache_app.command("info")
def cache_info(key: str = typer.Argument(..., help="Key or a unique prefix of it; or a selection's name "
                                         "(selection:NAME always means the selection; a bare NAME does when a "
                                         "selection has exactly that name, else it is a key prefix)."),
               cache_dir: Optional[Path] = CacheDirOption, config: Optional[Path] = ConfigOption) -> None:
    """Print an entry's manifest (inputs, files and checksums, timings, probe fit) or a selection's provenance."""
    import json

    from selectkd.cache.store import Store
    from selectkd.selection.saved import read_provenance

    store = Store(cache_dir)
    target = _selection_or_entry(store, key)
    shown = read_provenance(store.root, target) if isinstance(target, str) else target.manifest(current=False)
    out.print_json(json.dumps(shown))


@cache_app.command("verify")
def cache_verify(key: Optional[str] = typer.Argument(None, help="Key or prefix, or a selection's name as for `cache "
                                                     "info` (default: every entry and selection)."),
                 cache_dir: Optional[Path] = CacheDirOption, config: Optional[Path] = ConfigOption) -> None:
    """Recompute every file's checksum and check every selection; exit 1 if anything is damaged or missing.

    A selection is sound when selection.arrow is readable Arrow with uid, score and rank, matches
    the checksum its provenance records (selections saved before checksums have none), and the
    cache entries it was made from still exist.
    """
    from rich.markup import escape

    from selectkd.cache.store import Store
    from selectkd.selection.saved import list_selections, selection_problem

    store = Store(cache_dir)
    if key is None:
        entries, names = store.entries(), list_selections(store.root)
    else:
        target = _selection_or_entry(store, key)
        entries, names = ([], [target]) if isinstance(target, str) else ([target], [])
    checked = [(f"{e.kind}/{e.key}", *e.problem()) for e in entries]
    checked += [(f"selection/{name}", selection_problem(store.root, name), "") for name in names]
    for what, problem, note in checked:
        if problem:
            err.print(f"[red]BAD[/red] {escape(what)}: {escape(problem)}", highlight=False)
        else:
            out.print(f"ok  {what}{note}", highlight=False, markup=False)
    if any(problem for _, problem, _ in checked):
        raise typer.Exit(1)
    tail = f"; {len(names)} selection(s) verified" if names else ""
    out.print(f"{len(entries)} entries verified{tail}")


@cache_app.command("rm")
def cache_rm(keys: List[str] = typer.Argument(..., help="Keys or unique prefixes; or selections' names "
                                              "(selection:NAME, or a bare NAME as for `cache info`)."),
             cache_dir: Optional[Path] = CacheDirOption, config: Optional[Path] = ConfigOption) -> None:
    """Remove entries or selections (whole: the folder is renamed away before it is deleted).

    Removing a selection leaves the cache entries it was made from; `cache gc` then lists those that nothing
    else needs.
    """
    from selectkd.cache.store import Store
    from selectkd.selection.saved import remove_selection, require_selection

    store = Store(cache_dir)
    store.check_writable()
    targets = [_selection_or_entry(store, key) for key in keys]  # every name is checked before the first removal
    for target in targets:
        if isinstance(target, str):
            require_selection(store.root, target)
    for target in targets:
        if isinstance(target, str):
            remove_selection(store.root, target)
            out.print(f"removed selection {target}", highlight=False)
        else:
            store.remove(target)
            out.print(f"removed {target.kind}/{target.key}", highlight=False)


@cache_app.command("gc")
def cache_gc(older_than: Optional[str] = typer.Option(None, "--older-than", help="Only entries written longer ago "
                                                      "than this, e.g. 30d, 12h (units s, m, h, d, w)."),
             yes: bool = typer.Option(False, "--yes", help="Remove what is listed (without it, gc only lists)."),
             cache_dir: Optional[Path] = CacheDirOption, config: Optional[Path] = ConfigOption) -> None:
    """List what the store no longer needs; remove it with --yes.

    That is: entries that no selection, no distill run (while its folder exists) and no kept student entry refers to; entries of another cache format; what killed writers left (temp files, lock files of entries that do not exist, registrations of runs whose folder is gone); an older selectkd's <store>/fingerprints.json. An entry another process is writing is never touched: with --yes, gc then removes nothing and says so.
    """
    from selectkd.cache import gc
    from selectkd.cache.store import Store

    age = gc.parse_age(older_than) if older_than is not None else None
    store = Store(cache_dir)
    found = gc.plan(store, age)
    if found.remove:
        table = Table("remove", "why", "size", "age")
        for c in found.remove:
            days = "" if c.age_seconds is None else f"{c.age_seconds / 86400:.1f} d"
            table.add_row(c.name, c.why, f"{c.bytes / 1e6:.1f} MB", days)
        table.columns[0].overflow = "fold"  # a key is worth reading whole
        out.print(table)
    for e in found.in_use:
        out.print(f"in use (being written by another process, left alone): {e.kind}/{e.key}", highlight=False)
    summary = (f"{len(found.remove)} to remove ({found.bytes / 1e6:.1f} MB), {found.kept} entries kept, "
               f"in {store.root}")
    if not yes:
        out.print(summary + ("; run again with --yes to remove them" if found.remove else ""), highlight=False)
        return
    if found.remove or found.in_use:
        store.check_writable()
    removed = gc.apply(found)
    kept = found.kept + len(found.remove) - len(removed)  # what a selection or run made meanwhile refers to
    out.print(f"removed {len(removed)} ({sum(c.bytes for c in removed) / 1e6:.1f} MB), {kept} entries kept, "
              f"in {store.root}", highlight=False)


@cache_app.command("weights-free")
def cache_weights_free(model: str = typer.Argument(..., help="A local model folder (a teacher you scored) or a "
                                                   "built-in name."),
                       out_dir: Path = typer.Option(..., "--out", help="The new folder: the model's config and "
                                                    "tokenizer, its weight files' sha256 in selectkd_weights.json."),
                       cache_dir: Optional[Path] = CacheDirOption, config: Optional[Path] = ConfigOption) -> None:
    """Copy a model folder without its weights: the copy has the model's cache key, so `selectkd distill
    --teacher OUT` finds the logits cached with the model on a machine that does not have its weights.

    Score once where the teacher runs, then take the cache folder and this copy (kilobytes, not the weights) to
    the machines that distil. What has to run the model (scoring rows its cache does not hold, --live-teacher)
    refuses the copy in one line naming the files to put back.
    """
    from selectkd.cache.store import Store
    from selectkd.errors import ModelError
    from selectkd.models import resolve, weights_free_copy

    ref = resolve(model, Store(cache_dir).root)
    if not ref.local:
        raise ModelError(f"{model} is a hub model: its weights are one download away; give a local folder")
    weights_free_copy(ref.source, out_dir)
    out.print(f"{out_dir}: {model} without its weights (their sha256 in selectkd_weights.json); "
              f"`selectkd distill --teacher {out_dir}` finds the logits cached with {model}", highlight=False)
