"""The bundled user guide (resources/docs) is what tools/build_user_guide.py makes of docs/user-guide.md now."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = ROOT / "resources" / "docs"


def _tool():
    spec = importlib.util.spec_from_file_location(
        "_build_user_guide_under_test", ROOT / "tools" / "build_user_guide.py"
    )
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
    page, images, documents = tool.render(
        "# Guide\n\nSome *text* with `a<b`, **bold** and a [link](queue.md#closing).\n\n"
        "## Steps\n\n1. open\n2. run\n   - nested\n\n"
        "| key | does |\n|---|---|\n| Ctrl+R | **Quantize** |\n\n"
        "```bash\nmono-quant run a.toml && echo <done>\n```\n\n"
        "![shot](screenshots/empty.png)\n"
    )
    assert "<title>Guide</title>" in page
    assert '<h1 id="guide">Guide</h1>' in page and '<h2 id="steps">Steps</h2>' in page
    assert (
        "<p>Some <em>text</em> with <code>a&lt;b</code>, <strong>bold</strong> and a "
        '<a href="queue.html#closing">link</a>.</p>' in page
    )
    assert "<ol>\n<li>open</li>\n<li>run\n<ul>\n<li>nested</li>\n</ul></li>\n</ol>" in page
    assert "<thead><tr><th>key</th><th>does</th></tr></thead>" in page
    assert "<tr><td>Ctrl+R</td><td><strong>Quantize</strong></td></tr>" in page
    assert '<pre><code class="language-bash">mono-quant run a.toml &amp;&amp; echo &lt;done&gt;</code></pre>' in page
    assert '<img src="screenshots/empty.png" alt="shot">' in page
    assert images == ["screenshots/empty.png"] and documents == ["queue.md"]
    assert "User guide" not in page  # the guide itself has no link home


def test_an_image_outside_docs_is_refused(tmp_path):
    tool = _tool()
    with pytest.raises(tool.GuideError, match="inside docs/"):
        tool.render("![x](../secret.png)")
    source = tmp_path / "user-guide.md"
    source.write_text("# G\n\n![missing](screenshots/none.png)\n")
    with pytest.raises(tool.GuideError, match="not in"):
        tool.generated(source, tmp_path / "out")


def test_linked_documents_are_bundled_and_link_home(tmp_path):
    """Every link of the bundled guide works offline: linked docs (and theirs) become pages beside it."""
    tool = _tool()
    (tmp_path / "user-guide.md").write_text("# Guide\n\nSee [the queue](queue.md#order).\n")
    (tmp_path / "queue.md").write_text(
        "# Queue\n\n## Order\n\nAs in [the CLI](cli.md) and [the guide](user-guide.md).\n"
    )
    (tmp_path / "cli.md").write_text("# CLI\n\nNo links.\n")
    (tmp_path / "unlinked.md").write_text("# Not bundled\n")
    files = tool.generated(tmp_path / "user-guide.md", tmp_path / "out")
    assert sorted(p.name for p in files) == ["cli.html", "guide.css", "queue.html", "user-guide.html"]
    queue = files[tmp_path / "out" / "queue.html"].decode()
    assert '<p class="home"><a href="user-guide.html">← User guide</a></p>' in queue
    assert '<h2 id="order">Order</h2>' in queue and '<a href="cli.html">the CLI</a>' in queue
    assert "Generated from docs/queue.md" in queue
    assert '<a href="queue.html#order">the queue</a>' in files[tmp_path / "out" / "user-guide.html"].decode()


@pytest.mark.parametrize("href", ["../README.md", "notes.txt", "sub/page.md", "/etc/passwd.md"])
def test_a_link_that_cannot_be_bundled_is_refused(href):
    tool = _tool()
    with pytest.raises(tool.GuideError, match=f"link {re.escape(href)}: the bundled guide links only"):
        tool.render(f"# G\n\n[x]({href})\n")


def test_a_linked_document_that_is_missing_is_named(tmp_path):
    (tmp_path / "user-guide.md").write_text("# G\n\n[gone](gone.md)\n")
    tool = _tool()
    with pytest.raises(tool.GuideError, match=r"links to gone\.md, which is not in"):
        tool.generated(tmp_path / "user-guide.md", tmp_path / "out")
