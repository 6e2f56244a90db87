"""Every relative link in README.md, docs/ and the studies' README.md under results/ points at a file or folder
that exists (and an #anchor at a heading)."""
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *sorted((REPO / "results").rglob("README.md"))]
INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\".*\")?\s*$", re.M)  # [name]: target
HTML = re.compile(r"<(?:img|a)\s[^>]*?(?:src|href)=\"([^\"]+)\"", re.I)


def prose(text: str) -> str:
    """The page without fenced code blocks and inline code, where brackets are code, not links."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def links(text: str) -> list[str]:
    body = prose(text)
    return [m for pattern in (INLINE, REFERENCE, HTML) for m in pattern.findall(body)]


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen, ids = {}, set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose(page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        ids.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return ids


def broken(page: Path) -> list[str]:
    bad = []
    for target in links(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # http:, https:, mailto: ...: not a file of this repository
        path, _, anchor = target.partition("#")
        file = (page.parent / unquote(path)).resolve() if path else page
        if not file.exists():
            bad.append(f"{target}: no {file}")
        elif anchor and file.suffix == ".md" and anchor.lower() not in anchors(file):
            bad.append(f"{target}: no heading #{anchor} in {file.name}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    assert links(page.read_text()) or page.name != "README.md", "found no links in README.md: the pattern is wrong"
    assert broken(page) == [], page


def test_a_broken_link_and_a_missing_heading_are_found(tmp_path):
    (tmp_path / "there.md").write_text("# A heading, with punctuation!\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [ok](there.md#a-heading-with-punctuation) [ok](there.md#twice-1) [ok](#top)\n"
                    "# Top\n![gone](figures/gone.png) [gone](there.md#nowhere) [web](https://example.com/x.md)\n"
                    "`[code](not-a-link.md)`\n```\n[code](not-a-link-either.md)\n```\n[ref]: missing.md\n"
                    '<img src="img/missing.png">\n')
    assert [b.split(":")[0] for b in broken(page)] == ["figures/gone.png", "there.md#nowhere", "missing.md",
                                                      "img/missing.png"]
