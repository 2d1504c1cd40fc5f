"""The README's answer block is generated from the committed tables (ktos.study.report.prose.answer): the README holds
exactly the rendering, and a changed table digit changes the rendering."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from ktos.study.report.prose.answer import BEGIN, END, SOURCES, answer_markdown

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results/reference"


def readme_block() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return text[text.index(BEGIN) : text.index(END) + len(END)] + "\n"


def test_the_readme_answer_is_the_rendering_of_the_committed_tables() -> None:
    rendered = answer_markdown(REFERENCE)
    assert readme_block() == rendered, "README.md's answer differs from `ktos answer`: run `snakemake answer`"
    bullets = [line for line in rendered.splitlines() if line.startswith("- ")]
    present = [key for key, tables in SOURCES.items() if all(
        (REFERENCE / f"{t.split('/')[0]}/tables/{t.split('/')[1]}.csv").is_file() for t in tables)]  # fmt: skip
    assert len(bullets) == len(present) >= 6  # every bullet whose tables are committed, none left out silently


def test_a_changed_digit_in_a_table_changes_the_answer(tmp_path: Path) -> None:
    shutil.copytree(REFERENCE, tmp_path / "reference", ignore=shutil.ignore_patterns("*.gz", "figures", "bases"))
    path = tmp_path / "reference/main/tables/base_cells.csv"
    cells = pd.read_csv(path)
    at = (cells["method"] == "kto") & (cells["metric"] == "final_probe_kl")
    before = answer_markdown(tmp_path / "reference")
    assert f"{cells.loc[at, 'mean'].iat[0]:.3g}" in before
    cells.loc[at, "mean"] += 0.01  # 5.46 -> 5.47
    cells.to_csv(path, index=False)
    after = answer_markdown(tmp_path / "reference")
    assert after != before and f"{cells.loc[at, 'mean'].iat[0]:.3g}" in after


def test_a_study_without_its_tables_drops_its_bullet(tmp_path: Path) -> None:
    shutil.copytree(REFERENCE, tmp_path / "reference", ignore=shutil.ignore_patterns("*.gz", "figures", "bases"))
    shutil.rmtree(tmp_path / "reference/scale_2.6M")
    text = answer_markdown(tmp_path / "reference")
    assert "bigger model drifts further" not in text and "KTO-S slows KTO's probe KL" in text


def test_ktos_answer_replaces_only_the_block_of_a_file_that_has_one(tmp_path: Path) -> None:
    from ktos.study.report.prose.answer import write_answer

    page = tmp_path / "README.md"
    page.write_text(f"# Title\n\nbefore\n\n{BEGIN}\n- stale\n{END}\n\nafter\n", encoding="utf-8")
    write_answer(REFERENCE, page)
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith(f"{END}\n\nafter\n") and "- stale" not in text
    assert answer_markdown(REFERENCE) in text
    fresh = write_answer(REFERENCE, tmp_path / "new/answer.md")
    assert fresh.read_text(encoding="utf-8") == answer_markdown(REFERENCE)


def test_docs_results_verdict_blocks_are_the_committed_verdicts() -> None:
    from ktos.study.report.prose.answer import render_page

    text = (REPO / "docs/results.md").read_text(encoding="utf-8")
    assert text.count("<!-- verdict: end -->") >= 4  # main, base_vs_seed, lr_bases, frontier_curve
    assert render_page(REFERENCE, text) == text, "docs/results.md's verdict blocks are stale: run `ktos answer`"
    edited = text.replace("<!-- verdict: end -->", "- a finding made up by hand\n<!-- verdict: end -->", 1)
    assert render_page(REFERENCE, edited) == text  # a hand-made line is rendered away: the test above would fail
