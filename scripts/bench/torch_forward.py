"""PyTorch eager forward time of an HF model folder, for benches/forward.rs to compare with.

Prints one JSON line: {"median_s": ..., "runs": N, "torch": version, "threads": n}.
Usage: python scripts/bench/torch_forward.py MODEL_DIR BATCH SEQ RUNS
"""
import json
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM

model_dir, batch, seq, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
vocab = model.config.vocab_size
ids = torch.randint(1, vocab, (batch, seq))
times = []
with torch.no_grad():
    model(ids)  # warm-up
    for _ in range(runs):
        start = time.perf_counter()
        model(ids)
        times.append(time.perf_counter() - start)
print(json.dumps({"median_s": statistics.median(times), "runs": runs, "torch": torch.__version__, "threads": torch.get_num_threads()}))
