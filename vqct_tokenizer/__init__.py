"""vqct-tokenizer: images to grids of adjective/noun word tokens and back.

    from vqct_tokenizer import VQCTTokenizer
    tok = VQCTTokenizer.from_pretrained("vqct-open-f8")
    tokens = tok.encode("face.jpg")   # LongTensor (h, w, k+1)
    image = tok.decode(tokens)        # PIL.Image

Importing this package loads only torch, safetensors, huggingface_hub, pillow and numpy.
"""

__version__ = "0.8.0"

from .config import VQCTConfig  # noqa: E402
from .dataset import load_token_dataset  # noqa: E402
from .tokenizer import VQCTTokenizer  # noqa: E402

__all__ = ["VQCTConfig", "VQCTTokenizer", "load_token_dataset", "__version__"]
