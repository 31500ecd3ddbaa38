"""What selectkd refuses to do with what it reads: run a model's own code, unpickle objects,
keep pickles in the cache, or follow a name out of the store."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from selectkd.models import _load_kwargs, load_classifier, resolve

from .conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth"}


def plant_remote_code(folder: Path, teacher: Path, marker: Path) -> Path:
    """A working copy of ``teacher`` whose config.json points at its own modeling_evil.py (auto_map);
    importing that file writes ``marker``, so the test sees whether it ever ran."""
    shutil.copytree(teacher, folder)
    (folder / "modeling_evil.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('modeling_evil.py was executed')\n"
        "from transformers import BertConfig, BertForSequenceClassification\n\n\n"
        "class EvilConfig(BertConfig):\n    model_type = 'evil'\n\n\n"
        "class EvilForSequenceClassification(BertForSequenceClassification):\n    config_class = EvilConfig\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil", architectures=["EvilForSequenceClassification"],
                  auto_map={"AutoConfig": "modeling_evil.EvilConfig",
                            "AutoModelForSequenceClassification": "modeling_evil.EvilForSequenceClassification"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def one_line_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def score_args(tiny, teacher) -> list[str]:
    return ["score", "--data", str(tiny["csv"]), "--teacher", str(teacher), "--no-progress"]


def test_model_code_runs_only_with_trust_remote_code(tiny, tmp_path):
    marker = tmp_path / "executed"
    evil = plant_remote_code(tmp_path / "evil", tiny["teacher"], marker)
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules")}  # where transformers copies trusted code
    line = one_line_error(run_cli(*score_args(tiny, evil), cache=tmp_path / "c", env=env))
    assert "modeling_evil.py" in line and "--trust-remote-code" in line
    assert not marker.exists() and not (tmp_path / "modules").exists()
    assert not (tmp_path / "c" / "teacher").exists()

    # the flag is threaded through to transformers: the code runs, and the teacher scores
    run_cli(*score_args(tiny, evil), "--trust-remote-code", cache=tmp_path / "c", env=env, check=True)
    assert marker.exists()


def test_trusted_code_is_part_of_the_model_fingerprint(tiny, tmp_path):
    evil = plant_remote_code(tmp_path / "evil", tiny["teacher"], tmp_path / "executed")
    before = resolve(str(evil), tmp_path, trust_remote_code=True).fingerprint
    with open(evil / "modeling_evil.py", "a") as f:
        f.write("# changed\n")
    assert resolve(str(evil), tmp_path, trust_remote_code=True).fingerprint != before
    assert not (tmp_path / "executed").exists()  # resolving reads the code, never imports it


def test_every_command_that_loads_models_has_the_flag(tmp_path):
    for command in ("score", "select", "distill", "finetune"):
        proc = run_cli(command, "--help", cache=tmp_path, env={"COLUMNS": "250"})  # rich cuts long names
        assert proc.returncode == 0 and "--trust-remote-code" in proc.stdout, command


def test_weights_load_from_safetensors_and_a_pickle_is_never_run(tiny, tmp_path):
    import torch

    ref = resolve(str(tiny["teacher"]), tmp_path)
    assert _load_kwargs(ref) == {"trust_remote_code": False, "weights_only": True, "use_safetensors": True}

    # a plain-tensor .bin checkpoint still loads (weights_only), falling back from safetensors
    model, _ = load_classifier(ref, 2)
    plain = tmp_path / "bin"
    plain.mkdir()
    torch.save(model.state_dict(), plain / "pytorch_model.bin")
    model.config.save_pretrained(plain)
    bin_ref = resolve(str(plain), tmp_path)
    assert "use_safetensors" not in _load_kwargs(bin_ref)
    loaded, trained = load_classifier(bin_ref, 2)
    assert trained and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))

    # a .bin whose pickle calls a function on load is refused, and the function never runs
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('pickle ran')",)

    bad = tmp_path / "pickled"
    bad.mkdir()
    torch.save({**model.state_dict(), "payload": Payload()}, bad / "pytorch_model.bin")
    model.config.save_pretrained(bad)
    shutil.copy(tiny["teacher"] / "tokenizer.json", bad / "tokenizer.json")
    line = one_line_error(run_cli(*score_args(tiny, bad), cache=tmp_path / "c"))
    assert "cannot load" in line and str(bad) in line
    assert not marker.exists()


def test_every_torch_load_passes_weights_only_true():
    calls = []
    for path in sorted([*REPO.glob("selectkd/**/*.py"), *REPO.glob("cli/**/*.py"), *REPO.glob("bench/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                safe = any(k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in node.keywords)
                calls.append((f"{path.relative_to(REPO)}:{node.lineno}", safe))
    assert calls, "expected at least the distill checkpoint's torch.load"
    assert [where for where, safe in calls if not safe] == []


def is_pickle(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def test_nothing_in_the_cache_is_pickle(tiny, tmp_path):
    import faiss

    cache = tmp_path / "c"
    args = ["--data", str(tiny["csv"]), "--teacher", str(tiny["teacher"]), "--student", str(tiny["student"]),
            "--cls-states", "--no-progress"]
    run_cli("score", *args, cache=cache, check=True)
    run_cli("select", *args, "--budget", "30", "--name", "sub", cache=cache, check=True)
    kinds: dict[str, int] = {}
    for path in sorted(p for p in cache.rglob("*") if p.is_file()):
        assert path.suffix not in PICKLE_SUFFIXES, path
        with open(path, "rb") as f:
            assert not is_pickle(f.read(2)), path
        if path.suffix == ".json":
            json.loads(path.read_text())
            kind = "json"
        elif path.suffix == ".arrow":
            pa.ipc.open_file(pa.memory_map(str(path))).read_all()
            kind = "arrow"
        elif path.suffix == ".faiss":  # the one non-Arrow data file: faiss's own flat format
            assert faiss.read_index(str(path)).ntotal == len(tiny["rows"])
            kind = "faiss"
        else:
            assert path.suffix == ".lock" and path.stat().st_size == 0, path
            kind = "lock"
        kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds["arrow"] == 5 and kinds["json"] == 4 and kinds["faiss"] == 1, kinds  # score + select's files


def test_a_key_from_a_tampered_provenance_cannot_leave_the_store(tiny, tmp_path):
    cache = tmp_path / "c"
    run_cli("select", "--data", str(tiny["csv"]), "--teacher", str(tiny["teacher"]), "--student",
            str(tiny["student"]), "--budget", "20", "--name", "sub", "--no-progress", cache=cache, check=True)
    prov_path = cache / "selections" / "sub" / "provenance.json"
    prov = json.loads(prov_path.read_text())
    prov["cache"]["student"] = "../../outside"
    prov_path.write_text(json.dumps(prov))
    out = tmp_path / "out.csv"
    line = one_line_error(run_cli("export", "--selection", "sub", "--out", str(out), cache=cache))
    assert "'../../outside' is not a cache key" in line
    assert not out.exists()


@pytest.mark.parametrize("name", ["..", "../x", "/tmp/x", "a/b", "", ".hidden"])
def test_cache_keys_are_never_paths(name, tmp_path):
    from selectkd.cache.store import Store
    from selectkd.errors import CacheError

    with pytest.raises(CacheError, match="is not a cache key"):
        Store(tmp_path).find(name)
    with pytest.raises(CacheError, match="is not a cache key"):
        Store(tmp_path).entry("teacher", name)
