#!/usr/bin/env python
"""Write docs/configs.md from the described keys of sparse_lc/config_keys.py (a test checks it is current)."""
import os

from sparse_lc.config_keys import reference_markdown

if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "configs.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(reference_markdown())
    print(f"wrote {os.path.normpath(path)}")
