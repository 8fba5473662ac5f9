#!/usr/bin/env bash
# Build edgerec's pure-python wheel from a clean copy of the working tree.
#
# Usage: device_tests/build-wheel.sh OUTDIR [PYTHON]
#
# Copies the files git would ship (tracked + untracked-but-not-ignored) into a
# temporary folder and runs `pip wheel --no-deps --no-build-isolation` there, so
# stale build/lib leftovers in the checkout can never leak into the wheel.
# Prints the path of the wheel on stdout (and nothing else).
set -euo pipefail

out=${1:?usage: build-wheel.sh OUTDIR [PYTHON]}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${2:-$root/.venv/bin/python}
mkdir -p "$out"
out=$(cd "$out" && pwd)

src=$(mktemp -d "${TMPDIR:-/tmp}/edgerec-wheel-src.XXXXXX")
trap 'rm -rf "$src"' EXIT

cd "$root"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # -z: NUL separated, safe for any file name; deleted-but-tracked files are skipped
    git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done \
        | xargs -0 cp --parents -t "$src"
else
    tar --exclude=.venv --exclude=build --exclude=dist -cf - . | tar -xf - -C "$src"
fi

rm -f "$out"/edgerec-*.whl
"$py" -m pip wheel --no-deps --no-build-isolation -q -w "$out" "$src" >&2
ls "$out"/edgerec-*-py3-none-any.whl
