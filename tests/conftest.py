"""Tiny real parts for fast tests: a WordPiece vocab trained with `tokenizers`, BERTs built
from a `BertConfig`, and a CSV of labelled sentences. Seconds, no download."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the user's memo of file hashes: one per test session, never the real ~/.cache
os.environ.setdefault("SELECTKD_FINGERPRINTS", str(Path(tempfile.mkdtemp(prefix="selectkd-fp-")) / "fingerprints.json"))


def _hide_gpus() -> dict | None:
    """The suite checks CPU float32 numbers exactly (a resumed run is bit-identical to an unbroken one, a record's
    dev accuracy is re-computed on the CPU), and every command defaults to CUDA with bf16 autocast where a GPU is:
    hide GPUs from the tests and their subprocesses. Returns the environment that shows them again (for
    tests/test_gpu.py), or None on a machine without one. The devices as the user set them are kept in
    SELECTKD_TESTS_CUDA by the first process, since pytest-xdist's workers inherit the hidden value."""
    shown = os.environ.setdefault("SELECTKD_TESTS_CUDA", os.environ.get("CUDA_VISIBLE_DEVICES", "all"))
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    gpus = list(Path("/dev").glob("nvidia[0-9]*"))
    if not gpus or not shown:  # no GPU, or the user hid them already
        return None
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(gpus))) if shown == "all" else shown}


GPU_ENV = _hide_gpus()

POS = ["good", "great", "lovely", "fine", "happy", "excellent", "nice", "superb"]
NEG = ["bad", "awful", "terrible", "sad", "poor", "horrible", "nasty", "dreadful"]
NEU = ["car", "road", "city", "table", "window", "train", "paper", "river"]


def make_rows(n: int, seed: int = 0, classes: int = 2, max_words: int = 30) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % classes
        words = [rng.choice(NEU) for _ in range(rng.randint(2, max_words))]
        cue = [NEG, POS, NEU][label]
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(cue))
        rows.append({"text": " ".join(words), "label": ["negative", "positive", "neutral"][label]})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def build_tokenizer(folder: Path, texts: list[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(folder)
    return fast


def build_bert(folder: Path, tokenizer, num_labels: int | None, layers: int = 2, hidden: int = 32, seed: int = 0,
               label_names: list[str] | None = None) -> Path:
    """A tiny BERT saved as a normal HF folder; with num_labels its (random) head is saved too,
    with ``label_names`` as its id2label (as `selectkd finetune` saves them)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    if num_labels:
        config.num_labels = num_labels
        if label_names:
            config.id2label = dict(enumerate(label_names))
            config.label2id = {n: i for i, n in enumerate(label_names)}
        model = BertForSequenceClassification(config)
    else:
        model = BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A CSV of 300 rows plus a tiny teacher (with head) and student (no head)."""
    base = tmp_path_factory.mktemp("tiny")
    rows = make_rows(300)
    csv_path = write_csv(base / "train.csv", rows)
    tok = build_tokenizer(base / "tok", [r["text"] for r in rows])
    teacher = build_bert(base / "teacher", tok, num_labels=2, seed=1)
    student = build_bert(base / "student", tok, num_labels=None, layers=1, seed=2)
    return {"base": base, "csv": csv_path, "teacher": teacher, "student": student, "rows": rows, "tokenizer": tok}


def run_cli(*args: str, cache: Path, check: bool | None = None, env: dict | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real `selectkd` command in a subprocess, as a user would (in ``cwd`` when given)."""
    full_env = {**os.environ, "SELECTKD_CACHE": str(cache), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "selectkd", *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc
