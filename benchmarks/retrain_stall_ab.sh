#!/usr/bin/env bash
# The retraining stall benchmark on two commits, alternating, in one session: on a shared
# machine whose rendering speed drifts between sessions, this separates the machine from the code.
#
#   bash benchmarks/retrain_stall_ab.sh DATA OLD_COMMIT [NEW_COMMIT=HEAD] [REPEATS=2]
#
# Each commit is checked out in a temporary git worktree and runs its own
# benchmarks/retrain_stall.py under Xvfb with this checkout's .venv (old, new, old, new, ...).
# Writes benchmarks/results/retrain-stall-ab/{old,new}-<commit>-<i>.json and .md.
set -euo pipefail
data=${1:?usage: retrain_stall_ab.sh DATA OLD_COMMIT [NEW_COMMIT] [REPEATS]}
old=$(git rev-parse --short "${2:?old commit}")
new=$(git rev-parse --short "${3:-HEAD}")
repeats=${4:-2}
root=$(git rev-parse --show-toplevel)
out="$root/benchmarks/results/retrain-stall-ab"
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/old" 2>/dev/null || true;
      git -C "$root" worktree remove --force "$work/new" 2>/dev/null || true; rm -rf "$work"' EXIT
git -C "$root" worktree add --detach "$work/old" "$old" >/dev/null
git -C "$root" worktree add --detach "$work/new" "$new" >/dev/null
mkdir -p "$out"
for i in $(seq "$repeats"); do
  for side in old new; do
    commit=$([ "$side" = old ] && echo "$old" || echo "$new")
    echo "$(date +%T) $side $commit, run $i"
    (cd "$work/$side" && PYTHONPATH="$work/$side/src:$work/$side" xvfb-run -a \
      -s "-screen 0 1600x1000x24" "$root/.venv/bin/python" benchmarks/retrain_stall.py \
      --data "$data" --out "$out/$side-$commit-$i.json")
  done
done
