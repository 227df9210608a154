"""`zoo tables` writes README.md's compact tables and results/README.md; both rebuild the committed files."""

import shutil
from pathlib import Path

import pytest

from zoo import results

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("squad", "glue", "clue", "ner")


def test_readme_stays_short_with_a_table_per_family():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    for family in FAMILIES:
        assert f"<!-- results:{family}:start -->" in text and f"<!-- results:{family}:end -->" in text


def test_notes_say_where_the_generated_tables_go(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "bench").mkdir()
    (tmp_path / "squad.md").write_text("SQUAD TABLE\n")
    (tmp_path / "bench" / "squad-cells-cpu.md").write_text("SPEED TABLE\n")
    (tmp_path / "ner.md").write_text("NER TABLE\n")
    (tmp_path / "notes" / "squad.md").write_text(f"### Dense\n\nbefore\n\n{results.TABLE_HERE}\n\nafter\n\n{results.SPEED_HERE}\n")
    (tmp_path / "notes" / "ner.md").write_text("ner note\n")  # no placeholder: the table goes first
    (tmp_path / "notes" / "other-runs.md").write_text("## Other runs\n")
    text = results.results_readme(tmp_path)
    order = ["## squad", "### Dense", "before", "SQUAD TABLE", "after", "SPEED TABLE", "## ner", "NER TABLE", "ner note", "## Other runs"]
    assert [text.index(s) for s in order] == sorted(text.index(s) for s in order)
    assert "<!-- zoo:" not in text and "## glue" not in text  # a family without tables has no section


@pytest.mark.parametrize("family", FAMILIES)
def test_tables_rebuild_the_committed_files(tmp_path, family):
    """`zoo tables FAMILY --root results/FAMILY/matrix-cpu` changes nothing that is committed."""
    out = tmp_path / "results"
    shutil.copytree(REPO / "results" / "notes", out / "notes")
    shutil.copytree(REPO / "results" / "bench", out / "bench")
    for other in FAMILIES:
        shutil.copy2(REPO / "results" / f"{other}.md", out / f"{other}.md")
    shutil.copy2(REPO / "README.md", tmp_path / "README.md")
    results.build(family, REPO / "results" / family / "matrix-cpu", out, tmp_path / "README.md", None)
    for name in ("README.md", f"{family}.csv", f"{family}.md"):
        assert (out / name).read_text() == (REPO / "results" / name).read_text(), name
    assert (tmp_path / "README.md").read_text() == (REPO / "README.md").read_text()
