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
