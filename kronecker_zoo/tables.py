"""Markdown tables for reports, tools and recipes."""

__all__ = ["markdown_table"]


def markdown_table(header, rows, left=1):
    """A Markdown table: ``header`` (cells), ``rows`` (lists of cells, anything with
    ``str``); the first ``left`` columns left-aligned, the others right-aligned. A ``|``
    inside a cell is escaped (``\\|``) so that it stays one cell."""
    def line(cells):
        return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"

    def cell(value):
        return str(value).replace("|", "\\|")

    header = [cell(c) for c in header]
    lines = [line(header),
             "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
    for row in rows:
        row = [cell(c) for c in row]
        if len(row) != len(header):
            raise ValueError(f"A row has {len(row)} cells for {len(header)} columns: {row}")
        lines.append(line(row))
    return "\n".join(lines)
