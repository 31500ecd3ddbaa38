"""Options and consoles every command shares: --config FILE.toml, --cache-dir, output."""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console

from selectkd.errors import SelectKDError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


# -- --config FILE.toml -------------------------------------------------------------------------

def _load_config(ctx: typer.Context, param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
    """Eager: turn the TOML file into click's default_map, so explicit flags still win."""
    if value is None:
        return value
    try:
        data = tomllib.loads(Path(value).read_text())
    except FileNotFoundError:
        raise SelectKDError(f"config file {value} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SelectKDError(f"config file {value} is not valid TOML ({exc}); fix it") from None
    valid = {p.opts[0].lstrip("-"): p.name for p in ctx.command.params
             if p.param_type_name == "option" and p.opts[0].startswith("--") and p.name not in ("config", "help")}
    unknown = [k for k in data if k.replace("_", "-") not in valid]
    if unknown:
        raise SelectKDError(f"unknown key(s) {', '.join(unknown)} in {value}; valid keys: {', '.join(sorted(valid))}")
    ctx.default_map = {**(ctx.default_map or {}), **{valid[k.replace("_", "-")]: v for k, v in data.items()}}
    return value


ConfigOption = typer.Option(None, "--config", help="TOML file whose keys are this command's long option names; flags win.",
                            is_eager=True, callback=_load_config, exists=False, dir_okay=False)
CacheDirOption = typer.Option(None, "--cache-dir", envvar="SELECTKD_CACHE",
                              help="Store root (default ./cache; env SELECTKD_CACHE).")

# The data columns and run options every data-reading command shares.
TextFieldOption = typer.Option("text", "--text-field", help="Column holding the text.")
TextPairFieldOption = typer.Option(None, "--text-pair-field", help="Column holding the second sentence of a pair.")
LabelFieldOption = typer.Option("label", "--label-field", help="Column holding the label (class id or name).")
DeviceOption = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available; one this machine lacks is refused; bf16 autocast "
                            "on cuda). It changes the numerics, so the cache key.")
ProgressOption = typer.Option(True, "--progress/--no-progress", help="Show progress bars.")
TrustRemoteCodeOption = typer.Option(False, "--trust-remote-code", help="Run the Python code a model folder or hub repo ships (auto_map in config.json). Off by default: such a model is refused; turn it on only for code you have read.")


# -- option groups several commands share, declared once ----------------------------------------

COLUMNS = {"text_field": (str, TextFieldOption), "text_pair_field": (Optional[str], TextPairFieldOption),
           "label_field": (str, LabelFieldOption)}
RUN = {"trust_remote_code": (bool, TrustRemoteCodeOption), "device": (Optional[str], DeviceOption),
       "progress": (bool, ProgressOption), "cache_dir": (Optional[Path], CacheDirOption),
       "config": (Optional[Path], ConfigOption)}


def with_options(*groups: dict) -> Callable:
    """Add option groups to a command: typer reads them from the signature (after the command's own
    options), and the command receives them among its keyword arguments (``**shared``)."""

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
                 for group in groups for name, (kind, option) in group.items()]
        fn.__signature__ = sig.replace(parameters=own + added)
        return fn

    return wrap
