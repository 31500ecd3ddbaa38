"""Selection at internet scale on one machine: 100M scored rows, coverage on 10M x 384 float16 embeddings.

    .venv/bin/python bench/scale_bench.py --repeats 3 --out bench/results

Builds two synthetic caches once under --root (about 12 GB), chunk by chunk with the library's own
writers (``EntryWriter``, ``scores_table`` as `score` writes scores.arrow, record batches of 1M rows):

* big: --rows (100,000,000) rows, 3 classes, one teacher (uid + logits float32[3], parts of 1,048,576
  rows) and the student entry (scores.arrow: uid, label, logits, entropy, margin, least_confidence, kl);
* emb: --emb-rows (10,000,000) rows, student scores plus an embedding entry of unit vectors (384
  float16 dimensions, 60 Gaussian blobs of unequal sizes) in parts of 262,144 rows; no teacher. 1% of
  the rows are planted near-duplicates (distance 0 to 0.09) of an earlier row, half of them from an
  earlier part; the pairs are kept in emb-planted.npy.

Then measures, each repeat in a FRESH python subprocess (its own peak RSS), what `selectkd select` runs
once `score` has found the entries: the checksums of every file (`score` checks them before reusing an
entry), ``choose_from_cache`` (the pool read part by part), ``as_selection`` + ``save_selection``, and the
summary table the command prints. Cases: entropy, random, entropy --per-class and ccs at 10% of the big
pool; coverage (30 clusters, entropy inside) and entropy --dedup 0.1 at 10% of the emb pool (with the share
of planted duplicates it dropped). Peak RSS is VmHWM per phase (anonymous memory + touched pages of
memory-mapped files), reset between phases. dedup_sizes times --dedup's exact search against its list
search on the first 4k..64k rows of the emb pool (where EXACT_ROWS comes from) and counts where they differ.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from select_bench import (Phases, _children_cpu, entry_inputs, machine_info,  # noqa: E402
                          synthetic_logits)

_T_START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
BUILD_VERSIONS = {"big": 1, "emb": 2}  # bump when a pool's synthetic data changes
PART = 1 << 20
EMB_PART = 1 << 18
CLASSES = 3
TARGETS = {"select": (60.0, 4096.0), "coverage": (300.0, 4096.0), "dedup": (300.0, 4096.0)}  # seconds, peak MiB
PLANTED = 0.01  # share of the emb pool's rows that are near copies of an earlier row
DEDUP_SIZES = (4096, 8192, 16384, 32768, 65536)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the caches, built once ---------------------------------------------------------------------------

def build(root: Path, name: str, n: int, emb_dim: int, seed: int) -> dict:
    """The entries of one synthetic pool under ``root`` (reused when its build record exists)."""
    import numpy as np
    import pyarrow as pa

    from selectkd.cache.arrays import fixed_list
    from selectkd.cache.keys import hash_inputs
    from selectkd.cache.store import EntryWriter, Store, part_name
    from selectkd.scoring.student import scores_table
    from selectkd.uncertainty import softmax

    record = root / f"{name}.json"
    if record.exists():
        built = json.loads(record.read_text())
        if built.get("build_version") == BUILD_VERSIONS[name] and built["rows"] == n:
            return built
    store = Store(root)
    t0 = time.perf_counter()
    data = f"synthetic-{name}-{n}"
    extra = {"num_labels": CLASSES, "bench_seed": seed, "bench_version": BUILD_VERSIONS[name]}
    teacher = embedding = None
    if not emb_dim:
        tin = entry_inputs("teacher", data, {**extra, "cls_states": False, "untrained_head_seed": None})
        teacher = store.entry("teacher", hash_inputs(tin))
    else:
        ein = entry_inputs("embedding", data, {**extra, "head": "probe", "pooling": "mean", "emb_dim": emb_dim})
        embedding = store.entry("embedding", hash_inputs(ein))
    sin = entry_inputs("student", data, {**extra, "head": "probe", "pooling": "mean",
                                         "teachers": [teacher.key] if teacher else [],
                                         "embedding": embedding.key if embedding else None})
    student = store.entry("student", hash_inputs(sin))
    meta = {"num_rows": n, "num_labels": CLASSES, "label_names": [str(c) for c in range(CLASSES)],
            "data_source": {"synthetic": "scale_bench"}}
    side = EntryWriter(teacher, tin, {**meta, "role": "teacher", "model_name": "synthetic-teacher", "part_rows": PART,
                                      "columns": {"logits": [CLASSES]}}) if teacher else \
        EntryWriter(embedding, ein, {**meta, "role": "embedding", "model_name": "synthetic-student",
                                     "part_rows": EMB_PART})
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((60, max(emb_dim, 1))).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.dirichlet(np.full(60, 2.0))
    step = EMB_PART if emb_dim else PART
    reservoir = np.zeros((0, max(emb_dim, 1)), dtype=np.float32), np.zeros(0, dtype=np.int64)  # earlier parts' rows
    planted = []

    def plant(r, x: np.ndarray, uids: np.ndarray) -> None:
        """Overwrite 1% of the part's rows with near copies of earlier rows (half from earlier parts)."""
        nonlocal reservoir
        dst = np.sort(r.choice(np.arange(1, len(x)), int(PLANTED * len(x)), replace=False))
        at = r.integers(0, dst)  # an earlier row of this part
        x_src, src_uid = x[at].copy(), uids[at]
        if len(reservoir[1]):
            cross = np.arange(len(dst)) % 2 == 0
            pick = r.integers(0, len(reservoir[1]), int(cross.sum()))
            x_src[cross], src_uid[cross] = reservoir[0][pick], reservoir[1][pick]
        away = r.standard_normal(x_src.shape).astype(np.float32)
        away *= (r.uniform(0, 0.09, len(dst)) / np.linalg.norm(away, axis=1)).astype(np.float32)[:, None]
        x[dst] = x_src + away
        x[dst] /= np.linalg.norm(x[dst], axis=1, keepdims=True)
        planted.append(np.stack([src_uid, uids[dst]], axis=1))
        keep = r.choice(len(x), 4096, replace=False)
        reservoir = x[keep].copy(), uids[keep]

    def write_scores(tmp: Path) -> None:
        schema = None
        with pa.OSFile(str(tmp), "wb") as sink:
            writer = None
            for i, lo in enumerate(range(0, n, step)):
                m = min(step, n - lo)
                r = np.random.default_rng([seed, i])
                labels, t_logits, s_logits = synthetic_logits(r, m, CLASSES)
                uids = np.arange(lo, lo + m, dtype=np.int64)
                if teacher:
                    side.write_table(part_name(i), pa.table({"uid": pa.array(uids), "logits": fixed_list(t_logits)}))
                else:
                    which = r.choice(len(weights), size=m, p=weights)
                    x = r.standard_normal((m, emb_dim), dtype=np.float32) * np.float32(0.8 / np.sqrt(emb_dim))
                    x += centres[which]
                    x /= np.linalg.norm(x, axis=1, keepdims=True)
                    plant(r, x, uids)
                    side.write_table(part_name(i), pa.table({"uid": pa.array(uids),
                                                             "embedding": fixed_list(x.astype(np.float16))}))
                table = scores_table(uids, labels, s_logits, [softmax(t_logits)] if teacher else [])
                if writer is None:
                    schema = table.schema
                    writer = pa.ipc.new_file(sink, schema)
                writer.write_table(table)
                if i % 10 == 0:
                    log(f"  {name}: {lo + m:,} of {n:,} rows")
            writer.close()

    with student.lock(), (teacher or embedding).lock():
        w = EntryWriter(student, sin, {**meta, "role": "student", "model_name": "synthetic-student", "head": "probe",
                                       "teachers": [teacher.key] if teacher else [],
                                       **({"embedding": embedding.key} if embedding else {})})
        w.write_file("scores.arrow", write_scores)
        side.finish(seconds=0.0, **({"embedding_dim": emb_dim} if emb_dim else {"tokens_scored": 0}))
        if planted:
            np.save(root / f"{name}-planted.npy", np.concatenate(planted))
        w.finish(seconds=0.0)
    built = {"name": name, "rows": n, "classes": CLASSES, "embedding_dim": emb_dim, "build_version": BUILD_VERSIONS[name],
             "student_key": student.key, "teacher_key": teacher.key if teacher else None,
             "embedding_key": embedding.key if embedding else None,
             "bytes": student.size_bytes() + (teacher or embedding).size_bytes(),
             "build_seconds": round(time.perf_counter() - t0, 1)}
    record.write_text(json.dumps(built, indent=2))
    return built


# -- one measured run (a fresh process) ---------------------------------------------------------------

def worker(spec: dict) -> dict:
    if spec["case"] == "dedup_sizes":
        return dedup_sizes(spec)
    ph = Phases(_T_START)
    from selectkd.cache.store import Store
    from selectkd.selection.report import summary
    from selectkd.selection.run import as_selection, choose_from_cache
    from selectkd.selection.saved import save_selection
    from selectkd.specs import SelectSpec

    ph.end("import")
    store = Store(spec["root"])
    student = store.entry("student", spec["student_key"])
    side = [store.entry("teacher", spec["teacher_key"])] if spec["teacher_key"] else []
    embedding = store.entry("embedding", spec["embedding_key"]) if spec["embedding_key"] else None
    for entry in [student, *side, *([embedding] if embedding else [])]:
        entry.check()  # what `score` does before it reuses a complete entry
    ph.end("checksums")
    select = SelectSpec(strategy=spec["strategy"], budget=0.1, per_class=spec.get("per_class", False),
                        clusters=spec.get("clusters", 30), seed=0, dedup=spec.get("dedup"))
    choice = choose_from_cache(student, side, select, verify=False)
    ph.end("choose")
    dedup = {}
    if select.dedup is not None:  # uid = row here: the share of planted copies dropped (or whose source was)
        import numpy as np

        planted = np.load(Path(spec["root"]) / "emb-planted.npy")
        dropped = ~choice.eligible
        dedup = {"search": choice.dedup, "dropped": choice.dropped, "planted": len(planted),
                 "planted_found": round(float(np.mean(dropped[planted[:, 1]] | dropped[planted[:, 0]])), 5),
                 "planted_copy_dropped": round(float(np.mean(dropped[planted[:, 1]])), 5)}
    name = f"scale-{spec['case']}-{spec['repeat']}"
    sel = as_selection(name, choice, {"name": name, "strategy": spec["strategy"], "rows": int(len(choice.indices))},
                       [str(c) for c in range(CLASSES)])
    save_selection(store.root, sel, overwrite=True)
    ph.end("save_selection")
    table = summary(sel)
    ph.end("summary")
    return {"case": spec["case"], "phases": ph.records, "rows": len(sel), "pool_rows": table["pool_rows"],
            "classes": table["classes"], "clusters": table["clusters"], **({"dedup": dedup} if dedup else {})}


def dedup_sizes(spec: dict) -> dict:
    """--dedup's exact search and its list search on the first rows of the emb pool: seconds and agreement."""
    import numpy as np

    from selectkd.cache.store import Store
    from selectkd.selection.dedup import find_near_duplicates
    from selectkd.selection.pool import embedding_entry
    from selectkd.cache.arrays import column_matrix

    store = Store(spec["root"])
    table = embedding_entry(store.entry("student", spec["student_key"])).read_parts(verify=False)
    sizes = []
    for n in DEDUP_SIZES:
        x = np.ascontiguousarray(column_matrix(table.slice(0, n), "embedding"))
        chunks = lambda: iter([x])  # noqa: E731
        row = {"rows": n}
        for how, exact_rows in (("exact", n), ("lists", 0)):
            t0 = time.perf_counter()
            found = find_near_duplicates(chunks, n, spec["dedup"], exact_rows=exact_rows)
            row[how] = {"seconds": round(time.perf_counter() - t0, 3), "dropped": int(found.drop.sum()),
                        **found.search}
            row[f"{how}_drop"] = found.drop
        row["differ"] = int((row.pop("exact_drop") != row.pop("lists_drop")).sum())
        sizes.append(row)
    return {"case": "dedup_sizes", "sizes": sizes, "phases": {}}


def run_worker(spec: dict) -> dict:
    """One repeat in a fresh process; with the CPU the rest of the machine used meanwhile."""
    from selectkd.runtime import machine_busy_seconds

    busy0, child0, t0, load0 = machine_busy_seconds(), _children_cpu(), time.perf_counter(), os.getloadavg()[0]
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    wall, own = time.perf_counter() - t0, _children_cpu() - child0
    if done.returncode != 0:
        raise SystemExit(f"{spec['case']} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["other_cpu_cores"] = round(max(0.0, (machine_busy_seconds() - busy0) - own) / wall, 3)
    out["loadavg_1m_before"], out["loadavg_1m_after"] = round(load0, 2), round(os.getloadavg()[0], 2)
    return out


CASES = [  # (case, pool, strategy, extra)
    ("entropy", "big", "entropy", {}),
    ("random", "big", "random", {}),
    ("entropy_per_class", "big", "entropy", {"per_class": True}),
    ("ccs", "big", "ccs", {}),
    ("coverage", "emb", "coverage", {"clusters": 30}),
    ("dedup", "emb", "entropy", {"dedup": 0.1}),
    ("dedup_sizes", "emb", "entropy", {"dedup": 0.1}),
]
MEASURED = ("checksums", "choose", "save_selection", "summary")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=100_000_000)
    p.add_argument("--emb-rows", type=int, default=10_000_000)
    p.add_argument("--emb-dim", type=int, default=384)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cases", nargs="+", default=[c[0] for c in CASES])
    p.add_argument("--root", default=str(REPO / "bench" / "runs" / "scale"), help="where the synthetic caches live")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pools = {}
    if any(c[1] == "big" for c in CASES if c[0] in args.cases):
        log(f"building the big pool ({args.rows:,} rows) unless built")
        pools["big"] = build(root, "big", args.rows, 0, seed=0)
    if any(c[1] == "emb" for c in CASES if c[0] in args.cases):
        log(f"building the embedding pool ({args.emb_rows:,} x {args.emb_dim} float16) unless built")
        pools["emb"] = build(root, "emb", args.emb_rows, args.emb_dim, seed=1)
    results = earlier_results(Path(args.out) / "scale.json", pools)
    stamp = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "code": code_state()}
    for case, pool, strategy, extra in CASES:
        if case not in args.cases:
            continue
        runs = []
        for r in range(1 if case == "dedup_sizes" else args.repeats):
            spec = {"case": case, "strategy": strategy, "repeat": r, "root": str(root), **extra,
                    **{k: pools[pool][k] for k in ("student_key", "teacher_key", "embedding_key")}}
            out = run_worker(spec)
            if case == "dedup_sizes":
                log(f"{case}: " + ", ".join(f"{z['rows']}: exact {z['exact']['seconds']} s, lists "
                                            f"{z['lists']['seconds']} s, differ {z['differ']}" for z in out["sizes"]))
                runs.append({**out, **stamp})
                continue
            total = sum(out["phases"][k]["wall_s"] for k in MEASURED)
            peak = max(out["phases"][k]["peak_rss_mib"] for k in out["phases"])
            log(f"{case} #{r}: {total:.1f} s, peak {peak:.0f} MiB")
            runs.append({**out, "total_s": round(total, 2), "peak_mib": peak, **stamp})
        results[case] = runs
    write(args, pools, results, time.perf_counter() - t0)


def earlier_results(path: Path, pools: dict) -> dict:
    """The cases of an earlier run on pools this run uses unchanged (a case measured again replaces its own);
    the earlier record's pools that this run did not build are added to ``pools``."""
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    same = set()
    for name, b in earlier.get("pools", {}).items():
        if name not in pools:
            pools[name] = b
        if pools[name]["student_key"] == b["student_key"]:
            same.add(name)
    pool_of = {case: pool for case, pool, _, _ in CASES}
    return {case: runs for case, runs in earlier.get("results", {}).items() if pool_of.get(case) in same}


def dedup_lines(results: dict) -> list[str]:
    """What --dedup found of the planted near-duplicates, and its exact search against its list search."""
    L = []
    if "dedup" in results:
        d = results["dedup"][-1]["dedup"]
        search = d["search"]
        L += ["", "## --dedup 0.1 on the emb pool", "",
              f"Search: {search['search']}" + (f", {search['lists']:,} lists (two-level k-means), {search['probes']} "
                                               f"probed per row, PCA to {search['projected_dims']} dimensions"
                                               if search["search"] == "lists" else "")
              + f"; {search.get('candidate_pairs', search['pairs']):,} candidate pairs, {search['pairs']:,} within "
              f"the radius; {d['dropped'].get('near_duplicates', 0):,} rows dropped. Of the {d['planted']:,} planted "
              f"pairs (copies at distance 0 to 0.09 of an earlier row, half of them in an earlier part), "
              f"{100 * d['planted_found']:.2f}% lost a row (the copy, or its source to an earlier near row) and "
              f"{100 * d['planted_copy_dropped']:.2f}% lost the copy itself."]
    if "dedup_sizes" in results:
        L += ["", "## --dedup: the exact search against the list search (first rows of the emb pool, one process)", "",
              "| rows | exact s | lists s | lists | dropped (exact) | rows the two differ on |",
              "|---:|---:|---:|---:|---:|---:|"]
        for z in results["dedup_sizes"][-1]["sizes"]:
            L.append(f"| {z['rows']:,} | {z['exact']['seconds']:.2f} | {z['lists']['seconds']:.2f} | "
                     f"{z['lists']['lists']} | {z['exact']['dropped']:,} | {z['differ']} |")
        L += ["", "Up to `EXACT_ROWS` (selectkd/selection/dedup.py) the exact search runs; above it the list search."]
    return L


def code_state() -> str:
    m = machine_info()
    return f"git {m['git_head']}" + (f" with uncommitted changes in {', '.join(m['selectkd_uncommitted_changes'])}"
                                     if m["selectkd_uncommitted_changes"] else "")


def write(args, pools: dict, results: dict, seconds: float) -> None:
    out = Path(args.out)
    command = ".venv/bin/python bench/scale_bench.py " + " ".join(a for a in sys.argv[1:])
    m = machine_info()
    machine = (f"{m['nproc']} cores ({m['cpu_model']}), {m['mem_total']} RAM, Python {m['python']}, numpy {m['numpy']}, "
               f"pyarrow {m['pyarrow']}, faiss {m['faiss']} ({m['faiss_omp_threads']} OpenMP threads)")
    record = {"command": command, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine,
              "code": code_state(), "pools": pools, "results": results, "seconds": round(seconds, 1)}
    (out / "scale.json").write_text(json.dumps(record, indent=2))
    L = ["# Selection at scale: 100M scored rows, coverage on 10M x 384 float16", "",
         f"- command: `{command}`", f"- date: {record['date']}", f"- machine: {record['machine']}",
         f"- code: {record['code']} (each case's own commit and date: scale.json, and the list below)",
         f"- each repeat is a fresh `python` subprocess; medians of the repeats; this invocation took {seconds:.0f} s", "", "## The synthetic caches (built once, chunk by chunk, with the library's writers)", ""]
    for name, b in pools.items():
        what = (f"{b['rows']:,} rows, {b['classes']} classes, one teacher entry (uid + logits float32[3], parts of "
                f"{PART:,} rows) and the student entry's scores.arrow") if name == "big" else \
            (f"{b['rows']:,} rows, student scores.arrow plus an embedding entry of {b['embedding_dim']} float16 "
             f"dimensions in parts of {EMB_PART:,} rows, no teacher")
        L.append(f"- {name}: {what}; {b['bytes'] / 2**30:.1f} GiB on disk, built in {b['build_seconds']:.0f} s")
    L += ["", "## Results", "",
          "Wall seconds and peak RSS (VmHWM: anonymous memory + touched pages of memory-mapped files) per phase, "
          "medians of the repeats; *total* is checksums + choose + save + summary, what `select` runs after "
          "`score` has found the entries.", "",
          "| case | checksums s | choose s | save s | summary s | total s | peak RSS MiB (max) | target | met? | "
          "other procs' CPU (cores) |", "|---|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    pool_of = {case: pool for case, pool, _, _ in CASES}
    timed = {case: runs for case, runs in results.items() if case != "dedup_sizes"}
    for case, runs in timed.items():
        med = {k: statistics.median(r["phases"][k]["wall_s"] for r in runs) for k in MEASURED}
        total = statistics.median(r["total_s"] for r in runs)
        peak = max(r["peak_mib"] for r in runs)
        limit_s, limit_mib = TARGETS.get(case, TARGETS["select"])
        met = "yes" if total < limit_s and peak < limit_mib else "no"
        other = max(r["other_cpu_cores"] for r in runs)
        pool = pool_of[case]
        L.append(f"| {case}, {pools[pool]['rows']:,} rows | {med['checksums']:.1f} | {med['choose']:.1f} | "
                 f"{med['save_selection']:.1f} | {med['summary']:.1f} | {total:.1f} | {peak:.0f} | "
                 f"< {limit_s:.0f} s, < {limit_mib / 1024:.0f} GiB | {met} | {other:.2f} |")
    L += ["", "Per repeat (total s / peak MiB), with the code and date each case ran at: " + "; ".join(
        f"{case}: " + ", ".join(f"{r['total_s']:.1f}/{r['peak_mib']:.0f}" for r in runs)
        + f" ({runs[-1].get('code', '?')}, {runs[-1].get('date', '?')})" for case, runs in timed.items())]
    L += dedup_lines(results)
    L += ["", "## The plan past one machine", "",
        "- **More rows than one disk**: an entry's parts are independent files listed in its manifest, so they "
        "can live on a shared filesystem or an object store (pyarrow's filesystems read both); `torchrun` "
        "already scores parts on several machines into one entry. Selection then runs per part where the "
        "parts are: each reader returns its part's top rows per stratum (at most the budget), a merge keeps "
        "the global top (a per-part top-k holds the global top-k); sampling strategies draw Gumbel keys per "
        "row, so the same merge applies; ccs needs two global numbers first (the pruning threshold and the "
        "bin edges), gathered as per-part histograms in a first pass.", ""]
    (out / "scale.md").write_text("\n".join(L))
    log(f"wrote {out / 'scale.md'}")


if __name__ == "__main__":
    main()
