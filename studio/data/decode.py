"""Decoding what an upload holds: sniff the content, decode images fully with an allow-list of
Pillow decoders, normalise them to 8-bit sRGB RGB, and read captions. Pure functions of bytes;
`ingest.py` decides where things go.
"""

from __future__ import annotations

import io
import re
import unicodedata
import warnings

import numpy as np
from PIL import Image, ImageCms, ImageOps, features

from .limits import IngestLimits, Reject

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
        raise Reject("unsupported_format", f"{name} is a HEIC/HEIF photo, which this installation cannot read. "
                      "Install the pillow-heif package, or convert the photo to JPEG (on an iPhone: "
                      "Settings > Camera > Formats > Most Compatible) and upload it again.")
    if kind == "AVIF" and "AVIF" not in allowed:
        raise Reject("unsupported_format", f"{name} is AVIF, which this Pillow build cannot decode. "
                      "Convert it to JPEG or PNG, or install a Pillow with AVIF support (>= 11.3).")
    if kind == "zip":
        raise Reject("nested_zip", f"{name} is a zip archive inside the upload; archives inside archives "
                      "are not opened. Unzip it and upload its images (or the inner zip) directly.")
    if kind not in allowed:
        what = {"pdf": "a PDF document", "eps": "a PostScript/EPS file", "fits": "a FITS astronomy file",
                "video": "a video or other ISO media file"}.get(kind, "not an image this studio reads")
        raise Reject("not_an_image", f"{name} is {what}, whatever its extension says. Export it as "
                      f"JPEG or PNG and upload that (readable formats: {', '.join(allowed)}).")
    with warnings.catch_warnings():
        # DecompressionBombWarning and palette warnings are handled explicitly below.
        warnings.simplefilter("ignore")
        try:
            im = Image.open(io.BytesIO(data), formats=[kind])
        except Image.DecompressionBombError:
            raise Reject("too_many_pixels", f"{name} declares more pixels than Pillow's safety limit "
                          "(a decompression bomb or a huge scan). Downscale it below "
                          f"{limits.max_pixels:,} pixels and upload it again.",
                          {"limit": f"{limits.max_pixels:,}"}) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise Reject("corrupt", f"{name} looks like {kind} but cannot be opened ({exc}). "
                          "Re-export or re-download the file.") from None
        width, height = im.size
        if width * height > limits.max_pixels:
            raise Reject("too_many_pixels", f"{name} is {width}x{height} = {width * height:,} pixels, over "
                          f"the limit of {limits.max_pixels:,} pixels. Downscale it (training uses about 1 "
                          "megapixel) and upload it again.", {"limit": f"{limits.max_pixels:,}"})
        try:
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # animations and multi-page files: the first frame is the photo
            im.load()  # decode every byte now: truncated files must fail here, not mid-training
            rgb = normalise(im, background)
        except Image.DecompressionBombError:
            raise Reject("too_many_pixels", f"{name} exceeds the limit of {limits.max_pixels:,} pixels while "
                          "decoding. Downscale it and upload it again.", {"limit": f"{limits.max_pixels:,}"}) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise Reject("corrupt", f"{name} is damaged or truncated ({exc}). Re-export or re-download "
                          "it; a partial copy would crash training later.") from None
    if min(rgb.size) < limits.min_side:
        raise Reject("too_small", f"{name} is only {rgb.width}x{rgb.height} px; its short side is below the "
                      f"minimum of {limits.min_side} px. Use a larger original (at least the training "
                      "resolution is best).", {"width": rgb.width, "height": rgb.height, "min_side": limits.min_side})
    return rgb, kind


# ---------------------------------------------------------------- captions

_TEXT_CONTROLS = set("\t\n\r")
_PLAIN_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
# Letters whose Unicode name starts like this belong to no script of their own.
_NEUTRAL_LETTERS = ("MODIFIER", "COMBINING", "FULLWIDTH", "HALFWIDTH", "SUPERSCRIPT", "SUBSCRIPT", "CIRCLED",
                    "PARENTHESIZED", "MATHEMATICAL", "SMALL")
# Within one word, only these scripts are written together (Japanese mixes kanji and kana).
_SCRIPTS_WRITTEN_TOGETHER = ({"han", "kana"},)
_WORD = re.compile(r"[^\W\d_]+")


def _script(char: str) -> str:
    """A coarse script of a letter; 'rare' for blocks a caption practically never uses."""
    o = ord(char)
    if 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x3FFFF or 0xA000 <= o <= 0xA4CF:
        return "rare"  # CJK extension ideographs and Yi syllables
    if 0x4E00 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF:
        return "han"
    if 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9F:
        return "kana"
    if 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F:
        return "hangul"
    name = unicodedata.name(char, "")
    if not name:
        return "rare"
    return "" if name.startswith(_NEUTRAL_LETTERS) else name.split(" ")[0]


def text_problem(text: str, check_scripts: bool) -> str | None:
    """Why `text` is not a caption a person wrote, or None.

    Always: no control characters (other than tab and line breaks), no unassigned, private-use
    or surrogate code points, no U+FFFD. With `check_scripts` (text from UTF-16, where any even
    number of bytes decodes to *something*): every word is in one script, or in kanji + kana,
    and no rare ideograph blocks. That rejects 8-bit text or binary behind a stray byte-order
    mark (FF FE 00 62 61 64 20 C3 20 00 75 74 66 38 decodes to '戀摡쌠 瑵㡦'); a few short random
    byte strings still pass, which is why UTF-16 is only read behind a byte-order mark at all.
    """
    for char in text:
        category = unicodedata.category(char)
        if (category == "Cc" and char not in _TEXT_CONTROLS) or category in ("Cn", "Co", "Cs") or char == "\ufffd":
            return f"it contains the character U+{ord(char):04X}, which is not text"
    if check_scripts:
        for word in _WORD.findall(text):
            scripts = {_script(c) for c in word} - {""}
            if "rare" in scripts or (len(scripts) > 1 and not any(scripts <= s for s in _SCRIPTS_WRITTEN_TOGETHER)):
                return f"the word {word!r} mixes scripts no language writes together"
    return None


def decode_caption(data: bytes, name: str, max_chars: int) -> tuple[str, list[str]]:
    """Caption text, decoded strictly: UTF-8 (with or without a BOM), or UTF-16 only behind its
    byte-order mark and only when the content reads as text (`text_problem`). Anything else is a
    `caption_encoding` rejection for this file; its image is kept without a caption. Huge
    captions are truncated."""
    utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
    encoding = "UTF-16" if utf16 else "UTF-8"
    try:
        text = data.decode("utf-16") if utf16 else data.decode("utf-8-sig")
        problem = text_problem(text, check_scripts=utf16)
        if utf16 and not problem and len(data) >= 6 and all(b in _PLAIN_BYTES for b in data[2:]):
            # Real UTF-16 text has zero bytes (Latin) or bytes outside ASCII (most CJK).
            problem = "its bytes are 8-bit text behind a stray UTF-16 byte-order mark"
    except UnicodeDecodeError as exc:
        problem = f"byte {exc.start} is not valid {encoding}"
    if problem:
        raise Reject("caption_encoding", f"{name} is not readable {encoding} text ({problem}), so the caption "
                      "was not used and its image was imported without one. Re-save the caption as UTF-8 text "
                      "and upload it again, or write the caption on the Captions tab.", {"reason": problem})
    text = " ".join(text.replace("\r\n", "\n").split())  # one line: trainers read the whole file
    notes = []
    if len(text) > max_chars:
        cut = text[:max_chars].rsplit(" ", 1)[0] or text[:max_chars]
        notes.append(f"{name}: caption of {len(text):,} characters truncated to {len(cut):,} "
                     f"(the longest caption kept is {max_chars:,} characters); the text encoder would drop "
                     "the rest anyway.")
        text = cut
    return text, notes
