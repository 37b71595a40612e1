"""Can a shipped model's decoder learn flat colours from the tokens its encoder gives them?

Fine-tunes only the decoder (encoder and codebook frozen) on batches of 16 flat 64² images of random
colours (arcsine law per channel), Adam lr 1e-4, L1, then scores held-out random flat colours (another
seed) at 128², the plain inputs at 256² and PSNR on the first 20 open test photos at 256², before and
after. Nothing is saved but the figures.

    python benchmarks/decoder_flat_fit.py --data-root ../shared/data --steps 300

Writes benchmarks/results/decoder_flat_fit.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.evaluation.evaluate import evaluate
from vqct_tokenizer.evaluation.plain_inputs import score_plain_inputs, score_random_flats

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vqct-open-f8")
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "decoder_flat_fit.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = VQCTTokenizer.from_pretrained(args.model).float()
    model, codebook = tok.model, tok.codebook
    test = args.data_root / "open" / "test.txt"

    def scores() -> dict:
        photos = evaluate(tok, test, resolution=256, limit=20, compute_fd=False, external=False,
                          progress=False, batch_size=4)["metrics"]["psnr"]
        return {"random_flats_seed1": score_random_flats(tok, seed=1), "photos20_psnr": round(photos, 2),
                "plain": score_plain_inputs(tok)}

    before = scores()
    print("before", before, flush=True)
    opt = torch.optim.Adam(model.decoder.parameters(), lr=1e-4)
    rng = np.random.default_rng(5)
    losses, start = [], time.time()
    model.train()
    for step in range(args.steps):
        colours = torch.from_numpy((np.sin(rng.uniform(0, np.pi / 2, (16, 3))) ** 2).astype(np.float32)) * 2 - 1
        x = colours[:, :, None, None].expand(16, 3, 64, 64).contiguous()
        with torch.no_grad():
            ids = model.encode_ids(x, codebook)
        loss = (model.decode_ids(ids, codebook) - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item() * 127.5)
        if step % 50 == 0:
            print(f"step {step}: L1 {losses[-1]:.2f} levels ({time.time() - start:.0f} s)", flush=True)
    model.eval()
    after = scores()
    print("after", after, flush=True)
    args.out.write_text(json.dumps({
        "model": args.model, "steps": args.steps,
        "train_l1_levels_first_last_50": [round(float(np.mean(losses[:50])), 2), round(float(np.mean(losses[-50:])), 2)],
        "before": before, "after": after}, indent=1) + "\n")


if __name__ == "__main__":
    main()
