#!/usr/bin/env python3
"""Regenerate the key tables of docs/configuration.md from the key table in
src/config/settings.rs (the one place defaults live). tests/cli.rs checks that
every key is documented."""
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
src = (root / "src/config/settings.rs").read_text()
doc_path = root / "docs/configuration.md"
marker = "\n## `[pooler] / [pgbouncer]`\n"


def table(name):
    i = src.index(name + " {\n")
    j = src.index("\n    }\n);", i)
    rows, doc = [], []
    for line in src[i:j].splitlines()[1:]:
        l = line.strip()
        if l.startswith("///"):
            doc.append(l[3:].strip())
            continue
        m = re.match(r'(\w+): ([^=]+) = "(.*)", (.*);$', l)
        if m:
            k, _ty, d, fl = m.groups()
            rows.append((k, d, fl, " ".join(doc)))
            doc = []
    return rows


out = []
for title, name in [("[pooler] / [pgbouncer]", "Settings"), ("[databases]", "DatabaseConfig"), ("[users]", "UserConfig")]:
    out.append(f"\n## `{title}`\n")
    out.append("| key | default | reload | status | notes |\n|---|---|---|---|---|")
    for k, d, fl, doc in table(name):
        reload = "restart" if "RESTART" in fl else "reload"
        status = "accepted, not implemented yet (warns)" if "TODO" in fl else "implemented"
        dd = f"`{d}`" if d else "(empty)"
        out.append(f"| `{k}` | {dd} | {reload} | {status} | {doc} |")
text = doc_path.read_text()
head = text[: text.index(marker)] if marker in text else text
doc_path.write_text(head + "\n".join(out) + "\n")
