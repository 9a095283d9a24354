"""What a terminal shows after a stream of text and escape codes: a slow, obvious reference for tests that check
what a person would see, not which bytes were written."""

import re

TOKENS = re.compile(r"(\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r|\n)")


def screen(raw: str) -> list[str]:
    """The lines on screen (trailing blanks dropped) after `raw`: text, newlines, carriage returns, cursor moves
    (A up, B down, C right, D left), erase-line (K) and erase-below (J). Colours, modes and cursor visibility change
    nothing on screen; a newline also returns the carriage, as a terminal's output processing does."""
    lines: list[list[str]] = [[]]
    row = column = 0
    for token in TOKENS.split(raw):
        if not token:
            continue
        if token == "\n":
            row, column = row + 1, 0
        elif token == "\r":
            column = 0
        elif token.startswith("\x1b["):
            final, digits = token[-1], re.sub(r"\D", "", token[2:-1])
            count = int(digits or 1)
            if final == "A":
                row = max(0, row - count)
            elif final == "B":
                row += count
            elif final == "C":
                column += count
            elif final == "D":
                column = max(0, column - count)
            elif final == "K":
                lines[row] = [] if digits == "2" else lines[row][:column]
            elif final == "J":
                lines[row] = lines[row][:column]
                del lines[row + 1 :]
        elif not token.startswith("\x1b"):
            line = lines[row]
            line.extend(" " * (column + len(token) - len(line)))
            line[column : column + len(token)] = token
            column += len(token)
        while len(lines) <= row:
            lines.append([])
    return ["".join(line).rstrip() for line in lines]
