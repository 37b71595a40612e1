"""Where colour is lost: the measurements behind the colour fix (issue 20, training/colour.py).

    python benchmarks/colour_anatomy.py                       # the shipped open models
    python benchmarks/colour_anatomy.py --models vqct-open-f8 runs/x/export --tag x

For each model:

* ``chroma``: on the first 20 open test photos at native size, the slope of the reconstruction's
  Y / Cb / Cr on the input's and the PSNR per axis (``evaluation/colour.py``);
* ``flat``: flat colours at 256² decoded from tokens and from the unquantized latent, the same
  colour as a 128² patch inside a photo (from tokens, PSNR over the patch's inner 96²), and the
  flat colour with Gaussian noise (σ 12) added (PSNR against the clean colour), each with the mean
  colour that came back. If the patch and the noisy version fail like the flat image, the cause is
  not GroupNorm on a constant input;

and once for the data and the loss:

* ``training_colours``: the principal axes of the open training photos' pixel colours (300 photos
  resized to 64², the model's [-1, 1] scale) and their standard deviations;
* ``perceptual``: the EfficientNet-Lite0 perceptual distance against L1 for halving Cr, halving Cb,
  removing all chroma, lowering contrast by 10 % and a 3x3 box blur (16 test photos at 128²).

Writes benchmarks/results/colour_anatomy.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.evaluation.colour import ChromaMeter
from vqct_tokenizer.evaluation.plain_inputs import plain_images, psnr_uint8

ROOT = Path(__file__).resolve().parents[1]
YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def _photos(listing: Path, n: int) -> list[Path]:
    return [listing.parent / line.strip() for line in listing.read_text().splitlines()[:n] if line.strip()]


def _to_model(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 127.5 - 1


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()


@torch.no_grad()
def chroma(tok: VQCTTokenizer, photos: list[Path]) -> dict:
    meter = ChromaMeter()
    for path in photos:
        image = np.asarray(Image.open(path).convert("RGB"))
        image = image[: image.shape[0] // 8 * 8, : image.shape[1] // 8 * 8]
        meter.update(image, tok.reconstruct(image, resize=False, output_type="np", decode_precision="fp32"))
    return meter.result()


@torch.no_grad()
def flat(tok: VQCTTokenizer, photo: Path) -> dict:
    m, cb = tok.model, tok.codebook
    scene = np.asarray(Image.open(photo).convert("RGB"))[:256, :256]
    inner = slice(80, 176)
    rng = np.random.default_rng(0)
    out = {}
    for name in ("flat-green", "flat-magenta", "flat-teal", "flat-red", "flat-blue", "flat-grey"):
        a = plain_images(256)[name]
        x = _to_model(a)
        from_tokens = _to_uint8(m.decode_ids(m.encode_ids(x, cb), cb))
        unquantized = _to_uint8(m.decode_latent(m.encode_latent(x)))
        patch = scene.copy()
        patch[64:192, 64:192] = a[:128, :128]
        in_photo = _to_uint8(m.decode_ids(m.encode_ids(_to_model(patch), cb), cb))
        noisy = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
        from_noisy = _to_uint8(m.decode_ids(m.encode_ids(_to_model(noisy), cb), cb))
        mean = lambda img: [int(v) for v in img.reshape(-1, 3).mean(0).round()]  # noqa: E731
        out[name] = {"rgb": [int(v) for v in a[0, 0]],
                     "tokens_db": round(psnr_uint8(from_tokens, a), 2), "tokens_mean": mean(from_tokens),
                     "unquantized_db": round(psnr_uint8(unquantized, a), 2),
                     "patch_in_photo_db": round(psnr_uint8(in_photo[inner, inner], patch[inner, inner]), 2),
                     "patch_mean": mean(in_photo[inner, inner]),
                     "noisy_db": round(psnr_uint8(from_noisy, a), 2), "noisy_mean": mean(from_noisy)}
    return out


def training_colours(listing: Path, n: int = 300) -> dict:
    pixels = np.concatenate([np.asarray(Image.open(p).convert("RGB").resize((64, 64))).reshape(-1, 3) / 127.5 - 1
                             for p in _photos(listing, n)])
    var, vec = np.linalg.eigh(np.cov(pixels.T))
    order = np.argsort(var)[::-1]
    return {"photos": n, "axes": [[round(float(v), 3) for v in vec[:, i]] for i in order],
            "stds": [round(float(np.sqrt(var[i])), 3) for i in order],
            "note": "principal axes of pixel colour (rows: R, G, B weights), largest first; luminance, "
                    "blue-orange, green-magenta"}


@torch.no_grad()
def perceptual(photos: list[Path]) -> dict:
    from vqct_tokenizer.training.perceptual import EffNetPerceptual

    net = EffNetPerceptual().eval()
    x = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB").resize((128, 128)))).permute(2, 0, 1)
                     for p in photos]).float() / 127.5 - 1
    inverse = torch.linalg.inv(YCBCR)

    def scaled(s: list[float]) -> torch.Tensor:
        y = torch.einsum("ij,bjhw->bihw", YCBCR, x) * torch.tensor(s).view(1, 3, 1, 1)
        return torch.einsum("ij,bjhw->bihw", inverse, y)

    changes = {"Cr halved": scaled([1, 1, 0.5]), "Cb halved": scaled([1, 0.5, 1]), "no chroma": scaled([1, 0, 0]),
               "contrast -10 %": scaled([0.9, 1, 1]), "3x3 box blur": F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)}
    out = {}
    for name, y in changes.items():
        p, l1 = net(x, y).item(), (x - y).abs().mean().item()
        out[name] = {"perceptual": round(p, 4), "l1": round(l1, 4), "perceptual_per_l1": round(p / l1, 2)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["vqct-open-f8", "baseline-open-f8"])
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("VQCT_DATA", ROOT.parent / "shared" / "data")))
    p.add_argument("--tag", default=None, help="key prefix for the models' entries (e.g. r3)")
    p.add_argument("--skip-data", action="store_true", help="models only: keep the data and loss sections as they are")
    p.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "colour_anatomy.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    test = args.data_root / "open" / "test.txt"
    report = json.loads(args.output.read_text()) if args.output.is_file() else {"what": __doc__.split("\n\n")[0]}
    report.setdefault("models", {})
    for model in args.models:
        tok = VQCTTokenizer.from_pretrained(model).float()
        key = f"{args.tag}:{model}" if args.tag else str(model)
        report["models"][key] = {"chroma": chroma(tok, _photos(test, 20)), "flat": flat(tok, _photos(test, 1)[0])}
        print(key, json.dumps(report["models"][key]["chroma"]))
    if not args.skip_data:
        report["training_colours"] = training_colours(args.data_root / "open" / "train.txt")
        report["perceptual"] = perceptual(_photos(test, 16))
        print(json.dumps(report["training_colours"]), json.dumps(report["perceptual"]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
