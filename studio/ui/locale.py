"""The page's language: one choice for the whole page, made before Gradio draws anything.

Gradio translates `gr.I18n` texts and its own built-in texts (upload boxes, table tools) in the
language it reads from `navigator.language` when the page starts; several of them (tab names,
upload prompts) are fixed at that moment and do not follow a later change. So the header's
language control stores the choice in a cookie and reloads the page, and `LocaleScript`, a small
ASGI middleware, puts a script at the top of the page that hands that choice to Gradio as the
browser's language before Gradio's own code runs. Without a cookie the browser's language
stands. The server reads the same cookie (or Accept-Language) for the texts it builds itself.
"""

from __future__ import annotations

import json

from studio.i18n import LANGS, lang_from_accept_language

LANG_COOKIE = "studio_lang"
DATASET_COOKIE = "studio_dataset"
_YEAR = 365 * 24 * 3600

# Runs before Gradio's module script: the chosen language becomes navigator.language (Gradio's
# only source for its start-up locale) and <html lang>, which screen readers use for speech.
_HEAD_SCRIPT = """<script>(() => {
  const known = %s;
  const m = document.cookie.match(/(?:^|;\\s*)%s=([^;]+)/);
  let lang = m ? decodeURIComponent(m[1]) : "";
  if (known.includes(lang)) {
    for (const [k, v] of [["language", lang], ["languages", [lang]]])
      Object.defineProperty(navigator, k, {get: () => v, configurable: true});
  } else {
    lang = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
  }
  document.documentElement.lang = lang;
})();</script>""" % (json.dumps(list(LANGS)), LANG_COOKIE)


def cookie_js(name: str, then_reload: bool = False) -> str:
    """A Gradio `js=` event function that stores its input in a cookie (and reloads the page)."""
    reload = " location.reload();" if then_reload else ""
    return (f"(value) => {{ document.cookie = '{name}=' + encodeURIComponent(value ?? '') + "
            f"'; path=/; max-age={_YEAR}; samesite=lax';{reload} return value; }}")


def request_lang(request) -> str:
    """The page's language for a gradio.Request: the cookie, else Accept-Language."""
    if request is None:
        return "en"
    chosen = (request.cookies or {}).get(LANG_COOKIE, "")
    if chosen in LANGS:
        return chosen
    return lang_from_accept_language(request.headers.get("accept-language", ""))


def request_cookie(request, name: str) -> str:
    return ((request.cookies or {}).get(name, "") if request is not None else "") or ""


class LocaleScript:
    """ASGI middleware: inserts `_HEAD_SCRIPT` right after <head> of the page Gradio serves at /."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] not in ("/", ""):
            await self.app(scope, receive, send)
            return
        start: dict | None = None
        chunks: list[bytes] = []

        async def patched_send(message):
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if not headers.get(b"content-type", b"").startswith(b"text/html") or b"content-encoding" in headers:
                    start = None
                    await send(message)
                    return
                start = message
                return
            if message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = inject(b"".join(chunks))
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, patched_send)


def inject(html: bytes) -> bytes:
    marker = b"<head>"
    at = html.find(marker)
    if at < 0:
        return html
    at += len(marker)
    return html[:at] + _HEAD_SCRIPT.encode("utf-8") + html[at:]
