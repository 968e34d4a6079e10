"""Decoding what an upload holds: sniff the content, decode images fully with an allow-list of
Pillow decoders, normalise them to 8-bit sRGB RGB, and read captions. Pure functions of bytes;
`ingest.py` decides where things go.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING
import warnings

import numpy as np
from PIL import Image, ImageCms, ImageOps, features

if TYPE_CHECKING:
    from .ingest import IngestLimits

class _Reject(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


# ---------------------------------------------------------------- formats and sniffing


def supported_formats() -> list[str]:
    """Pillow decoders we allow, checked against this installation (WebP/AVIF are optional)."""
    formats = ["JPEG", "PNG", "BMP", "TIFF", "GIF"]
    if features.check("webp"):
        formats.append("WEBP")
    if features.check("avif"):
        formats.append("AVIF")
    try:  # third-party HEIC support, used only when the user installed it
        import pillow_heif  # type: ignore

        pillow_heif.register_heif_opener()
        formats.append("HEIF")
    except Exception:
        pass
    return formats


_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


def sniff(data: bytes) -> str:
    """Container type from magic bytes: a Pillow format name, or a tag for what we refuse."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp":
        box_len = int.from_bytes(head[:4], "big")
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(box_len, len(head)), 4)}
        if brands & {b"avif", b"avis"}:
            return "AVIF"
        if brands & _HEIF_BRANDS:
            return "HEIF"
        return "video"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"%!PS") or head.startswith(b"\xc5\xd0\xd3\xc6"):
        return "eps"
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    return "unknown"


# ---------------------------------------------------------------- decoding and normalising


def _to_srgb(im: Image.Image) -> Image.Image:
    """Colour-manage CMYK (and tagged RGB) to sRGB: plain convert() ignores the ICC profile."""
    icc = im.info.get("icc_profile")
    if im.mode == "CMYK" and not icc:
        return im.convert("RGB")  # naive, the best we can do without a profile
    if icc and im.mode in ("CMYK", "RGB"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            return im.convert("RGB")  # a broken profile should not cost the image
    return im


def _wide_to_8bit(im: Image.Image) -> Image.Image:
    """16/32-bit grey to 8-bit by scaling; Pillow's convert('L') clips (Pillow #2574)."""
    arr = np.asarray(im)
    if im.mode == "F":
        arr = arr.astype(np.float64)
        arr = arr * 255.0 if arr.size and np.nanmax(arr) <= 1.0 else arr
    else:  # I;16* and I: from 16-bit sources the range is 0..65535
        arr = arr.astype(np.float64) / 257.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def normalise(im: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """A loaded image in any mode -> upright 8-bit RGB, alpha flattened on `background`."""
    im = ImageOps.exif_transpose(im)  # before conversion, while the EXIF is still attached
    mode = im.mode
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA") if ("transparency" in im.info or mode == "PA") else im.convert("RGB")
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        im = _wide_to_8bit(im)
    elif mode in ("CMYK", "RGB"):
        im = _to_srgb(im)
    if im.mode in ("LA", "La", "RGBa", "RGBA"):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        im = Image.alpha_composite(canvas, rgba)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im


def decode_image(data: bytes, name: str, limits: IngestLimits, background=(255, 255, 255)) -> tuple[Image.Image, str]:
    """Sniff, open with allowed decoders only, check pixel limits, decode fully, normalise."""
    kind = sniff(data)
    allowed = supported_formats()
    if kind == "HEIF" and "HEIF" not in allowed:
        raise _Reject("unsupported_format", f"{name} is a HEIC/HEIF photo, which this installation cannot read. "
                      "Install the pillow-heif package, or convert the photo to JPEG (on an iPhone: "
                      "Settings > Camera > Formats > Most Compatible) and upload it again.")
    if kind == "AVIF" and "AVIF" not in allowed:
        raise _Reject("unsupported_format", f"{name} is AVIF, which this Pillow build cannot decode. "
                      "Convert it to JPEG or PNG, or install a Pillow with AVIF support (>= 11.3).")
    if kind == "zip":
        raise _Reject("nested_zip", f"{name} is a zip archive inside the upload; archives inside archives "
                      "are not opened. Unzip it and upload its images (or the inner zip) directly.")
    if kind not in allowed:
        what = {"pdf": "a PDF document", "eps": "a PostScript/EPS file", "fits": "a FITS astronomy file",
                "video": "a video or other ISO media file"}.get(kind, "not an image this studio reads")
        raise _Reject("not_an_image", f"{name} is {what}, whatever its extension says. Export it as "
                      f"JPEG or PNG and upload that (readable formats: {', '.join(allowed)}).")
    with warnings.catch_warnings():
        # DecompressionBombWarning and palette warnings are handled explicitly below.
        warnings.simplefilter("ignore")
        try:
            im = Image.open(io.BytesIO(data), formats=[kind])
        except Image.DecompressionBombError:
            raise _Reject("too_many_pixels", f"{name} declares more pixels than Pillow's safety limit "
                          "(a decompression bomb or a huge scan). Downscale it below "
                          f"{limits.max_pixels:,} pixels and upload it again.") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise _Reject("corrupt", f"{name} looks like {kind} but cannot be opened ({exc}). "
                          "Re-export or re-download the file.") from None
        width, height = im.size
        if width * height > limits.max_pixels:
            raise _Reject("too_many_pixels", f"{name} is {width}x{height} = {width * height:,} pixels, over "
                          f"limits.max_pixels={limits.max_pixels:,}. Downscale it (training uses ~1 MP) or "
                          "raise the limit.")
        try:
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # animations and multi-page files: the first frame is the photo
            im.load()  # decode every byte now: truncated files must fail here, not mid-training
            rgb = normalise(im, background)
        except Image.DecompressionBombError:
            raise _Reject("too_many_pixels", f"{name} exceeds the pixel limit while decoding. "
                          "Downscale it and upload it again.") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _Reject("corrupt", f"{name} is damaged or truncated ({exc}). Re-export or re-download "
                          "it; a partial copy would crash training later.") from None
    if min(rgb.size) < limits.min_side:
        raise _Reject("too_small", f"{name} is only {rgb.width}x{rgb.height}; its short side is below "
                      f"limits.min_side={limits.min_side}. Use a larger original (at least the training "
                      "resolution is best).")
    return rgb, kind


def decode_caption(data: bytes, name: str, max_chars: int) -> tuple[str, list[str]]:
    """UTF-8 (optionally with BOM, or UTF-16 with BOM) caption text; truncates huge captions."""
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            text = data.decode("utf-16")
        else:
            text = data.decode("utf-8-sig")
        if "\x00" in text:
            raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
    except UnicodeDecodeError:
        raise _Reject("caption_encoding", f"{name} is not UTF-8 text, so the caption was dropped and its "
                      "image imported without one. Re-save the caption as UTF-8 and upload it again, or "
                      "edit the caption in the dataset view.") from None
    text = " ".join(text.replace("\r\n", "\n").split())  # one line: trainers read the whole file
    notes = []
    if len(text) > max_chars:
        cut = text[:max_chars].rsplit(" ", 1)[0] or text[:max_chars]
        notes.append(f"{name}: caption of {len(text):,} characters truncated to {len(cut):,} "
                     f"(limits.max_caption_chars={max_chars}); the text encoder would drop the rest anyway.")
        text = cut
    return text, notes
