"""Benchmark the select stage at scale: a 10M-row memory-mapped cache, and coverage k-means on 1M x 384.

Builds synthetic cache entries once, the way the library writes them (``EntryWriter``,
``part_name`` parts, a ``scores.arrow`` made by ``scores_table``, as `score` makes it), then
measures, each repeat in a FRESH python subprocess so that its peak RSS is that run's own:

* ``entropy`` / ``random`` over a 10,000,000-row, 3-class pool: ``load_pool(student,
  [teacher])`` -> ``choose(pool, strategy, 0.1)`` -> ``save_selection(...)`` (the same
  Selection/PoolStats ``select()`` builds). ``select()`` itself first finds the cache keys
  through ``score()``, which needs real models: that part is not measured here.
* ``kmeans_clusters(emb, 30)`` and ``choose(pool, "coverage", 0.1, clusters=30)`` on
  1,000,000 x 384 float32 unit-norm embeddings (a mixture of Gaussian blobs), generated in
  the subprocess; and coverage end to end from a 1M-row student entry with embedding parts
  (``load_pool(..., embeddings=True)`` -> choose -> save).

Peak RSS per phase comes from /proc/self/status VmHWM, reset between phases by writing 5 to
/proc/self/clear_refs; the run's peak is the largest of them (ru_maxrss is recorded too).
RssAnon / RssFile at the end of each phase tell heap from memory-mapped cache pages. The CPU
the rest of the machine used during every run is measured from /proc/stat.

    .venv/bin/python bench/select_bench.py --repeats 3 --out bench/results
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_T_START = time.perf_counter()  # the worker's import phase starts here


REPO = Path(__file__).resolve().parents[1]

BUILD_VERSION = 3  # bump when the synthetic data (or the cache layout) changes


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- memory accounting (worker side) -------------------------------------------------------------

def proc_status() -> dict:
    """VmHWM, VmRSS, RssAnon, RssFile of this process, in MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) / 1024
    return out


def reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Phases:
    """Wall time, CPU time and peak RSS of consecutive phases of one process."""

    def __init__(self, start: float):
        self.records: dict[str, dict] = {}
        self.t = start
        self.cpu = time.process_time()
        self.can_reset = True  # no reset here: the first phase runs from process start
        self.trace = False
        self.snap = None

    def start_trace(self) -> None:
        """tracemalloc from here on (numpy buffers are traced; Arrow's own memory pool is not)."""
        import tracemalloc

        tracemalloc.start(1)
        self.trace = True
        self.snap = tracemalloc.take_snapshot()

    def end(self, name: str) -> dict:
        now = time.perf_counter()
        cpu = time.process_time()
        st = proc_status()
        rec = {"wall_s": round(now - self.t, 4), "cpu_s": round(cpu - self.cpu, 3),
               "peak_rss_mib": round(st["VmHWM"], 1), "rss_end_mib": round(st["VmRSS"], 1),
               "rss_anon_end_mib": round(st.get("RssAnon", 0.0), 1),
               "rss_file_end_mib": round(st.get("RssFile", 0.0), 1)}
        if self.trace:
            import tracemalloc

            cur, peak = tracemalloc.get_traced_memory()
            snap = tracemalloc.take_snapshot()
            rec["traced_end_mib"] = round(cur / 2**20, 1)
            rec["traced_peak_mib"] = round(peak / 2**20, 1)
            rec["traced_new_at_end"] = [f"{d.size_diff / 2**20:+.0f} MiB {d.traceback[0].filename.split('/site-packages/')[-1]}"
                                        f":{d.traceback[0].lineno}" for d in snap.compare_to(self.snap, "lineno")[:6]
                                        if abs(d.size_diff) >= 2**20]
            self.snap = snap
            tracemalloc.reset_peak()
        self.records[name] = rec
        self.can_reset = reset_hwm() and self.can_reset
        self.t = time.perf_counter()
        self.cpu = time.process_time()
        return rec


# -- synthetic data ---------------------------------------------------------------------------------

def synthetic_logits(rng, n: int, classes: int):
    """(labels, teacher logits, student logits): a teacher that mostly agrees with the label,
    a student that is a noisier copy of the teacher."""
    import numpy as np

    labels = rng.integers(0, classes, size=n, dtype=np.int64)
    teacher = rng.normal(0.0, 1.5, size=(n, classes))
    teacher[np.arange(n), labels] += 2.0
    student = 0.7 * teacher + rng.normal(0.0, 1.0, size=(n, classes))
    return labels, teacher.astype(np.float32), student.astype(np.float32)


def blob_embeddings(rng, n: int, dim: int, blobs: int, chunk: int = 65536):
    """(n, dim) float32 unit vectors: a mixture of ``blobs`` Gaussian blobs of unequal sizes
    around random unit centres, normalised. Built chunk by chunk (no float64 copy of the whole)."""
    import numpy as np

    centres = rng.standard_normal((blobs, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.dirichlet(np.full(blobs, 2.0))
    sigma = np.float32(0.8 / np.sqrt(dim))  # noise norm ~0.8 around a unit centre
    out = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        which = rng.choice(blobs, size=hi - lo, p=weights)
        x = rng.standard_normal((hi - lo, dim), dtype=np.float32)
        x *= sigma
        x += centres[which]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[lo:hi] = x
    return out


def entry_inputs(role: str, data: str, extra: dict) -> dict:
    return {"role": role, "model": f"synthetic-{role}", "tokenizer": "synthetic", "data": data, "split": "train",
            "text_field": "text", "text_pair_field": None, "label_field": "label", "limit": None,
            "max_length": 128, "numerics": "float32", **extra}


def write_pair(root: Path, data: str, n: int, classes: int, part_rows: int, seed: int,
               emb_dim: int = 0, blobs: int = 50) -> dict:
    """A teacher entry (uid + logits parts) and a student entry (scores.arrow, and embedding
    parts when ``emb_dim``) over rows uid = 0..n-1, written with EntryWriter like `score` does."""
    import numpy as np
    import pyarrow as pa

    from selectkd.cache.arrays import fixed_list
    from selectkd.cache.keys import hash_inputs
    from selectkd.cache.store import EntryWriter, Store, part_name
    from selectkd.scoring.student import scores_table
    from selectkd.uncertainty import softmax

    store = Store(root)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    labels, t_logits, s_logits = synthetic_logits(rng, n, classes)
    uids = np.arange(n, dtype=np.int64)
    t_gen = time.perf_counter() - t0

    # teacher: uid + logits, part by part
    t1 = time.perf_counter()
    tin = entry_inputs("teacher", data, {"num_labels": classes, "cls_states": False, "untrained_head_seed": None,
                                         "bench_seed": seed, "bench_version": BUILD_VERSION})
    teacher = store.entry("teacher", hash_inputs(tin))
    with teacher.lock():
        w = EntryWriter(teacher, tin, {"role": "teacher", "model_name": "synthetic-teacher", "num_rows": n,
                                       "num_labels": classes, "label_names": [str(c) for c in range(classes)],
                                       "part_rows": part_rows, "columns": {"logits": [classes]},
                                       "data_source": {"synthetic": "select_bench"}})
        for i, lo in enumerate(range(0, n, part_rows)):
            hi = min(n, lo + part_rows)
            w.write_table(part_name(i), pa.table({"uid": pa.array(uids[lo:hi]), "logits": fixed_list(t_logits[lo:hi])}))
        w.finish(seconds=0.0, tokens_scored=0)
    t_teacher = time.perf_counter() - t1

    # the student's embedding entry (optional: parts + nothing else), then its student entry: scores.arrow by
    # the function `score` writes it with, naming the embedding entry as `score` does
    t2 = time.perf_counter()
    t_emb, embedding = 0.0, None
    if emb_dim:
        te = time.perf_counter()
        ein = entry_inputs("embedding", data, {"num_labels": classes, "head": "probe", "pooling": "mean",
                                               "bench_seed": seed, "bench_version": BUILD_VERSION, "emb_dim": emb_dim})
        embedding = store.entry("embedding", hash_inputs(ein))
        with embedding.lock():
            w = EntryWriter(embedding, ein, {"role": "embedding", "model_name": "synthetic-student", "num_rows": n,
                                             "num_labels": classes, "part_rows": part_rows,
                                             "data_source": {"synthetic": "select_bench"}})
            emb = blob_embeddings(np.random.default_rng(seed + 1), n, emb_dim, blobs)
            for i, lo in enumerate(range(0, n, part_rows)):
                hi = min(n, lo + part_rows)
                w.write_table(part_name(i), pa.table({"uid": pa.array(uids[lo:hi]), "embedding": fixed_list(emb[lo:hi])}))
            del emb
            w.finish(seconds=0.0, embedding_dim=emb_dim)
        t_emb = time.perf_counter() - te
    sin = entry_inputs("student", data, {"num_labels": classes, "head": "probe", "teachers": [teacher.key],
                                         "pooling": "mean", "bench_seed": seed, "bench_version": BUILD_VERSION,
                                         "embedding": embedding.key if embedding else None})
    student = store.entry("student", hash_inputs(sin))
    with student.lock():
        w = EntryWriter(student, sin, {"role": "student", "model_name": "synthetic-student", "num_rows": n,
                                       "num_labels": classes, "label_names": [str(c) for c in range(classes)],
                                       "head": "probe", "teachers": [teacher.key],
                                       **({"embedding": embedding.key} if embedding else {}),
                                       "data_source": {"synthetic": "select_bench"}})
        w.write_table("scores.arrow", scores_table(uids, labels, s_logits, [softmax(t_logits)]))
        w.finish(seconds=0.0)
    t_student = time.perf_counter() - t2
    return {"teacher_key": teacher.key, "student_key": student.key, "rows": n, "classes": classes,
            "part_rows": part_rows, "teacher_parts": len(teacher.part_names()),
            "student_parts": len(embedding.part_names()) if embedding else 0, "embedding_dim": emb_dim,
            "teacher_bytes": teacher.size_bytes(),
            "student_bytes": student.size_bytes() + (embedding.size_bytes() if embedding else 0),
            "scores_arrow_bytes": (student.path / "scores.arrow").stat().st_size,
            "seconds": {"generate_logits": round(t_gen, 2), "teacher_entry": round(t_teacher, 2),
                        "student_entry": round(t_student, 2), "of_which_embeddings": round(t_emb, 2),
                        "total": round(time.perf_counter() - t0, 2)}}


# -- the worker: one measured run in a fresh process ------------------------------------------------

class RecordingKmeans:
    """Wraps faiss.Kmeans to record what it was asked to train on and how long training took."""

    log: list = []

    @classmethod
    def install(cls, verbose: bool = False):
        import faiss

        base = faiss.Kmeans

        class K(base):
            def __init__(self, d, k, **kw):
                if verbose:
                    kw["verbose"] = True
                super().__init__(d, k, **kw)

            def train(self, x, *a, **kw):
                t = time.perf_counter()
                obj = super().train(x, *a, **kw)
                cp = self.cp
                cls.log.append({"n_given": int(len(x)), "d": int(self.d), "k": int(self.k),
                                "niter": int(cp.niter), "nredo": int(cp.nredo), "spherical": bool(cp.spherical),
                                "max_points_per_centroid": int(cp.max_points_per_centroid),
                                "min_points_per_centroid": int(cp.min_points_per_centroid),
                                "early_stop_threshold": float(getattr(cp, "early_stop_threshold", float("nan"))),
                                "init_method": str(getattr(cp, "init_method", "?")),
                                "n_trained_on_expected": int(min(len(x), self.k * cp.max_points_per_centroid)),
                                "train_s": round(time.perf_counter() - t, 4),
                                "iterations": len(self.iteration_stats),
                                "search_s_in_training": round(sum(s["time_search"] for s in self.iteration_stats) / 1000, 4),
                                "final_objective": float(obj)})
                return obj

        faiss.Kmeans = K


def worker(spec: dict) -> dict:
    ph = Phases(_T_START)
    import numpy as np

    from selectkd.cache.store import Store
    from selectkd.selection.choose import choose
    from selectkd.selection.pool import load_pool
    from selectkd.selection.saved import PoolStats, Selection, save_selection
    from selectkd.selection.strategies import Pool, kmeans_clusters

    case = spec["case"]
    if case in ("kmeans", "coverage_choose", "coverage_e2e"):
        import faiss

        RecordingKmeans.install(verbose=spec.get("verbose", False))
        threads = faiss.omp_get_max_threads()
    else:
        threads = None
    ph.end("import")
    if spec.get("trace"):
        ph.start_trace()
    out: dict = {"case": case, "spec": spec, "faiss_threads": threads}
    store = Store(spec["root"])
    checks: dict = {}

    def save(pool, choice, strategy):
        picked = choice.indices
        scores = np.asarray(choice.ranking.score, dtype=np.float64)
        name = f"bench-{case}-{spec['repeat']}"
        provenance = {"name": name, "strategy": strategy, "parameters": {"budget": spec["budget"],
                      "budget_rows": choice.budget_rows}, "seed": 0, "score_higher_first": choice.ranking.higher_first,
                      "pool_rows": len(pool), "eligible_rows": int(choice.eligible.sum()), "dropped": choice.dropped,
                      "rows": int(len(picked)), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        sel = Selection(name, pool.uids[picked], scores[picked], np.arange(len(picked), dtype=np.int64), provenance,
                          PoolStats(pool.uids, pool.labels, scores, choice.eligible, choice.ranking.groups, None,
                                      choice.ranking.criterion or strategy))
        path = save_selection(store.root, sel, overwrite=True)
        return sel, path

    if case in ("entropy", "random", "coverage_e2e", "entropy_no_teacher"):
        strategy = {"coverage_e2e": "coverage", "entropy_no_teacher": "entropy"}.get(case, case)
        student = store.entry("student", spec["student_key"])
        teachers = [store.entry("teacher", spec["teacher_key"])] if spec["teacher_key"] else []
        pool = load_pool(student, teachers, embeddings=strategy == "coverage", verify=spec["verify"])
        ph.end("load_pool")
        kw = {"clusters": spec["clusters"]} if strategy == "coverage" else {}
        choice = choose(pool, strategy, spec["budget"], seed=0, **kw)
        ph.end("choose")
        sel, path = save(pool, choice, strategy)
        ph.end("save_selection")
        checks["selected_rows"] = int(len(sel))
        checks["pool_rows"] = len(pool)
        checks["selection_arrow_bytes"] = (path / "selection.arrow").stat().st_size
        if strategy == "entropy":
            rest = np.ones(len(pool), bool)
            rest[choice.indices] = False
            checks["min_selected_entropy"] = float(pool.entropy[choice.indices].min())
            checks["max_unselected_entropy"] = float(pool.entropy[rest].max())
            checks["top_k_correct"] = checks["min_selected_entropy"] >= checks["max_unselected_entropy"]
        if pool.embeddings is not None:
            checks["embeddings_shape"] = list(pool.embeddings.shape)
        checks["teacher_logits_shape"] = list(pool.teacher_logits.shape) if pool.teacher_logits is not None else None
    else:  # in-memory embeddings: kmeans alone, or choose(coverage) on a hand-built Pool
        rng = np.random.default_rng(spec["seed"])
        emb = blob_embeddings(rng, spec["rows"], spec["dim"], spec["blobs"])
        n = len(emb)
        labels, _, s_logits = synthetic_logits(np.random.default_rng(spec["seed"] + 7), n, spec["classes"])
        from selectkd.uncertainty import entropy, least_confidence, margin, softmax

        probs = softmax(s_logits)
        pool = Pool(uids=np.arange(n, dtype=np.int64), labels=labels,
                      entropy=entropy(probs).astype(np.float32), margin=margin(probs).astype(np.float32),
                      least_confidence=least_confidence(probs).astype(np.float32), embeddings=emb)
        del probs, s_logits
        ph.end("generate_embeddings")
        checks["embeddings_mib"] = round(emb.nbytes / 2**20, 1)
        if case == "kmeans":
            clusters = kmeans_clusters(emb, spec["clusters"], 0)
            ph.end("kmeans_clusters")
            sizes = np.bincount(clusters)
            checks["cluster_sizes_min_max"] = [int(sizes.min()), int(sizes.max())]
            checks["clusters_found"] = int(len(np.unique(clusters)))
        else:
            choice = choose(pool, "coverage", spec["budget"], clusters=spec["clusters"], seed=0)
            ph.end("choose")
            sel, path = save(pool, choice, "coverage")
            ph.end("save_selection")
            checks["selected_rows"] = int(len(sel))
            checks["clusters_covered"] = int(len(np.unique(choice.ranking.groups[choice.indices])))
    out["kmeans"] = RecordingKmeans.log
    out["phases"] = ph.records
    out["hwm_reset_works"] = ph.can_reset
    out["ru_maxrss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["peak_rss_mib"] = max(r["peak_rss_mib"] for r in ph.records.values())
    out["checks"] = checks
    return out


# -- the parent: machine load, repeats, report -------------------------------------------------------

def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def other_processes() -> list[str]:
    """Other processes using CPU now (ps %CPU >= 10, lifetime average), for the record."""
    r = subprocess.run(["ps", "-eo", "pid=,pcpu=,args="], capture_output=True, text=True)
    out = []
    for line in r.stdout.splitlines():
        pid, pcpu, cmd = (line.split(None, 2) + ["", ""])[:3]
        if pid != str(os.getpid()) and "select_bench" not in cmd and float(pcpu or 0) >= 10:
            out.append(f"{pid} {pcpu}% {cmd[:160]}")
    return out


QUIET = {"max_s": 0.0, "threshold": 0.5, "waited_s": 0.0}


def wait_quiet() -> float | None:
    """Wait (up to QUIET['max_s']) until the rest of the machine uses < threshold cores; return that load."""
    if QUIET["max_s"] <= 0:
        return None
    from selectkd.runtime import machine_busy_seconds  # here, not at the top: a worker times its own imports

    t0 = time.perf_counter()
    while True:
        b0 = machine_busy_seconds()
        time.sleep(1.0)
        load = machine_busy_seconds() - b0
        if load < QUIET["threshold"] or time.perf_counter() - t0 > QUIET["max_s"]:
            QUIET["waited_s"] += time.perf_counter() - t0
            return round(load, 3)


def run_worker(spec: dict) -> dict:
    from selectkd.runtime import machine_busy_seconds

    quiet = wait_quiet()
    busy0, child0, t0 = machine_busy_seconds(), _children_cpu(), time.perf_counter()
    load0 = os.getloadavg()[0]
    others = other_processes()
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                       capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    busy1, child1 = machine_busy_seconds(), _children_cpu()
    if p.returncode != 0:
        raise RuntimeError(f"worker {spec['case']} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")][-1]
    rec = json.loads(line[len("RESULT "):])
    own = child1 - child0
    rec["process_wall_s"] = round(wall, 3)
    rec["process_cpu_s"] = round(own, 3)
    rec["other_processes_cpu_cores"] = round(max(0.0, (busy1 - busy0) - own) / wall, 3)
    rec["loadavg_1m_before"] = round(load0, 2)
    rec["other_load_before_start"] = quiet
    rec["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    rec["other_bench_processes"] = others
    rec["stderr_tail"] = p.stderr[-2000:]
    rec["stdout_tail"] = "\n".join(x for x in p.stdout.splitlines() if not x.startswith("RESULT "))[-2000:]
    return rec


def machine_info() -> dict:
    import faiss
    import numpy
    import pyarrow

    try:
        import torch

        torch_v = torch.__version__
    except ImportError:
        torch_v = None
    from selectkd.runtime import cpu_model

    cpu = cpu_model()
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "selectkd"],
                           capture_output=True, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "mem_total": mem, "python": platform.python_version(),
            "numpy": numpy.__version__, "pyarrow": pyarrow.__version__, "faiss": faiss.__version__,
            "faiss_omp_threads": faiss.omp_get_max_threads(), "torch": torch_v, "git_head": git,
            "selectkd_uncommitted_changes": dirty.splitlines(), "platform": platform.platform()}


def median(xs):
    return statistics.median(xs) if xs else None


def build(root: Path, args) -> dict:
    """Build (or reuse, when ``build.json`` says the same settings) both synthetic stores."""
    settings = {"version": BUILD_VERSION, "rows": args.rows, "classes": args.classes, "part_rows": args.part_rows,
                "emb_rows": args.emb_rows, "emb_dim": args.emb_dim, "emb_part_rows": args.emb_part_rows,
                "blobs": args.blobs, "seed": args.seed, "coverage_e2e": not args.skip_coverage_e2e}
    marker = root / "build.json"
    if marker.exists():
        old = json.loads(marker.read_text())
        if old["settings"] == settings:
            log(f"reusing the synthetic caches in {root} (built in {old['big']['seconds']['total']} s)")
            old["reused"] = True
            return old
    shutil.rmtree(root / "store", ignore_errors=True)
    log(f"building the {args.rows:,}-row cache in {root} ...")
    big = write_pair(root / "store", "synthetic-10m", args.rows, args.classes, args.part_rows, args.seed)
    log(f"  built in {big['seconds']['total']} s: teacher {big['teacher_bytes'] / 2**20:.0f} MiB in "
        f"{big['teacher_parts']} parts, student scores.arrow {big['scores_arrow_bytes'] / 2**20:.0f} MiB")
    emb = None
    if not args.skip_coverage_e2e:
        log(f"building the {args.emb_rows:,} x {args.emb_dim} embedding cache ...")
        emb = write_pair(root / "store", "synthetic-emb", args.emb_rows, args.classes, args.emb_part_rows,
                         args.seed + 100, emb_dim=args.emb_dim, blobs=args.blobs)
        log(f"  built in {emb['seconds']['total']} s: student {emb['student_bytes'] / 2**20:.0f} MiB in "
            f"{emb['student_parts']} parts")
    info = {"settings": settings, "big": big, "emb": emb, "reused": False}
    marker.write_text(json.dumps(info, indent=2))
    return info


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--part-rows", type=int, default=1_000_000, help="rows per teacher part of the big cache")
    p.add_argument("--budget", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--emb-rows", type=int, default=1_000_000)
    p.add_argument("--emb-dim", type=int, default=384)
    p.add_argument("--emb-part-rows", type=int, default=4096,
                   help="rows per embedding part of the coverage end-to-end cache (4096 = score()'s default)")
    p.add_argument("--blobs", type=int, default=50)
    p.add_argument("--clusters", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", nargs="+", default=["entropy", "random", "entropy_verify", "entropy_no_teacher",
                                                  "kmeans", "coverage_choose", "coverage_e2e"])
    p.add_argument("--trace-cases", nargs="*", default=["entropy", "random", "coverage_e2e"],
                   help="cases that get one extra untimed run under tracemalloc (where the memory goes)")
    p.add_argument("--skip-coverage-e2e", action="store_true")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the synthetic caches go (default: a new temp dir, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--quiet-wait", type=float, default=30.0,
                   help="before each run, wait up to this many seconds for other processes to use < 0.5 cores")
    p.add_argument("--render", type=Path, default=None, help="only rewrite select.md from this select.json")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


TARGETS = {"entropy": (10.0, 2048.0), "random": (10.0, 2048.0), "entropy_verify": (10.0, 2048.0),
           "entropy_no_teacher": (10.0, 2048.0),
           "kmeans": (60.0, None), "coverage_choose": (60.0, None), "coverage_e2e": (60.0, None)}
TIMED = {  # the phases the target is about (the rest is set-up reported beside it)
    "entropy": ["load_pool", "choose", "save_selection"], "random": ["load_pool", "choose", "save_selection"],
    "entropy_verify": ["load_pool", "choose", "save_selection"],
    "entropy_no_teacher": ["load_pool", "choose", "save_selection"], "kmeans": ["kmeans_clusters"],
    "coverage_choose": ["choose", "save_selection"], "coverage_e2e": ["load_pool", "choose", "save_selection"],
}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        res = worker(json.loads(args.worker))
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    if args.render is not None:
        res = json.loads(args.render.read_text())
        (args.render.parent / "select.md").write_text(render_md(res))
        return 0
    command = "/work/main/.venv/bin/python bench/select_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    QUIET["max_s"] = args.quiet_wait
    if args.skip_coverage_e2e:
        args.cases = [c for c in args.cases if c != "coverage_e2e"]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="select-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.workdir is None and not args.keep:
        import atexit

        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    info = machine_info()
    log(f"machine: {info['nproc']} cores, {info['cpu_model']}, numpy {info['numpy']}, pyarrow {info['pyarrow']}, "
        f"faiss {info['faiss']}")
    built = build(workdir, args)
    root = str(workdir / "store")
    results = {"command": command, "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
               "machine": info, "build": built, "workdir": str(workdir),
               "settings": {k: v for k, v in vars(args).items() if k not in ("worker",)}, "cases": {}}
    results["settings"]["out"] = str(args.out)
    results["settings"]["workdir"] = str(args.workdir) if args.workdir else None

    big, emb = built["big"], built["emb"]
    base = {"root": root, "budget": args.budget, "clusters": args.clusters}
    specs = {
        "entropy": {**base, "case": "entropy", "student_key": big["student_key"], "teacher_key": big["teacher_key"],
                    "verify": False},
        "random": {**base, "case": "random", "student_key": big["student_key"], "teacher_key": big["teacher_key"],
                   "verify": False},
        "entropy_verify": {**base, "case": "entropy", "student_key": big["student_key"],
                           "teacher_key": big["teacher_key"], "verify": True},
        "entropy_no_teacher": {**base, "case": "entropy_no_teacher", "student_key": big["student_key"],
                               "teacher_key": None, "verify": False},
        "kmeans": {**base, "case": "kmeans", "rows": args.emb_rows, "dim": args.emb_dim, "blobs": args.blobs,
                   "classes": args.classes, "seed": args.seed + 200},
        "coverage_choose": {**base, "case": "coverage_choose", "rows": args.emb_rows, "dim": args.emb_dim,
                            "blobs": args.blobs, "classes": args.classes, "seed": args.seed + 200},
    }
    if emb is not None:
        specs["coverage_e2e"] = {**base, "case": "coverage_e2e", "student_key": emb["student_key"],
                                 "teacher_key": emb["teacher_key"], "verify": False}

    # one untimed run with faiss verbose on: faiss itself says how many points it trained on
    if any(c in args.cases for c in ("kmeans", "coverage_choose", "coverage_e2e")):
        log("faiss check: kmeans_clusters with verbose=True (untimed)")
        chk = run_worker({**specs["kmeans"], "repeat": -1, "verbose": True})
        lines = [x for x in (chk["stdout_tail"] + "\n" + chk["stderr_tail"]).splitlines()
                 if any(w in x for w in ("Sampling", "Clustering", "WARNING", "Converged"))]
        results["faiss_verbose_check"] = {"lines": lines, "kmeans": chk["kmeans"]}
        log("  " + " | ".join(lines))

    for r in range(args.repeats):
        for case in args.cases:
            spec = {**specs[case], "repeat": r}
            rec = run_worker(spec)
            results["cases"].setdefault(case, []).append(rec)
            ph = rec["phases"]
            log(f"{case} #{r}: " + ", ".join(f"{k} {v['wall_s']:.2f}s/{v['peak_rss_mib']:.0f}MiB" for k, v in ph.items())
                + f"; peak {rec['peak_rss_mib']:.0f} MiB; others {rec['other_processes_cpu_cores']:.2f} cores")
    results["traces"] = {}
    for case in args.trace_cases:
        if case in args.cases:
            log(f"tracemalloc run (untimed): {case}")
            rec = run_worker({**specs[case], "repeat": -2, "trace": True})
            results["traces"][case] = rec
            for k, v in rec["phases"].items():
                if "traced_peak_mib" in v:
                    log(f"  {k}: traced peak {v['traced_peak_mib']:.0f} MiB, end {v['traced_end_mib']:.0f} MiB; "
                        + "; ".join(v["traced_new_at_end"]))
    results["summary"] = summarise(results)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    results["quiet_wait_total_s"] = round(QUIET["waited_s"], 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "select.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "select.md").write_text(render_md(results))
    log(f"wrote {args.out / 'select.md'} and select.json ({results['total_seconds']} s)")
    return 0


def summarise(res: dict) -> dict:
    out = {}
    for case, recs in res["cases"].items():
        phases = list(recs[0]["phases"])
        med = {p: median([r["phases"][p]["wall_s"] for r in recs]) for p in phases}
        total = median([sum(r["phases"][p]["wall_s"] for p in TIMED[case]) for r in recs])
        peak = median([r["peak_rss_mib"] for r in recs])
        max_peak = max(r["peak_rss_mib"] for r in recs)
        t_target, m_target = TARGETS[case]
        out[case] = {"phases_median_s": med, "timed_phases": TIMED[case], "total_median_s": total,
                     "total_all_s": [round(sum(r["phases"][p]["wall_s"] for p in TIMED[case]), 3) for r in recs],
                     "peak_rss_median_mib": peak, "peak_rss_max_mib": max_peak,
                     "phase_peak_rss_median_mib": {p: median([r["phases"][p]["peak_rss_mib"] for r in recs]) for p in phases},
                     "process_wall_median_s": median([r["process_wall_s"] for r in recs]),
                     "other_cores_median": median([r["other_processes_cpu_cores"] for r in recs]),
                     "other_cores_max": max(r["other_processes_cpu_cores"] for r in recs),
                     "loadavg_1m": [r["loadavg_1m_before"] for r in recs],
                     "time_target_s": t_target, "rss_target_mib": m_target,
                     "time_met": total is not None and total < t_target,
                     "rss_met": None if m_target is None else max_peak < m_target, "n": len(recs)}
    return out


def labels(st: dict) -> dict:
    big, e = f"{st['rows'] / 1e6:g}M rows", f"{st['emb_rows'] / 1e6:g}M x {st['emb_dim']}"
    return {
        "entropy": f"entropy, {big} (the whole pool: load_pool verify=False, what select() reads for entries in different row orders)",
        "random": f"random, {big} (load_pool verify=False)",
        "entropy_verify": f"entropy, {big}, load_pool(verify=True) (the default: sha256 of every file)",
        "entropy_no_teacher": f"reference: entropy, {big}, load_pool(student, []) (no teacher entry passed)",
        "kmeans": f"kmeans_clusters(emb, {st['clusters']}), {e} in memory",
        "coverage_choose": f"choose(pool, 'coverage', {st['budget']:g}, clusters={st['clusters']}), {e} in memory",
        "coverage_e2e": f"coverage end to end from a {st['emb_rows'] / 1e6:g}M-row cache "
                        f"(load_pool embeddings=True -> choose -> save)",
    }


def render_md(res: dict) -> str:
    m, b, s = res["machine"], res["build"], res["summary"]
    big, emb = b["big"], b["emb"]
    L = ["# Select stage benchmark: 10M-row memory-mapped cache, coverage k-means on 1M x 384", ""]
    L.append(f"- command: `{res['command']}`")
    L.append(f"- date: {res['date']}")
    L.append(f"- machine: {m['nproc']} cores ({m['cpu_model']}), {m['mem_total']} RAM, Python {m['python']}, "
             f"numpy {m['numpy']}, pyarrow {m['pyarrow']}, faiss {m['faiss']} ({m['faiss_omp_threads']} OpenMP threads), "
             f"torch {m['torch']} (not imported by the measured runs)")
    L.append(f"- code: git {m['git_head']}" + (f" with uncommitted changes in {', '.join(x.split()[-1] for x in m['selectkd_uncommitted_changes'])}"
                                               if m["selectkd_uncommitted_changes"] else ""))
    L.append(f"- each repeat is a fresh `python` subprocess; {res['settings']['repeats']} repeats per case, medians shown; "
             f"total benchmark time {res['total_seconds']} s, of which {res['quiet_wait_total_s']} s waiting before runs "
             f"for other processes to use < 0.5 cores (at most {res['settings']['quiet_wait']:g} s each)")
    L.append("")
    L.append("## The synthetic caches (built once, with `EntryWriter`)")
    L.append("")
    L.append(f"- big: {big['rows']:,} rows, {big['classes']} classes, uid = 0..N-1. Teacher entry: uid + logits "
             f"(FixedSizeList float32[{big['classes']}]) in {big['teacher_parts']} parts of {big['part_rows']:,} rows "
             f"({big['teacher_bytes'] / 2**20:.0f} MiB). Student entry: `scores.arrow` with uid, label, logits, entropy, "
             f"margin, least_confidence, kl (one teacher) made by `selectkd.scoring.student.scores_table`, as `score` makes it, one record batch "
             f"({big['scores_arrow_bytes'] / 2**20:.0f} MiB); no embedding parts (entropy/random never read them). "
             f"Logits from `numpy.random.default_rng({res['settings']['seed']})`, uncertainty from `selectkd.uncertainty`.")
    L.append(f"- build time: {big['seconds']['total']} s (generate logits {big['seconds']['generate_logits']} s, "
             f"teacher entry {big['seconds']['teacher_entry']} s, student entry incl. uncertainty columns "
             f"{big['seconds']['student_entry']} s)" + (" (reused from an earlier build of the same settings)" if b.get("reused") else ""))
    if emb:
        L.append(f"- coverage end to end: {emb['rows']:,} rows, student entry with uid + embedding "
                 f"(FixedSizeList float32[{emb['embedding_dim']}], {res['settings']['blobs']} Gaussian blobs, unit norm) in "
                 f"{emb['student_parts']} parts of {emb['part_rows']:,} rows (score()'s default part size), "
                 f"{emb['student_bytes'] / 2**20:.0f} MiB; teacher entry in {emb['teacher_parts']} parts. "
                 f"Built in {emb['seconds']['total']} s (embeddings {emb['seconds']['of_which_embeddings']} s).")
    L.append("")
    L.append("## Results")
    L.append("")
    L.append("Times are wall seconds, medians of the repeats. *total* is the sum of the phases the target is about "
             "(in bold); *import* is importing `selectkd.selection` (+ faiss for coverage) in the fresh process; *generate* "
             "makes the in-memory embeddings and is not part of the target. Peak RSS is the process's VmHWM "
             "(anonymous memory + touched pages of the memory-mapped cache files), max over phases = the run's peak.")
    L.append("")
    L.append("| case | phases (median s; peak RSS MiB in that phase) | total s | peak RSS MiB (max of repeats) | target | met? | other procs' CPU (cores) |")
    L.append("|---|---|---:|---:|---|---|---:|")
    for case, c in s.items():
        parts = []
        for p, t in c["phases_median_s"].items():
            txt = f"{p} {t:.2f} ({c['phase_peak_rss_median_mib'][p]:.0f})"
            parts.append(f"**{txt}**" if p in c["timed_phases"] else txt)
        target = f"< {c['time_target_s']:.0f} s" + (f", < {c['rss_target_mib'] / 1024:.0f} GB" if c["rss_target_mib"] else "")
        met = ("yes" if c["time_met"] else "NO") + ("" if c["rss_met"] is None else (", yes" if c["rss_met"] else ", NO"))
        L.append(f"| {labels(res['settings']).get(case, case)} | {'; '.join(parts)} | {c['total_median_s']:.2f} | "
                 f"{c['peak_rss_median_mib']:.0f} ({c['peak_rss_max_mib']:.0f}) | {target} | {met} | "
                 f"{c['other_cores_median']:.2f} (max {c['other_cores_max']:.2f}) |")
    L.append("")
    L.append("Since commit b36b247 `select()` reads the pool part by part (`choose_from_cache`), measured at 100M rows "
             "in [scale.md](scale.md); the rows here read the pool whole with `load_pool`, which `select` still does "
             "for entries that hold their rows in different orders (--dedup streams since 4ae5cbc). Arrow files are now written in "
             "record batches of 1,048,576 rows, so a whole-pool read copies its columns out of the memory map (one "
             "chunk was zero-copy): load_pool's peak rose from 1189 to 1466 MiB at 10M rows, while choose fell from "
             "3.4 s / 1085 MiB (sort of the pool, beside other work) to 0.4 s / 836 MiB (partitions).")
    L.append("")
    L.append("Peak RSS is VmHWM, not `ru_maxrss`: on Linux `ru_maxrss` of a child survives `exec` from the forked "
             "copy of the parent, so every run here reports the parent's "
             f"{median([r['ru_maxrss_mib'] for recs in res['cases'].values() for r in recs]):.0f} MiB whatever it did "
             "(recorded in select.json as `ru_maxrss_mib`, not used).")
    L.append("")
    L.append("Per repeat (total s / peak MiB): " + "; ".join(
        f"{case}: " + ", ".join(f"{t:.2f}/{r['peak_rss_mib']:.0f}" for t, r in zip(c["total_all_s"], res["cases"][case]))
        for case, c in s.items()))
    L.append("")
    fv = res.get("faiss_verbose_check")
    if fv:
        km = fv["kmeans"][0] if fv["kmeans"] else {}
        L.append("## What k-means was trained on")
        L.append("")
        rows = res["settings"]["emb_rows"]
        L.append(f"`kmeans_clusters` draws a seeded sample of k x 256 = {km.get('n_given'):,} of the {rows:,} rows "
                 f"(faiss's own cap per centroid, `sample_rows`), fits `faiss.Kmeans(d, k, niter=20, seed=seed, "
                 f"spherical=True, min_points_per_centroid=1)` on it (faiss's `max_points_per_centroid` = "
                 f"{km.get('max_points_per_centroid')}, so it trains on all {km.get('n_trained_on_expected'):,}), then "
                 f"`index.search` assigns all {rows:,} rows to the nearest centroid. faiss's own verbose output in an "
                 f"untimed run with the same data says:")
        L.append("")
        L.append("```")
        L.extend(fv["lines"])
        L.append("```")
        L.append("")
        timed_km = [k for case in ("kmeans", "coverage_choose", "coverage_e2e") for r in res["cases"].get(case, []) for k in r["kmeans"]]
        if timed_km:
            its = sorted({k["iterations"] for k in timed_km})
            L.append(f"In the timed runs `Kmeans.train` took {median([k['train_s'] for k in timed_km]):.2f} s (median of "
                     f"{len(timed_km)} runs) and ran {' or '.join(map(str, its))} of the {timed_km[0]['niter']} iterations "
                     f"asked for: faiss 1.15 stops once the objective no longer changes (its verbose output says "
                     f"\"Converged at iteration N: objective did not change\"; `early_stop_threshold` = "
                     f"{timed_km[0]['early_stop_threshold']:g}). The rest of `kmeans_clusters` is the assignment "
                     f"`index.search` over all {res['settings']['emb_rows']:,} rows.")
            L.append("")
    if res.get("traces"):
        L.append("## Where the memory goes (one extra untimed run per case under tracemalloc)")
        L.append("")
        L.append("tracemalloc sees numpy/Python buffers (not Arrow's own memory pool, not the memory-mapped cache "
                 "pages, which VmHWM counts as RssFile). *new at end* = buffers allocated in the phase and still alive "
                 "after it, by the line that allocated them.")
        L.append("")
        L.append("| case | phase | traced peak MiB | traced live at end MiB | RssAnon / RssFile at end MiB | new at end (by line) |")
        L.append("|---|---|---:|---:|---|---|")
        for case, rec in res["traces"].items():
            for ph, v in rec["phases"].items():
                if "traced_peak_mib" not in v:
                    continue
                L.append(f"| {case} | {ph} | {v['traced_peak_mib']:.0f} | {v['traced_end_mib']:.0f} | "
                         f"{v['rss_anon_end_mib']:.0f} / {v['rss_file_end_mib']:.0f} | {'; '.join(v['traced_new_at_end'])} |")
        L.append("")
    L.append("## Machine load during the timings")
    L.append("")
    L.append("Other work (another helper's accuracy measurement, test runs) shared the 2 cores. For every run the CPU used by "
             "all other processes during that run is measured from /proc/stat (machine busy jiffies minus this run's "
             "own CPU), and the 1-minute load average is recorded before it:")
    L.append("")
    L.append("| case | other processes' CPU per repeat (cores) | loadavg 1m before each | other processes using CPU at the starts |")
    L.append("|---|---|---|---|")
    for case, recs in res["cases"].items():
        seen = sorted({" ".join(x.split()[2:5]) for r in recs for x in r["other_bench_processes"]
                       if not x.split()[2:3] == ["ps"]})
        cores = ", ".join(f"{r['other_processes_cpu_cores']:.2f}" for r in recs)
        loads = ", ".join(str(r["loadavg_1m_before"]) for r in recs)
        L.append(f"| {case} | {cores} | {loads} | {'; '.join(seen) or 'none'} |")
    L.append("")
    L.append("What is excluded: `select()` first calls `score()` to find (and checksum) the cache entries, which needs "
             "real models; here the entries are opened directly with `Store(root).entry(kind, key)`. The cache files were "
             "in the page cache (warm; 24 GiB RAM, no way to drop caches without root), so the times are not cold-disk times.")
    L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    raise SystemExit(main())
