#!/usr/bin/env bash
# Issue 7 §1: cold ingest + dbt of a generated district, the code of BASE (default 4cfecde, the commit the
# issue's "today's figure" was taken at) against this checkout, back to back on this machine, each its
# own `sg-orch bench` (BASE's has no groups: all its stages run; this one's `parts` group). Compare the
# `ingest` and `dbt` rows of the two bench.md files; their ratio is the figure.
#
#   bash scripts/bench_against.sh [BASE] [STUDENTS] [OUT]
set -euo pipefail
base=${1:-4cfecde}
students=${2:-200000}
out=${3:-bench-against}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
tree="$out/base-checkout"
[ -d "$tree" ] || git -C "$root" worktree add -q --detach "$tree" "$base"
(cd "$tree" && uv sync --frozen --quiet && uv run --frozen sg-orch bench --students "$students" --out "$out/base")
(cd "$root" && uv run --frozen sg-orch bench --students "$students" --only parts --out "$out/head")
for side in base head; do
  echo "== $side"
  grep -E '\| (ingest|dbt) \|' "$out/$side/bench.md"
done
