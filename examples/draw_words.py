"""Draw the word of each token over an image: the reconstruction, enlarged, with every cell's
adjectives and noun written in it.

    python examples/draw_words.py examples/images/face_00076.jpg -o words.png [--model vqct-faces64]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.defaults import DEFAULT_MODEL


def draw_words(tok: VQCTTokenizer, image_path: str, cell_px: int = 96) -> Image.Image:
    tokens = tok.encode(image_path)                       # (h, w, k+1)
    words = tok.describe(tokens)                          # h rows of w "adj adj noun" strings
    h, w = len(words), len(words[0])
    canvas = tok.decode(tokens).resize((w * cell_px, h * cell_px), Image.NEAREST).convert("RGBA")
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for i, row in enumerate(words):
        for j, cell in enumerate(row):
            x, y = j * cell_px, i * cell_px
            draw.rectangle([x, y, x + cell_px - 1, y + cell_px - 1], outline=(255, 255, 255, 90))
            for line, word in enumerate(cell.split(" ")):  # one word per line: adjective, adjective, noun
                ty = y + 4 + 12 * line
                draw.rectangle([x + 2, ty, x + 2 + 6 * len(word), ty + 11], fill=(0, 0, 0, 140))
                draw.text((x + 3, ty), word, fill=(255, 255, 255, 255))
    return Image.alpha_composite(canvas, overlay).convert("RGB")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--cell-px", type=int, default=96, help="size of one token cell in the figure")
    args = p.parse_args(argv)
    draw_words(VQCTTokenizer.from_pretrained(args.model), args.image, args.cell_px).save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
