"""Build the bundled user guide: docs/user-guide.md → resources/docs/user-guide.html (+ its images).

    python tools/build_user_guide.py

Help → Documentation opens the HTML file from the package resources
(``mono_quant_gui.resources/docs``).  Images the guide references
(``![…](screenshots/x.png)``, relative to docs/) are copied next to it under
the same relative path.  Documents of docs/ the guide links to (``queue.md``),
and those they link to, are converted too (``queue.html``), so every link of
the bundled guide works offline; other relative links are refused.

Standard library only: a small Markdown converter for what the guide uses —
headings, paragraphs, lists (nested by indentation), fenced code blocks,
tables, block quotes, rules, images, links, inline code, bold and italics.
The output depends only on the inputs (no dates), so
tests/core/test_user_guide.py can fail when resources/docs is stale.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "docs" / "user-guide.md"
TARGET = ROOT / "resources" / "docs"
HTML_NAME = "user-guide.html"
CSS_NAME = "guide.css"

STYLE = """\
:root { color-scheme: light dark; --fg: #1d1f21; --bg: #ffffff; --muted: #5c6670; --line: #d8dde2;
        --code: #f3f5f7; --link: #1f6fb2; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6e6e6; --bg: #1e1f22; --muted: #a2a9b0; --line: #3a3d42; --code: #2a2c30; --link: #6cb2f0; }
}
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.55;
       color: var(--fg); background: var(--bg); max-width: 54rem; margin: 2rem auto; padding: 0 1.25rem; }
h1, h2, h3, h4 { line-height: 1.25; margin-top: 1.8em; }
h1 { margin-top: 0.4em; }
h2 { border-bottom: 1px solid var(--line); padding-bottom: 0.25em; }
a { color: var(--link); }
code { font-family: ui-monospace, "Cascadia Mono", Menlo, Consolas, monospace; font-size: 0.92em;
       background: var(--code); padding: 0.1em 0.3em; border-radius: 4px; }
pre { background: var(--code); padding: 0.8em 1em; border-radius: 6px; overflow-x: auto; }
pre code { background: none; padding: 0; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid var(--line); padding: 0.35em 0.7em; text-align: left; vertical-align: top; }
th { background: var(--code); }
img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
blockquote { margin: 1em 0; padding: 0.2em 1em; border-left: 4px solid var(--line); color: var(--muted); }
nav.toc { border: 1px solid var(--line); border-radius: 6px; padding: 0.5em 1.2em; margin: 1.5em 0; }
nav.toc ul { margin: 0.3em 0; padding-left: 1.2em; }
p.home { margin: 0 0 -1em; font-size: 0.95em; }
hr { border: none; border-top: 1px solid var(--line); margin: 2em 0; }
"""


class GuideError(Exception):
    """The guide references something that cannot be bundled."""


# -- inline ------------------------------------------------------------------------------------
_INLINE = re.compile(
    r"(?P<code>`+)(?P<code_text>.+?)(?P=code)"
    r"|!\[(?P<img_alt>[^\]]*)\]\((?P<img_src>[^)\s]+)(?:\s+\"(?P<img_title>[^\"]*)\")?\)"
    r"|\[(?P<link_text>(?:[^\[\]]|\[[^\]]*\])+)\]\((?P<link_href>[^)\s]+)(?:\s+\"(?P<link_title>[^\"]*)\")?\)"
    r"|<(?P<auto>https?://[^>\s]+)>"
    r"|(?P<strong>\*\*|__)(?P<strong_text>.+?)(?P=strong)"
    r"|(?<![\w*])(?P<em>[*_])(?P<em_text>[^\s*_](?:.*?[^\s])?)(?P=em)(?![\w*])"
    r"|\\(?P<escaped>[\\`*_{}\[\]()#+\-.!|<>])"
)


class Converter:
    """Markdown text → HTML body; ``images`` and ``documents`` collect the relative image paths
    and the docs/ Markdown files it links to."""

    def __init__(self) -> None:
        self.images: list[str] = []
        self.documents: list[str] = []
        self.headings: list[tuple[int, str, str]] = []  # (level, id, html text)
        self._slugs: dict[str, int] = {}

    # inline
    def inline(self, text: str) -> str:
        out, pos = [], 0
        for m in _INLINE.finditer(text):
            out.append(html.escape(text[pos : m.start()], quote=False))
            out.append(self._inline_match(m))
            pos = m.end()
        out.append(html.escape(text[pos:], quote=False))
        return "".join(out)

    def _inline_match(self, m: re.Match) -> str:
        if m.group("code"):
            return f"<code>{html.escape(m.group('code_text').strip(), quote=False)}</code>"
        if m.group("img_src") is not None:
            src = self.image(m.group("img_src"))
            title = m.group("img_title")
            extra = f' title="{html.escape(title)}"' if title else ""
            return f'<img src="{html.escape(src)}" alt="{html.escape(m.group("img_alt"))}"{extra}>'
        if m.group("link_href") is not None:
            href = self.link(m.group("link_href"))
            title = m.group("link_title")
            extra = f' title="{html.escape(title)}"' if title else ""
            return f'<a href="{html.escape(href)}"{extra}>{self.inline(m.group("link_text"))}</a>'
        if m.group("auto"):
            url = m.group("auto")
            return f'<a href="{html.escape(url)}">{html.escape(url, quote=False)}</a>'
        if m.group("strong"):
            return f"<strong>{self.inline(m.group('strong_text'))}</strong>"
        if m.group("em"):
            return f"<em>{self.inline(m.group('em_text'))}</em>"
        return html.escape(m.group("escaped"), quote=False)

    def image(self, src: str) -> str:
        if re.match(r"^[a-z][a-z0-9+.-]*:", src, re.I):
            raise GuideError(f"image {src}: the bundled guide only shows images from docs/ (no URLs)")
        relative = Path(src)
        if relative.is_absolute() or ".." in relative.parts:
            raise GuideError(f"image {src}: must be a path inside docs/ (e.g. screenshots/x.png)")
        posix = relative.as_posix()
        if posix not in self.images:
            self.images.append(posix)
        return posix

    def link(self, href: str) -> str:
        """URLs and anchors as they are; ``other.md#x`` → ``other.html#x`` (bundled too)."""
        if href.startswith("#") or re.match(r"^[a-z][a-z0-9+.-]*:", href, re.I):
            return href
        path, _, anchor = href.partition("#")
        relative = Path(path)
        if relative.is_absolute() or ".." in relative.parts or relative.suffix != ".md" or len(relative.parts) != 1:
            raise GuideError(
                f"link {href}: the bundled guide links only to documents in docs/ (other.md), anchors and URLs"
            )
        if relative.name not in self.documents:
            self.documents.append(relative.name)
        return relative.with_suffix(".html").name + (f"#{anchor}" if anchor else "")

    def slug(self, text: str) -> str:
        base = re.sub(r"[^\w\- ]", "", text.lower()).strip().replace(" ", "-") or "section"
        n = self._slugs.get(base, 0)
        self._slugs[base] = n + 1
        return base if n == 0 else f"{base}-{n}"

    # blocks
    def convert(self, text: str) -> str:
        lines = text.replace("\r\n", "\n").replace("\t", "    ").split("\n")
        return "\n".join(self.blocks(lines))

    def blocks(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            stripped = line.strip()
            if not stripped:
                i += 1
                continue
            fence = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)\s*$", line)
            if fence:
                i = self._code(lines, i, fence, out)
                continue
            heading = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", stripped)
            if heading:
                level = len(heading.group(1))
                body = self.inline(heading.group(2))
                anchor = self.slug(re.sub(r"<[^>]+>", "", body))
                self.headings.append((level, anchor, body))
                out.append(f'<h{level} id="{anchor}">{body}</h{level}>')
                i += 1
                continue
            if re.match(r"^(\*\s*){3,}$|^(-\s*){3,}$|^(_\s*){3,}$", stripped):
                out.append("<hr>")
                i += 1
                continue
            if stripped.startswith(">"):
                quoted = []
                while i < len(lines) and lines[i].strip().startswith(">"):
                    quoted.append(re.sub(r"^\s*>\s?", "", lines[i]))
                    i += 1
                out.append("<blockquote>\n" + "\n".join(self.blocks(quoted)) + "\n</blockquote>")
                continue
            if _is_table_start(lines, i):
                i = self._table(lines, i, out)
                continue
            if _list_marker(line):
                i = self._list(lines, i, out)
                continue
            para = []
            while i < len(lines) and lines[i].strip() and not _starts_block(lines, i):
                para.append(lines[i].strip())
                i += 1
            if para:
                out.append(f"<p>{self.inline(' '.join(para))}</p>")
            else:  # a line that starts a block but was not taken above: keep it as text
                out.append(f"<p>{self.inline(stripped)}</p>")
                i += 1
        return out

    def _code(self, lines: list[str], i: int, fence: re.Match, out: list[str]) -> int:
        indent, marker, language = len(fence.group(1)), fence.group(2), fence.group(3)
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(marker):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        cls = f' class="language-{html.escape(language)}"' if language else ""
        out.append(f"<pre><code{cls}>{html.escape(chr(10).join(body), quote=False)}</code></pre>")
        return i + 1

    def _table(self, lines: list[str], i: int, out: list[str]) -> int:
        header = _cells(lines[i])
        aligns = [_align(c) for c in _cells(lines[i + 1])]
        rows = []
        i += 2
        while i < len(lines) and lines[i].strip() and "|" in lines[i]:
            rows.append(_cells(lines[i]))
            i += 1

        def row(cells: list[str], tag: str) -> str:
            cells = (cells + [""] * len(header))[: len(header)]
            return (
                "<tr>"
                + "".join(
                    f"<{tag}{aligns[n] if n < len(aligns) else ''}>{self.inline(c)}</{tag}>"
                    for n, c in enumerate(cells)
                )
                + "</tr>"
            )

        body = "\n".join(row(r, "td") for r in rows)
        out.append(f"<table>\n<thead>{row(header, 'th')}</thead>\n<tbody>\n{body}\n</tbody>\n</table>")
        return i

    def _list(self, lines: list[str], i: int, out: list[str]) -> int:
        indent, ordered, number, _ = _list_marker(lines[i])
        items: list[list[str]] = []  # each item's lines, the marker replaced by spaces
        columns: list[int] = []
        loose = False
        while i < len(lines):
            line = lines[i]
            marker = _list_marker(line)
            if marker and marker[0] == indent and marker[1] == ordered:
                if items and not items[-1][-1].strip():
                    loose = True  # a blank line between items
                items.append([" " * marker[3] + line[marker[3] :]])
                columns.append(marker[3])
                i += 1
            elif not line.strip():
                following = next((ln for ln in lines[i + 1 :] if ln.strip()), None)
                if following is None or not (
                    _indent(following) >= columns[-1] or (_list_marker(following) or (-1,))[0] == indent
                ):
                    break
                items[-1].append("")
                i += 1
            elif _indent(line) >= columns[-1] or (items[-1][-1].strip() and not _starts_block(lines, i)):
                items[-1].append(line)  # nested content, or a lazy continuation of the paragraph
                i += 1
            else:
                break
        rendered = []
        for item, column in zip(items, columns, strict=True):
            while item and not item[-1].strip():
                item.pop()
            body = [ln[column:] if _indent(ln) >= column else ln.strip() for ln in item]
            inner = self.blocks(body)
            if not loose:
                inner = [b[3:-4] if b.startswith("<p>") and b.endswith("</p>") else b for b in inner]
            rendered.append("<li>" + "\n".join(inner) + "</li>")
        tag = "ol" if ordered else "ul"
        start = f' start="{number}"' if ordered and number != 1 else ""
        out.append(f"<{tag}{start}>\n" + "\n".join(rendered) + f"\n</{tag}>")
        return i


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _list_marker(line: str) -> tuple[int, bool, int, int] | None:
    """(indent, ordered, number, content column) of a list item line, or None."""
    m = re.match(r"^( *)([-*+]|(\d{1,9})[.)])( +)(?=\S)", line)
    if not m:
        return None
    if re.match(r"^\s*([-*_]\s*){3,}$", line):
        return None  # a rule, not a list
    number = int(m.group(3)) if m.group(3) else 0
    return len(m.group(1)), m.group(3) is not None, number, m.end()


def _cells(line: str) -> list[str]:
    text = line.strip()
    if text.startswith("|"):
        text = text[1:]
    if text.endswith("|") and not text.endswith("\\|"):
        text = text[:-1]
    cells = re.split(r"(?<!\\)\|", text)
    return [c.strip().replace("\\|", "|") for c in cells]


def _align(cell: str) -> str:
    cell = cell.strip()
    if cell.startswith(":") and cell.endswith(":"):
        return ' style="text-align: center"'
    if cell.endswith(":"):
        return ' style="text-align: right"'
    return ""


def _is_table_start(lines: list[str], i: int) -> bool:
    return (
        "|" in lines[i]
        and i + 1 < len(lines)
        and re.match(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$", lines[i + 1]) is not None
    )


def _starts_block(lines: list[str], i: int) -> bool:
    s = lines[i].strip()
    return bool(
        re.match(r"^(#{1,6}\s|```|~~~|>)", s)
        or _list_marker(lines[i])
        or _is_table_start(lines, i)
        or re.match(r"^(\*\s*){3,}$|^(-\s*){3,}$|^(_\s*){3,}$", s)
    )


# -- the page ----------------------------------------------------------------------------------
def render(markdown: str, home: str | None = None, name: str = SOURCE.name) -> tuple[str, list[str], list[str]]:
    """A document's HTML page, the relative paths of the images it shows and the documents it links to.

    ``home``: for a page other than the guide, the guide's file name, linked above the page.
    ``name``: the Markdown file's name, recorded in the page.
    """
    conv = Converter()
    body = conv.convert(markdown)
    if home is not None:
        body = f'<p class="home"><a href="{html.escape(home)}">← User guide</a></p>\n' + body
    titles = [h for h in conv.headings if h[0] == 1]
    title = re.sub(r"<[^>]+>", "", titles[0][2]) if titles else "mono-quant user guide"
    sections = [h for h in conv.headings if h[0] == 2]
    if len(sections) >= 3:
        toc = "".join(f'<li><a href="#{anchor}">{text}</a></li>' for _, anchor, text in sections)
        toc_html = f'<nav class="toc"><strong>Contents</strong><ul>{toc}</ul></nav>'
        # after the first heading (the title) and its introduction, before the first section
        marker = f'<h2 id="{sections[0][1]}">'
        body = body.replace(marker, toc_html + "\n" + marker, 1)
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.unescape(title)}</title>\n"
        f"<!-- Generated from docs/{name} by tools/build_user_guide.py; edit the Markdown, not this file. -->\n"
        f'<link rel="stylesheet" href="{CSS_NAME}">\n</head>\n<body>\n{body}\n</body>\n</html>\n'
    )
    return page, conv.images, conv.documents


def generated(source: Path = SOURCE, target: Path = TARGET) -> dict[Path, bytes]:
    """Every file resources/docs should hold, by path, with its bytes: the guide, the
    documents it links to (and those they link to), and the images they show."""
    files: dict[Path, bytes] = {target / CSS_NAME: STYLE.encode("utf-8")}  # one stylesheet for every page
    pending, seen = [source.name], {source.name}
    while pending:
        name = pending.pop(0)
        path = source.parent / name
        if not path.is_file():
            raise GuideError(f"the guide links to {name}, which is not in {source.parent}")
        home = None if name == source.name else HTML_NAME
        page, images, documents = render(path.read_text(encoding="utf-8"), home, name)
        html_name = HTML_NAME if home is None else Path(name).with_suffix(".html").name
        files[target / html_name] = page.encode("utf-8")
        for image in images:
            image_path = source.parent / image
            if not image_path.is_file():
                raise GuideError(f"{name} shows {image}, which is not in {source.parent}")
            files[target / image] = image_path.read_bytes()
        for document in documents:
            if document not in seen:
                seen.add(document)
                pending.append(document)
    return files


def main() -> int:
    try:
        files = generated()
    except GuideError as exc:
        print(f"build_user_guide: {exc}", file=sys.stderr)
        return 1
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
            print(f"wrote {path.relative_to(ROOT)}")
    for path in sorted(TARGET.rglob("*"), reverse=True):  # files first, then emptied folders
        if path.is_file() and path not in files:
            path.unlink()
            print(f"removed {path.relative_to(ROOT)}")
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
