#!/usr/bin/env bash
# Continue the 10% recipe study (bench/reproduce.py) in the background, from a frozen copy of this checkout's HEAD
# (a git worktree): the study runs for days, and code edited meanwhile must not change the runs it makes. Records
# (committed as each run finishes), run folders, the log and the report stay in this checkout. A finished run is
# never redone, so stopping it (the end of a session ends every process) and calling this again loses at most the
# run in progress.
#
#   bench/study_continue.sh r8                       # one dataset at a time: the tiers go tier by tier over
#   bench/study_continue.sh 20ng core strategies     #   every dataset given (default tiers: core strategies teachers)
#   bench/study_continue.sh r8,20ng,tweets-binary budgets   # the choice and the budgets tier need all three
#   bench/study_continue.sh 20ng prepare             # only fit the teacher and score the pool (--prepare-only)
#
# While bench/runs/reproduce/PAUSE exists the study waits before its next run (other work on the machine would
# inflate a run's seconds). Log: bench/runs/reproduce.log; report: bench/runs/report/RESULTS.md (docs/RESULTS.md is
# written by `python bench/reproduce.py --render-only`). STUDY_WORKTREE moves the frozen copy (default ../study).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
IFS=, read -r -a data <<< "$1"
shift
tiers=("$@")
[ ${#tiers[@]} -gt 0 ] || tiers=(core strategies teachers)
what=(--tiers "${tiers[@]}")
[ "${tiers[*]}" != prepare ] || what=(--prepare-only)
repo=$PWD
frozen=${STUDY_WORKTREE:-$(dirname "$repo")/study}
pkill -f "$frozen/bench/reproduce.py" || true  # this checkout's own study, if one runs
git worktree remove --force "$frozen" 2>/dev/null || true
git worktree prune
git worktree add --detach "$frozen" HEAD
mkdir -p bench/runs
rm -f bench/runs/reproduce/PAUSE
# PYTHONPATH: selectkd from the frozen copy too, not this checkout's editable install
PYTHONPATH=$frozen nohup .venv/bin/python "$frozen/bench/reproduce.py" --commit --datasets "${data[@]}" \
    "${what[@]}" --rerun-loaded 2.5 --results "$repo/bench/results/reproduce" \
    --out "$repo/bench/runs/report" --runs "$repo/bench/runs/reproduce" >> bench/runs/reproduce.log 2>&1 &
echo "study of ${data[*]} (${tiers[*]}) running from $frozen at $(git rev-parse --short HEAD), pid $!; log: bench/runs/reproduce.log"
