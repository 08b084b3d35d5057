"""What crosses the link in each mode, and how each side makes and reads it.

- EC: the MD sends the JPEG of the resized image (``jpeg_size``, default the model's input);
  the ES decodes it, resizes it to the model's input if needed, and runs the whole model.
- SC: the MD runs the head and sends its output, 8-bit quantized (scale, zero point) unless
  the configuration says ``quantize: false``, optionally zlib-compressed; the ES dequantizes and
  runs the tail.
- LC: nothing crosses; the MD runs the whole model.
"""

from __future__ import annotations

import torch

from testbed import codec, wire
from testbed.configs import Configuration
from testbed.images import decode_jpeg, encode_jpeg, resize_crop, to_tensor
from testbed.models.split import SplitModel


def md_message(config: Configuration, model: SplitModel, frame_id: int, image) -> wire.Message:
    """Everything the MD does between capture and send, for EC and SC."""
    if config.mode == "EC":
        crop = resize_crop(image, config.jpeg_size or model.input_size)
        return wire.JpegFrame(frame_id, encode_jpeg(crop, config.jpeg_quality))
    crop = resize_crop(image, model.input_size)
    with torch.inference_mode():
        z = model.head(to_tensor(crop))
    if config.quantize:
        return wire.TensorFrame.from_quantized(frame_id, codec.quantize(z), config.compression)
    return wire.TensorFrame.from_float(frame_id, z, "float32", config.compression)


def md_local(model: SplitModel, image) -> int:
    """LC: the whole model on the MD; returns the predicted class."""
    with torch.inference_mode():
        return int(model.head(to_tensor(resize_crop(image, model.input_size))).argmax(1)[0])


def es_input(config: Configuration, model: SplitModel, msg: wire.Message, max_bytes: int):
    """The ES's tail input from a received frame; ``wire.WireError`` if it does not fit."""
    if config.mode == "EC" and isinstance(msg, wire.JpegFrame):
        return decode_jpeg(msg.payload, config.jpeg_size or model.input_size, model.input_size)
    if config.mode == "SC" and isinstance(msg, wire.TensorFrame):
        return wire.tensor_from_frame(
            msg, expected_shape=(1, *model.head_output_shape), max_size=max_bytes
        )
    expected = "JpegFrame" if config.mode == "EC" else "TensorFrame"
    raise wire.WireError(
        wire.ErrorCode.UNEXPECTED, "header.type",
        f"a {config.mode} connection expects {expected}, got {type(msg).__name__}", 3,
    )


def es_predict(model: SplitModel, x: torch.Tensor) -> int:
    with torch.inference_mode():
        return int(model.tail(x).argmax(1)[0])
