"""A picture's structure, read by walking its markers and chunks, never by decoding.

Torch-free and Pillow-free, so the bot and the worker both run it before any decoder sees
the bytes. It answers three questions cheaply (a 20 MB file in tens of milliseconds,
linear in its size, in C for a JPEG's entropy-coded data):

- **Where does the picture end?** A file cut off before its image data ends is refused as
  incomplete, whatever Pillow's process-wide `LOAD_TRUNCATED_IMAGES` says; data *after*
  the end (a phone's motion-photo video after a JPEG's EOI, bytes after a PNG's IEND, a
  WebP's RIFF tail) is a trailer and is ignored, as the decoders ignore it.
- **How much work will decoding be, beyond its pixel count?** A progressive JPEG is
  decoded once per scan: the same 6000×6000 picture with its last scan repeated 5,000
  times is still a 0.6 MB file but took two minutes to decode. Animations are decoded
  frame after frame. Chunk-heavy PNGs are parsed chunk by chunk in Python. Each has a cap.
- **How many frames?** Counted from the structure; Pillow's `n_frames` seeks through a
  GIF's every frame to answer.

The caps are generous for anything a camera, a phone, an editor or a GIF site writes
(libjpeg's progressive mode writes 10 scans, mozjpeg's up to ~20; GIF sites cap
animations in the hundreds of frames); the worker's decode budget (`DECODE_TIMEOUT_S`,
`inference.engine.encoding`) catches whatever slips past them.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from inference.errors import CorruptImage, ImageTooComplex

# Scans in one JPEG. Baseline files have 1 (3 when not interleaved), progressive ones
# about 10; each scan costs a pass over every coefficient of the picture.
MAX_JPEG_SCANS = 64
# Frames of a GIF, APNG or animated WebP.
MAX_FRAMES = 1_000
# Chunks of a PNG (encoders split IDAT into 8-64 KiB chunks: 20 MB is a few thousand).
MAX_PNG_CHUNKS = 20_000
# Top-level chunks of a WebP (ANMF frames included).
MAX_WEBP_CHUNKS = 20_000

# In a JPEG's entropy-coded data a 0xFF byte is followed by 0x00 (stuffing) or a restart
# marker D0-D7; anything else ends the scan. Runs of 0xFF are fill bytes before a marker.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_EOI = 0xD9
_JPEG_SOS = 0xDA
_JPEG_NO_LENGTH = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})  # TEM, SOI, RSTn


@dataclass(frozen=True, slots=True)
class Structure:
    """What walking the file told: its frames, a JPEG's scans, where its picture ends."""

    format: str
    frames: int
    scans: int  # JPEG scans; 0 for other formats
    end: int  # offset just past the picture's data: anything after it is a trailer


def _incomplete(fmt: str) -> CorruptImage:
    return CorruptImage(f"That {fmt} is incomplete (it was cut off before its end).")


def _too_complex(what: str, limit: int) -> ImageTooComplex:
    return ImageTooComplex(
        f"That picture has more than {limit:,} {what}, too many to read in time. "
        "Save it again as an ordinary PNG or JPEG and try again."
    )


def walk(data: bytes, fmt: str) -> Structure:
    """Walk `data`, already sniffed as `fmt`; refuse it if cut off or too complex to decode."""
    if fmt == "JPEG":
        return _walk_jpeg(data)
    if fmt == "PNG":
        return _walk_png(data)
    if fmt == "GIF":
        return _walk_gif(data)
    if fmt == "WEBP":
        return _walk_webp(data)
    return Structure(format=fmt, frames=1, scans=0, end=len(data))


def _walk_jpeg(data: bytes) -> Structure:
    size = len(data)
    pos = 2  # past SOI
    scans = 0
    while True:
        # Between segments this skips stray bytes (libjpeg tolerates them too); after a
        # scan's header it runs through the entropy-coded data in C.
        found = _JPEG_MARKER.search(data, pos)
        if found is None:
            raise _incomplete("JPEG")
        marker = data[found.end() - 1]
        pos = found.end()
        if marker == _JPEG_EOI:
            return Structure(format="JPEG", frames=1, scans=scans, end=pos)
        if marker in _JPEG_NO_LENGTH:
            continue
        if marker < 0xC0:  # reserved: no encoder writes these
            raise CorruptImage()
        if pos + 2 > size:
            raise _incomplete("JPEG")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2:
            raise CorruptImage()
        if pos + length > size:
            raise _incomplete("JPEG")
        if marker == _JPEG_SOS:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise _too_complex("scans (progressive passes)", MAX_JPEG_SCANS)
        # Jumping over the segment skips what it embeds (an EXIF thumbnail's own markers).
        pos += length


def _walk_png(data: bytes) -> Structure:
    size = len(data)
    pos = 8  # past the signature
    chunks = 0
    declared_frames = 1
    frame_controls = 0
    while True:
        if pos + 12 > size:
            raise _incomplete("PNG")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length  # length, type, data, CRC
        if length > 0x7FFF_FFFF:
            raise CorruptImage()
        if end > size:
            raise _incomplete("PNG")
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise _too_complex("chunks", MAX_PNG_CHUNKS)
        if kind == b"acTL" and length >= 8:
            (declared_frames,) = struct.unpack_from(">I", data, pos + 8)
            if declared_frames > MAX_FRAMES:
                raise _too_complex("frames", MAX_FRAMES)
        elif kind == b"fcTL":
            frame_controls += 1
            if frame_controls > MAX_FRAMES:
                raise _too_complex("frames", MAX_FRAMES)
        elif kind == b"IEND":
            frames = max(1, declared_frames)
            return Structure(format="PNG", frames=frames, scans=0, end=end)
        pos = end


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    """Past a GIF's run of length-prefixed sub-blocks; -1 if the data ends inside it."""
    size = len(data)
    while pos < size:
        length = data[pos]
        pos += 1 + length
        if length == 0:
            return pos
    return -1


def _walk_gif(data: bytes) -> Structure:
    size = len(data)
    if size < 13:
        raise _incomplete("GIF")
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = 0
    while pos < size:
        block = data[pos]
        if block == 0x3B:  # trailer
            return Structure(format="GIF", frames=max(1, frames), scans=0, end=pos + 1)
        if block == 0x21:  # extension: label, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor, local colour table, LZW code size, data
            if pos + 11 > size:
                break
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
            pos = _skip_sub_blocks(data, pos)
            if pos < 0:
                break
            frames += 1
            if frames > MAX_FRAMES:
                raise _too_complex("frames", MAX_FRAMES)
        elif frames:
            # Decoders stop at an unknown block after a frame; so does this walk.
            return Structure(format="GIF", frames=frames, scans=0, end=pos)
        else:
            raise CorruptImage()
        if pos < 0:
            break
    if frames == 0:
        raise _incomplete("GIF")
    # Many GIFs in the wild lack their trailer byte; every frame counted is whole.
    return Structure(format="GIF", frames=frames, scans=0, end=size)


def _walk_webp(data: bytes) -> Structure:
    size = len(data)
    if size < 12:
        raise _incomplete("WebP")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    end = 8 + riff_size
    if riff_size < 4:
        raise CorruptImage()
    if end > size:
        raise _incomplete("WebP")
    pos = 12
    chunks = 0
    frames = 0
    while pos + 8 <= end:
        kind, length = struct.unpack_from("<4sI", data, pos)
        chunks += 1
        if chunks > MAX_WEBP_CHUNKS:
            raise _too_complex("chunks", MAX_WEBP_CHUNKS)
        if kind == b"ANMF":
            frames += 1
            if frames > MAX_FRAMES:
                raise _too_complex("frames", MAX_FRAMES)
        pos += 8 + length + (length & 1)
    if pos > end:
        raise _incomplete("WebP")
    return Structure(format="WEBP", frames=max(1, frames), scans=0, end=end)
