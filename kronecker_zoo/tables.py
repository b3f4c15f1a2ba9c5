"""Markdown tables for reports, tools and recipes."""

__all__ = ["markdown_table"]


def markdown_table(header, rows, left=1):
    """A Markdown table: ``header`` (cells), ``rows`` (lists of cells, anything with
    ``str``); the first ``left`` columns left-aligned, the others right-aligned."""
    def line(cells):
        return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"

    header = [str(c) for c in header]
    lines = [line(header),
             "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
    for row in rows:
        row = [str(c) for c in row]
        if len(row) != len(header):
            raise ValueError(f"A row has {len(row)} cells for {len(header)} columns: {row}")
        lines.append(line(row))
    return "\n".join(lines)
