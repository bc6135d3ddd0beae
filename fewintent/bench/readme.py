"""Splicing the generated benchmark snippet into a README between its markers."""

from __future__ import annotations

import re
from pathlib import Path

README_START, README_END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def update_readme(readme: Path, snippet: str) -> bool:
    """Replace the marked block of ``readme``; False (file untouched) when it has no markers."""
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        return False
    readme.write_text(pattern.sub(lambda _: f"{README_START}\n{snippet}\n{README_END}", text, count=1))
    return True
