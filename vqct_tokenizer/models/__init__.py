"""Model parts shared by inference and training."""

from .autoencoder import AttnBlock, Decoder, Encoder, ResnetBlock
from .quantizer import GroupedQuantizer, nearest_codes
from .vqmodel import VQAutoencoder

__all__ = ["AttnBlock", "Decoder", "Encoder", "GroupedQuantizer", "ResnetBlock", "VQAutoencoder", "nearest_codes"]
