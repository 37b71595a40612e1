"""Our encoder/decoder as a diffusers ``VQModel``.

The VQCT autoencoder is the taming-transformers VQGAN architecture, and so is diffusers' ``VQModel``
(``Encoder``/``Decoder`` of ``DownEncoderBlock2D``/``UpDecoderBlock2D``, their ``Attn*`` variants
for levels with attention, and a ``UNetMidBlock2D`` with one single-head attention). The weights map
one-to-one; only the attention projections change shape (our 1x1 convolutions are diffusers'
``nn.Linear`` layers)::

    from vqct_tokenizer import VQCTTokenizer
    from vqct_tokenizer.interop import to_diffusers_vqmodel

    tok = VQCTTokenizer.from_pretrained("vqct-faces64")
    vq = to_diffusers_vqmodel(tok)                       # needs diffusers: pip install 'vqct-tokenizer[interop]'
    latent = vq.encode(x).latents                         # == tok.model.encode_latent(x)
    ids = tok.model.quantizer.encode(latent, tok.codebook)
    z_q = tok.model.quantizer.lookup(ids, tok.codebook)
    image = vq.decode(z_q, force_not_quantize=True).sample   # == tok.model.decode_latent(z_q)

The quantizer carries over only for a plain VQGAN (``quantizer="vq"``): there the codebook becomes
``vq.quantize.embedding``. VQCT's dual quantizer (k averaged adjectives + one noun, each on half the
channels) has no diffusers counterpart: use our quantizer as above and decode with
``force_not_quantize=True``. The returned model's ``quantize`` then holds a single zero code, so
forgetting ``force_not_quantize`` gives a flat image rather than something plausible but wrong.

diffusers is imported only inside :func:`to_diffusers_vqmodel`; it is not a dependency of this package.
"""

from __future__ import annotations

from typing import Any

import torch

from .config import VQCTConfig

# Within a ResnetBlock, our names -> diffusers' (the rest of the name is the same).
_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
# Within an AttnBlock.
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def check_diffusers_compatible(config: VQCTConfig) -> None:
    """Raise ValueError if diffusers' Encoder/Decoder cannot express this architecture."""
    if config.ch_mult[0] != 1:
        # diffusers' conv_in outputs block_out_channels[0] = ch·ch_mult[0]; ours outputs ch and lets
        # the first ResnetBlock widen (with a shortcut conv diffusers would not have).
        raise ValueError(f"diffusers' VQModel needs ch_mult[0] == 1, this model has ch_mult={list(config.ch_mult)}")
    if config.normalize_codes:
        # our encode_latent l2-normalises each group's latent; diffusers' VQModel.encode would not
        raise ValueError("diffusers' VQModel has no cosine (l2-normalised) code lookup; this model has normalize_codes=true")
    if config.encoder_norm != "group":
        raise ValueError(f"diffusers' Encoder normalises with GroupNorm over the whole image; this model's encoder "
                         f"uses encoder_norm={config.encoder_norm!r} (statistics per position)")
    if config.decoder_norm != "group":
        raise ValueError(f"diffusers' Decoder normalises with GroupNorm over the whole image; this model's decoder "
                         f"uses decoder_norm={config.decoder_norm!r} (statistics per position)")


def diffusers_vqmodel_config(config: VQCTConfig) -> dict[str, Any]:
    """Keyword arguments of ``diffusers.VQModel`` for the same encoder/decoder."""
    check_diffusers_compatible(config)
    n = len(config.ch_mult)
    level_res = [config.resolution // 2 ** i for i in range(n)]  # resolution of level i (encoder order)
    attn = [r in config.attn_resolutions for r in level_res]
    down = tuple("AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in attn)
    # diffusers' up_blocks[j] is our decoder.up[n-1-j]: it runs from the latent resolution upwards
    up = tuple("AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(attn))
    return dict(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(config.ch * m for m in config.ch_mult),
        layers_per_block=config.num_res_blocks,  # diffusers' decoder adds one, as ours does
        act_fn="silu",
        latent_channels=config.z_channels,
        sample_size=config.resolution,
        num_vq_embeddings=config.num_codes if config.quantizer == "vq" else 1,
        norm_num_groups=config.norm_groups,
        vq_embed_dim=config.embed_channels,
        norm_type="group",
        mid_block_add_attention=config.mid_attention,
    )


def _map_block(rest: str, table: dict[str, str]) -> str:
    head, _, tail = rest.partition(".")  # "conv1.weight" -> ("conv1", "weight")
    if head not in table:
        raise KeyError(head)
    return f"{table[head]}.{tail}"


def _map_key(key: str, n_levels: int) -> str:
    """One key of our VQAutoencoder state dict -> the diffusers VQModel key."""
    parts = key.split(".")
    top = parts[0]
    if top in ("quant_conv", "post_quant_conv"):
        return key
    if top not in ("encoder", "decoder"):
        raise KeyError(key)
    sub = parts[1]
    rest = ".".join(parts[2:])
    if sub in ("conv_in", "conv_out"):
        return key
    if sub == "norm_out":
        return f"{top}.conv_norm_out.{rest}"
    if sub == "mid":
        name, _, tail = rest.partition(".")
        mapped = {"block_1": ("resnets.0", _RESNET), "block_2": ("resnets.1", _RESNET),
                  "attn_1": ("attentions.0", _ATTN)}[name]
        return f"{top}.mid_block.{mapped[0]}.{_map_block(tail, mapped[1])}"
    if sub in ("down", "up"):
        level = int(parts[2])
        kind = parts[3]
        tail = ".".join(parts[4:])
        if sub == "down":
            prefix = f"encoder.down_blocks.{level}"
        else:
            prefix = f"decoder.up_blocks.{n_levels - 1 - level}"
        if kind == "block":
            j, _, t = tail.partition(".")
            return f"{prefix}.resnets.{j}.{_map_block(t, _RESNET)}"
        if kind == "attn":
            j, _, t = tail.partition(".")
            return f"{prefix}.attentions.{j}.{_map_block(t, _ATTN)}"
        if kind == "downsample":  # Downsample2D(name="op") keeps its conv as .conv
            return f"{prefix}.downsamplers.0.{tail}"
        if kind == "upsample":
            return f"{prefix}.upsamplers.0.{tail}"
    raise KeyError(key)


def diffusers_state_dict(model_state: dict[str, torch.Tensor], config: VQCTConfig,
                         codebook: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Our ``VQAutoencoder.state_dict()`` -> a state dict for ``diffusers.VQModel(**diffusers_vqmodel_config(config))``.

    Attention q/k/v/proj_out weights (C, C, 1, 1) become Linear weights (C, C). ``codebook`` fills
    ``quantize.embedding.weight`` for ``quantizer="vq"``; otherwise that entry is one zero code.
    """
    check_diffusers_compatible(config)
    n = len(config.ch_mult)
    out: dict[str, torch.Tensor] = {}
    for key, value in model_state.items():
        try:
            new = _map_key(key, n)
        except (KeyError, ValueError, IndexError):
            raise ValueError(f"no diffusers counterpart for weight {key!r}") from None
        if ".attentions." in new and new.endswith(".weight") and value.ndim == 4:
            value = value.reshape(value.shape[0], value.shape[1])  # 1x1 conv -> Linear
        out[new] = value
    if config.quantizer == "vq":
        if codebook is None:
            raise ValueError("a plain VQ model needs its codebook to fill quantize.embedding")
        out["quantize.embedding.weight"] = codebook
    else:
        ref = model_state["quant_conv.weight"]
        out["quantize.embedding.weight"] = torch.zeros(1, config.embed_channels, dtype=ref.dtype, device=ref.device)
    return out


def to_diffusers_vqmodel(tokenizer: Any) -> Any:
    """A ``diffusers.VQModel`` with this tokenizer's encoder, decoder and 1x1 convs, in eval mode.

    Accepts a :class:`~vqct_tokenizer.VQCTTokenizer` (or anything with ``.model``, ``.codebook`` and
    ``.config``). The result is on the tokenizer's device and in its dtype. Raises ImportError
    without diffusers and ValueError for an architecture diffusers cannot express (``ch_mult[0] != 1``).
    See the module docstring for how to use it with VQCT's dual quantizer.
    """
    try:
        from diffusers import VQModel
    except ImportError as e:
        raise ImportError("to_diffusers_vqmodel needs diffusers: pip install 'vqct-tokenizer[interop]'") from e
    config: VQCTConfig = tokenizer.config
    state = {k: v.detach() for k, v in tokenizer.model.state_dict().items()}
    mapped = diffusers_state_dict(state, config, tokenizer.codebook.detach())
    ref = tokenizer.codebook
    vq = VQModel(**diffusers_vqmodel_config(config))
    vq.load_state_dict({k: v.to(torch.float32) for k, v in mapped.items()}, strict=True)
    vq = vq.to(device=ref.device)
    dtype = tokenizer.model.quant_conv.weight.dtype
    if dtype != torch.float32:
        vq = vq.to(dtype=dtype)
    return vq.eval()
