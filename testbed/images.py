"""Frames: where images come from and how each side turns them into model input.

The MD "captures" a frame by taking the next decoded RGB image from memory (a camera hands over
pixels, not files), so disk I/O and file decoding are outside every delay component. Resizing
follows torchvision's ImageNet evaluation transform: resize the shorter side to 256/224 of the
model's input size, centre-crop, normalise with ImageNet's mean and std.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@dataclass(frozen=True)
class Frame:
    image_id: str
    image: Image.Image


def builtin_images_dir() -> Path:
    return Path(str(resources.files("testbed") / "data" / "images"))


def load_images(folder: str | Path = "builtin") -> list[Frame]:
    """Decode every image of ``folder`` (or the shipped photographs) into memory, sorted by name."""
    path = builtin_images_dir() if str(folder) == "builtin" else Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"images: {path} is not a folder (use 'builtin' or a folder path)")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"images: no {sorted(IMAGE_SUFFIXES)} files in {path}")
    frames = []
    for p in files:
        with Image.open(p) as im:
            frames.append(Frame(p.stem, im.convert("RGB")))
    log.info("loaded %d images from %s", len(frames), path)
    return frames


def resize_crop(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size * 256 / 224``, then a centred ``size`` x ``size`` crop."""
    short = round(size * 256 / 224)
    w, h = image.size
    scale = short / min(w, h)
    resized = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = resized.size
    left, top = (w - size) // 2, (h - size) // 2
    return resized.crop((left, top, left + size, top + size))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A ``1x3xHxW`` normalised float tensor from an RGB image."""
    array = np.asarray(image, dtype=np.uint8)
    t = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)
    return ((t - MEAN) / STD).unsqueeze(0)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class ImageDecodeError(ValueError):
    """A received JPEG that cannot become the model's input."""


def decode_jpeg(data: bytes, size: int, input_size: int | None = None) -> torch.Tensor:
    """The ES side of EC: JPEG bytes of a ``size`` x ``size`` image to a model input tensor
    (``input_size`` x ``input_size``, resized if that differs from ``size``).

    The header is checked before any pixel is decoded, so a hostile payload cannot make the ES
    inflate a huge image.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                raise ImageDecodeError(f"payload: expected a JPEG image, got {im.format}")
            if im.size != (size, size):
                raise ImageDecodeError(f"payload: expected a {size}x{size} image, got {im.size}")
            rgb = im.convert("RGB")
    except ImageDecodeError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        raise ImageDecodeError(f"payload: not a decodable JPEG ({exc})") from exc
    if input_size is not None and input_size != size:
        rgb = rgb.resize((input_size, input_size), Image.BILINEAR)
    return to_tensor(rgb)
