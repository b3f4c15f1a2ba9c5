"""markdown_table: the Markdown that GitHub renders, checked cell by cell."""

import pytest

from kronecker_zoo.tables import markdown_table


def test_markdown_table_aligns_and_checks_rows():
    text = markdown_table(["model", "input", "params"], [["a", "28x28", "1,000"], ["b", 1, 2]],
                          left=2)
    assert text.splitlines() == ["| model | input | params |", "|---|---|---:|",
                                 "| a | 28x28 | 1,000 |", "| b | 1 | 2 |"]
    assert markdown_table(["x"], []).splitlines() == ["| x |", "|---|"]
    assert markdown_table(["", "m"], [["a", ""]]).splitlines() == ["| | m |", "|---|---:|",
                                                                   "| a | |"]
    with pytest.raises(ValueError, match="A row has 2 cells for 3 columns"):
        markdown_table(["a", "b", "c"], [[1, 2]])


def test_a_pipe_inside_a_cell_stays_in_its_cell():
    # GitHub splits cells at every unescaped "|" (e.g. a layer named "conv|a").
    text = markdown_table(["layer", "params"], [["conv|a", 3]])
    assert text.splitlines()[2] == r"| conv\|a | 3 |"
    cells = [c for c in text.splitlines()[2].replace(r"\|", "").split("|") if c.strip()]
    assert len(cells) == 2
