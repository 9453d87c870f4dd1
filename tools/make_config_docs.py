#!/usr/bin/env python
"""``python tools/make_config_docs.py [PATH]``: write docs/configs.md (or PATH) from the described
keys of sparse_lc/config_keys.py (a test checks that docs/configs.md is current)."""
import os
import sys

from sparse_lc.cli import drop_script_folder

DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "configs.md")

if __name__ == "__main__":
    drop_script_folder(__file__)
    from sparse_lc.config_keys import reference_markdown

    path = os.path.normpath(sys.argv[1] if len(sys.argv) > 1 else DEFAULT)
    with open(path, "w", encoding="utf-8") as f:
        f.write(reference_markdown())
    print(f"wrote {path}")
