"""MP4 and image files for clips: (F, H, W, 3) float in [0, 1] or uint8 (plus an optional AAC soundtrack),
written with PyAV (no ffmpeg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def to_uint8(clip: np.ndarray) -> np.ndarray:
    clip = np.asarray(clip)
    if clip.dtype == np.uint8:
        return clip
    return (np.clip(clip, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def upscale(clip: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of the two spatial axes (the last two before channels)."""
    if factor == 1:
        return clip
    return clip.repeat(factor, axis=-3).repeat(factor, axis=-2)


def write_mp4(clip: np.ndarray, path: str | Path, fps: int = 8, crf: int = 12, audio: np.ndarray | None = None,
              sample_rate: int | None = None, lossless: bool = False) -> Path:
    """Encode (F, H, W, 3) as H.264 in yuv420p (plays everywhere); H and W must be even.

    ``lossless``: RGB H.264 at CRF 0 instead (libx264rgb): the decoded frames are the clip's exactly, the
    file is several times larger and browsers do not play it — masters for post-processing.
    ``audio`` (channels, samples) in [−1, 1] at ``sample_rate`` Hz, mono or stereo, is muxed in as an
    AAC stereo track (LTX-2's soundtrack).
    """
    import av

    frames = to_uint8(clip)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"clip must be (frames, height, width, 3), got {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {width}×{height}")
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 2 or audio.shape[0] not in (1, 2) or not sample_rate:
            raise ValueError(f"audio must be (1 or 2 channels, samples) with a sample_rate, got {audio.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264rgb" if lossless else "libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "rgb24" if lossless else "yuv420p"
        stream.options = {"crf": "0" if lossless else str(crf)}
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate)
            audio_stream.layout = "stereo"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, sample_rate)
    return path


def _encode_audio(container, stream, audio: np.ndarray, sample_rate: int) -> None:
    """(channels, samples) float → AAC packets; the resampler cuts the encoder's fixed-size frames."""
    import av

    stereo = np.repeat(audio, 2, axis=0) if audio.shape[0] == 1 else audio
    interleaved = (np.clip(stereo, -1.0, 1.0) * 32767.0).astype(np.int16).T.reshape(1, -1)  # packed s16
    source = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
    source.sample_rate = sample_rate
    resampler = av.AudioResampler(format=stream.format.name, layout="stereo", rate=sample_rate,
                                  frame_size=stream.frame_size)
    for frame in [*resampler.resample(source), *resampler.resample(None)]:
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def read_mp4(path: str | Path) -> np.ndarray:
    """Decode every frame to (F, H, W, 3) uint8."""
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def read_mp4_audio(path: str | Path) -> tuple[np.ndarray, int, str]:
    """The first audio track: (channels, samples) float32, its sample rate and its codec name."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray() for frame in container.decode(stream)]  # fltp: (channels, samples) each
        return np.concatenate(chunks, axis=1).astype(np.float32), stream.rate, stream.codec_context.name


def read_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """An image file as (H, W, 3) float32 in [0, 1], optionally resized to size×size."""
    from PIL import Image

    with Image.open(path) as image:
        return image_array(image, size)


def image_array(image, size: int | None = None) -> np.ndarray:
    """A PIL image as (H, W, 3) float32 RGB in [0, 1], optionally resized (bilinear) to size×size."""
    from PIL import Image

    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def write_image(image: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)
    return path
