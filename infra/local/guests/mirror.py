#!/usr/bin/env python3
"""The Debian mirror to build the guests' root filesystem from, taken from the host's own apt
configuration so that no mirror address is written in the project (CI machines each have theirs).

Reads deb822 ``/etc/apt/sources.list.d/*.sources`` (``URIs:``) first, then one-line
``/etc/apt/sources.list`` and ``sources.list.d/*.list``; skips ``deb-src``, disabled stanzas and
security/updates archives (a ``debian-security`` URI, a ``*-security`` suite). Prints the URI.
"""

from __future__ import annotations

import glob
import os
import sys

APT_DIR = "/etc/apt"


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas, cur, key = [], {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, None
        elif line[0] in " \t" and key:  # continuation line
            cur[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            cur[key] = value.strip()
    if cur:
        stanzas.append(cur)
    return stanzas


def _is_main_archive(uri: str, suites: list[str]) -> bool:
    if "security" in uri.rstrip("/").rsplit("/", 1)[-1]:
        return False
    return not suites or any(not s.endswith(("-security", "-updates", "-backports"))
                             for s in suites)


def from_deb822(text: str) -> list[str]:
    out = []
    for st in _deb822_stanzas(text):
        if st.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in st.get("types", "").split():
            continue
        suites = st.get("suites", "").split()
        out += [u for u in st.get("uris", "").split() if _is_main_archive(u, suites)]
    return out


def from_one_line(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # [arch=amd64 signed-by=...] options
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2 and _is_main_archive(words[0], [words[1]]):
            out.append(words[0])
    return out


def mirrors(apt_dir: str = APT_DIR) -> list[str]:
    """Every main-archive URI of the host's apt sources, deb822 files first, in file order."""
    found: list[str] = []
    for path in sorted(glob.glob(os.path.join(apt_dir, "sources.list.d", "*.sources"))):
        found += from_deb822(_read(path))
    one_line = [os.path.join(apt_dir, "sources.list"),
                *sorted(glob.glob(os.path.join(apt_dir, "sources.list.d", "*.list")))]
    for path in one_line:
        found += from_one_line(_read(path))
    return [u for u in found if u.startswith(("http://", "https://", "file:/"))]


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def main() -> int:
    found = mirrors(os.environ.get("STACKDROP_APT_DIR", APT_DIR))
    if not found:
        print("mirror.py: no Debian mirror in the host's apt sources "
              f"({APT_DIR}/sources.list[.d]); set DEBIAN_MIRROR=URL", file=sys.stderr)
        return 1
    print(found[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
