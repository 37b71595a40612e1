"""``optim.trainable=decoder``: a fine-tune of post_quant_conv and the decoder around a frozen encoder
and codebook, so every image keeps its tokens; and its mirror, ``optim.trainable=encoder``, which
keeps what every token decodes to (tiny configs, CPU, seconds)."""

from __future__ import annotations

import json

import pytest
import torch

from test_colour import exported_tiny  # noqa: F401  (fixture)
from test_training import image_dir, tiny_cfg, tiny_prior  # noqa: F401  (fixtures)
from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.training.checkpoint import find_latest, load_checkpoint
from vqct_tokenizer.training.config import load_config
from vqct_tokenizer.training.export import export
from vqct_tokenizer.training.trainer import train

FROZEN = ("encoder.", "quant_conv.")
TRAINED = ("decoder.", "post_quant_conv.")


def train_one_part(trainable: str, start_dir, tiny_prior, image_dir, out):
    """Three steps of ``optim.trainable=<trainable>`` from ``start_dir``, with a spread term and a large plain
    batch (neither may reach a frozen part). Returns the checkpoint state and, for the weights and
    their EMA, {autoencoder key: equal to the start's}."""
    start = VQCTTokenizer.from_pretrained(start_dir)
    train(tiny_cfg(out, tiny_prior, image_dir, "optim.steps=3", "codebook.cosine=true",
                   f"run.init_from={start_dir}", "codebook.source=fixed", f"optim.trainable={trainable}",
                   "loss.spread_weight=1.0", "data.large_plain_every=2", "data.large_plain_size=32",
                   "optim.lr=1e-3"))
    state = load_checkpoint(find_latest(out))
    sameness = []
    for weights in (state["model"], state["model_ema"]) if "model_ema" in state else (state["model"],):
        ae = {k[len("autoencoder."):]: v for k, v in weights.items() if k.startswith("autoencoder.")}
        sameness.append({k: torch.equal(v, start.model.state_dict()[k]) for k, v in ae.items()})
    return start, state, sameness


def optimized_numel(state) -> int:
    return sum(s["exp_avg"].numel() for s in state["opt_g"]["state"].values())


def numel_of(state, prefixes: tuple[str, ...]) -> int:
    return sum(v.numel() for k, v in state["model"].items() if k.startswith("autoencoder.")
               and k[len("autoencoder."):].startswith(prefixes) and v.is_floating_point())


def test_a_decoder_fine_tune_changes_the_decoder_and_keeps_every_token(exported_tiny, tiny_prior, image_dir,  # noqa: F811
                                                                        tmp_path):
    start, state, sameness = train_one_part("decoder", exported_tiny, tiny_prior, image_dir, tmp_path / "ft")
    for same in sameness:
        assert all(same[k] for k in same if k.startswith(FROZEN)), "the frozen encoder moved"
        assert not all(same[k] for k in same if k.startswith(TRAINED)), "three steps changed no decoder weight"
    assert optimized_numel(state) == numel_of(state, TRAINED)  # the optimizer holds only the decoder's parameters

    export(find_latest(tmp_path / "ft"), tmp_path / "tok")
    tuned = VQCTTokenizer.from_pretrained(tmp_path / "tok")
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(3, 3, 32, 32, generator=g) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    before = start.encode(list(images), resize=False)
    assert torch.equal(tuned.encode(list(images), resize=False), before)
    assert torch.equal(tuned.codebook, start.codebook) and tuned.vocab == start.vocab
    assert not torch.equal(tuned.decode(before, output_type="pt"), start.decode(before, output_type="pt"))


@pytest.mark.parametrize("override", ["codebook.source=transfer", "codebook.remap=linear"])
def test_a_decoder_fine_tune_needs_the_start_codebook_frozen(override):
    base = ["optim.trainable=decoder", "codebook.source=fixed", "run.init_from=somewhere"]
    with pytest.raises(ValueError, match="optim.trainable=decoder keeps every token"):
        load_config(None, base + [override])
    with pytest.raises(ValueError, match="optim.trainable=encoder keeps what every token decodes to"):
        load_config(None, ["optim.trainable=encoder", "codebook.source=fixed", "run.init_from=somewhere", override])
    with pytest.raises(ValueError, match="optim.trainable must be one of"):
        load_config(None, ["optim.trainable=codebook"])


def test_an_encoder_fine_tune_changes_the_encoder_and_keeps_what_every_token_decodes_to(  # noqa: F811
        exported_tiny, tiny_prior, image_dir, tmp_path):
    start, state, sameness = train_one_part("encoder", exported_tiny, tiny_prior, image_dir, tmp_path / "enc")
    for same in sameness:
        assert all(same[k] for k in same if k.startswith(TRAINED)), "the frozen decoder moved"
        assert not all(same[k] for k in same if k.startswith(FROZEN)), "three steps changed no encoder weight"
    assert optimized_numel(state) == numel_of(state, FROZEN)

    export(find_latest(tmp_path / "enc"), tmp_path / "tok")
    tuned = VQCTTokenizer.from_pretrained(tmp_path / "tok")
    assert torch.equal(tuned.codebook, start.codebook) and tuned.vocab == start.vocab
    ids = torch.randint(0, 2, (2, 4, 4, 3))  # rows valid in every group: adjectives first, then nouns
    ids[..., 2] += start.config.num_adjectives
    assert torch.equal(tuned.decode(ids, output_type="pt", precision="fp32"),
                       start.decode(ids, output_type="pt", precision="fp32"))


def test_a_discriminator_warm_up_trains_the_critic_before_the_decoder_feels_it(exported_tiny, tiny_prior,  # noqa: F811
                                                                                image_dir, tmp_path):
    """loss.disc_warmup: the PatchGAN trains from loss.disc_start, the decoder gets the adversarial term
    only disc_warmup steps later (a GAN stage added to a trained decoder, round 11's probe)."""
    cfg = tiny_cfg(tmp_path / "gan", tiny_prior, image_dir, "optim.steps=5", "codebook.cosine=true",
                   f"run.init_from={exported_tiny}", "codebook.source=fixed", "optim.trainable=decoder",
                   "loss.disc_start=1", "loss.disc_warmup=2", "run.log_every=1")
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    critic_trained = [r["d"] != 0.0 for r in rows]
    decoder_felt = [r["d_weight"] != 0.0 and r["g"] != 0.0 for r in rows]
    # step index 0: nothing; 1-2: the critic alone; 3-4: both
    assert critic_trained == [False, True, True, True, True]
    assert decoder_felt == [False, False, False, True, True]
    with pytest.raises(ValueError, match="disc_warmup"):
        load_config(None, ["loss.disc_warmup=-1"])
