#!/usr/bin/env bash
# The Python packages the pipeline needs on the GPU machine beyond ../shared/tools/
# prepare-gpu-carry.sh's gguf wheel, into .gpu-carry/extra (git-ignored) for call 2 of
# benchmarks/gsm8k_gpu_full.sh's header. Run from the project root, after prepare-gpu-carry.sh.
#   datasets 5.2.0   sampling.py and train.py import it (the offline dataset is a datasets
#                    Dataset on disk); its own needs that the image lacks: dill, multiprocess
#                    (pyarrow, pandas, xxhash, fsspec, huggingface-hub, ... are there: KINDS.md)
#   transformers 5.24.0  the version of the CPU runs and the tests (the image showed 5.17.0);
#                    its 13.5 MB wheel would push call 2 over 64 MiB, so it travels as a
#                    tar.xz of the wheel's contents (~3.5 MiB), unpacked into /tmp/site there
# Versions: those of this repository's .venv. Wheels as the device README says (CPython 3.12,
# manylinux x86-64, --no-deps: every need named). Nothing here is committed.
set -euo pipefail
out=.gpu-carry/extra
py=${PY:-python3}
get=("$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64)
rm -rf "$out" && mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${get[@]}" -d "$out" datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
"${get[@]}" -d "$tmp" transformers==5.24.0
mkdir "$tmp/tf"
"$py" -m zipfile -e "$tmp"/transformers-5.24.0-py3-none-any.whl "$tmp/tf"
tar -C "$tmp/tf" -cf - . | nice -n 19 xz -6 >"$out/transformers-5.24.0.tar.xz"
# what each call carries, the working tree (tracked + untracked-not-ignored files) included
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1)
tree=${tree%%[[:space:]]*}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 2^20 }'; }
size() { du -cb "$@" | tail -1 | cut -f1; }
if [ ! -d .gpu-carry/part1 ] || [ ! -d .gpu-carry/part2 ]; then
  echo "extra $(mib "$(size "$out")"); run ../shared/tools/prepare-gpu-carry.sh for the call totals"
  exit 0
fi
call1=$((tree + $(size .gpu-carry/part1)))
call2=$((tree + $(size .gpu-carry/part2 "$out")))
echo "working tree $(mib "$tree"); call 1 (part1) $(mib "$call1");" \
  "call 2 (part2 + extra) $(mib "$call2")"
for c in "$call1" "$call2"; do
  if ((c > 64 * 2 ** 20)); then
    echo "a call would carry more than 64 MiB: split it" >&2
    exit 1
  fi
done
ls -l "$out"
