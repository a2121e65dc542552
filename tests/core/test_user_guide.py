"""The bundled user guide (resources/docs) is what tools/build_user_guide.py makes of docs/user-guide.md now."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = ROOT / "resources" / "docs"


def _tool():
    spec = importlib.util.spec_from_file_location("_build_user_guide_under_test", ROOT / "tools" / "build_user_guide.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bundled_guide_is_not_stale():
    expected = _tool().generated()
    on_disk = {p for p in TARGET.rglob("*") if p.is_file()}
    assert on_disk == set(expected), "resources/docs is stale: run python tools/build_user_guide.py"
    for path, data in expected.items():
        assert path.read_bytes() == data, f"{path.relative_to(ROOT)} is stale: run python tools/build_user_guide.py"
    assert (TARGET / "user-guide.html").is_file()


def test_markdown_conversion():
    tool = _tool()
    page, images = tool.render(
        "# Guide\n\nSome *text* with `a<b`, **bold** and a [link](queue.md#closing).\n\n"
        "## Steps\n\n1. open\n2. run\n   - nested\n\n"
        "| key | does |\n|---|---|\n| Ctrl+R | **Quantize** |\n\n"
        "```bash\nmono-quant run a.toml && echo <done>\n```\n\n"
        "![shot](screenshots/empty.png)\n")
    assert "<title>Guide</title>" in page
    assert '<h1 id="guide">Guide</h1>' in page and '<h2 id="steps">Steps</h2>' in page
    assert "<p>Some <em>text</em> with <code>a&lt;b</code>, <strong>bold</strong> and a " \
           '<a href="https://github.com/monoquant/mono-quant/blob/main/docs/queue.md#closing">link</a>.</p>' in page
    assert "<ol>\n<li>open</li>\n<li>run\n<ul>\n<li>nested</li>\n</ul></li>\n</ol>" in page
    assert "<thead><tr><th>key</th><th>does</th></tr></thead>" in page
    assert "<tr><td>Ctrl+R</td><td><strong>Quantize</strong></td></tr>" in page
    assert '<pre><code class="language-bash">mono-quant run a.toml &amp;&amp; echo &lt;done&gt;</code></pre>' in page
    assert '<img src="screenshots/empty.png" alt="shot">' in page
    assert images == ["screenshots/empty.png"]


def test_an_image_outside_docs_is_refused(tmp_path):
    tool = _tool()
    with pytest.raises(tool.GuideError, match="inside docs/"):
        tool.render("![x](../secret.png)")
    source = tmp_path / "user-guide.md"
    source.write_text("# G\n\n![missing](screenshots/none.png)\n")
    with pytest.raises(tool.GuideError, match="not in"):
        tool.generated(source, tmp_path / "out")
