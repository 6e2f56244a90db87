"""The tour page: regenerated on a tiny setting, its excerpts match the code and its figures exist."""
import shutil

import pytest

from minibert.tools import tour

REPO = tour.Path(__file__).resolve().parent.parent

pytest.importorskip("matplotlib")


@pytest.mark.slow  # a tiny training run and a dozen figures
def test_tiny_tour_writes_a_page_whose_excerpts_and_figures_check_out(minilm_dir, data_root, tmp_path):
    page = tour.write_tour(minilm_dir, tmp_path, data_root / "sst2", tiny=True)
    text = page.read_text()
    assert tour.check(page) == []
    names = [n for section in tour.EXCERPTS.values() for n in section]
    assert [n for n, _ in tour.MARK.findall(text)] == names  # every excerpt, in reading order
    assert "## 8. The paper's experiment in miniature" in text and "| bottom:2 |" in text
    figures = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "tour").rglob("*.png"))
    assert figures and all(f"]({f})" in text for f in figures)  # every figure written is on the page

    # a page whose excerpt no longer matches the code, or whose figure is gone, fails the check
    name = names[0]
    page.write_text(text.replace(tour.excerpt(name), tour.excerpt(name) + "    pass\n", 1))
    (tmp_path / figures[0]).unlink()
    problems = tour.check(page)
    assert any(name in p and "differs" in p for p in problems) and any(figures[0] in p for p in problems)


def test_a_missing_name_stops_the_generator_with_the_name():
    with pytest.raises(LookupError, match="SelfAttention.no_such_step"):
        tour.excerpt("minibert.model:SelfAttention.no_such_step")


def test_the_committed_tour_matches_the_code():
    """docs/tour.md is generated: after changing model.py or heads.py, rerun `python -m minibert tour`."""
    problems = tour.check(REPO / "docs" / "tour.md")
    assert problems == [], "\n".join(problems)


def test_the_check_finds_a_changed_excerpt_and_a_missing_figure(tmp_path):
    """The committed page, copied and damaged (the slow test above does this to a freshly generated page)."""
    shutil.copytree(REPO / "docs" / "tour", tmp_path / "tour")
    text = (REPO / "docs" / "tour.md").read_text()
    name = tour.MARK.findall(text)[0][0]
    figure = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "tour").rglob("*.png"))[0]
    page = tmp_path / "tour.md"
    page.write_text(text.replace(tour.excerpt(name), tour.excerpt(name) + "    pass\n", 1))
    (tmp_path / figure).unlink()
    problems = tour.check(page)
    assert len(problems) == 2, problems
    assert name in problems[0] and "differs" in problems[0] and figure in problems[1]
