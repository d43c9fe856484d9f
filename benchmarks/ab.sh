#!/usr/bin/env bash
# A benchmark on two commits, alternating, in one session: on a shared machine whose speed
# drifts between sessions, this separates the machine from the code.
#
#   bash benchmarks/ab.sh NAME OLD_COMMIT NEW_COMMIT REPEATS COMMAND...
#
# Each commit is checked out in a temporary git worktree, and COMMAND runs there (old, new,
# old, new, ...) with this checkout's .venv as $PY and the commit's own code first on the path.
# $AB_OUT is benchmarks/results/NAME/<old|new>-<commit>-<i> (no suffix): COMMAND writes its
# results there, e.g.
#   bash benchmarks/ab.sh speed-ab 0a26210 HEAD 2 \
#     '$PY -m propl benchmark speed --repeats 15 --device cpu --results $AB_OUT'
set -euo pipefail
name=${1:?usage: ab.sh NAME OLD_COMMIT NEW_COMMIT REPEATS COMMAND...}
old=$(git rev-parse --short "${2:?old commit}")
new=$(git rev-parse --short "${3:?new commit}")
repeats=${4:?repeats}
shift 4
command="$*"
root=$(git rev-parse --show-toplevel)
out="$root/benchmarks/results/$name"
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/old" 2>/dev/null || true;
      git -C "$root" worktree remove --force "$work/new" 2>/dev/null || true; rm -rf "$work"' EXIT
git -C "$root" worktree add --detach "$work/old" "$old" >/dev/null
git -C "$root" worktree add --detach "$work/new" "$new" >/dev/null
mkdir -p "$out"
for i in $(seq "$repeats"); do
  for side in old new; do
    commit=$([ "$side" = old ] && echo "$old" || echo "$new")
    echo "$(date +%T) $side $commit, run $i: $command"
    (cd "$work/$side" && PYTHONPATH="$work/$side/src:$work/$side" PY="$root/.venv/bin/python" \
      AB_OUT="$out/$side-$commit-$i" bash -c "$command")
  done
done
