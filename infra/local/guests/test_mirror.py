"""mirror.py: the Debian mirror comes from the host's apt configuration, never from the project."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from guests import mirror

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_deb822_main_archive_only():
    assert mirror.from_deb822(DEB822) == ["http://mirror.example/debian"]


def test_deb822_skips_disabled_and_source_stanzas():
    text = ("Types: deb-src\nURIs: http://src.example/debian\nSuites: trixie\n\n"
            "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: trixie\n\n"
            "Types: deb deb-src\nURIs: http://a.example/debian\n  http://b.example/debian\n"
            "Suites: trixie\n")
    assert mirror.from_deb822(text) == ["http://a.example/debian", "http://b.example/debian"]


def test_one_line_format_with_options_and_comments():
    text = ("# deb http://commented.example/debian bookworm main\n"
            "deb-src http://src.example/debian bookworm main\n"
            "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main # note\n"
            "deb http://security.example/debian-security bookworm-security main\n"
            "deb http://one.example/debian bookworm-updates main\n")
    assert mirror.from_one_line(text) == ["http://one.example/debian"]


def test_mirrors_reads_a_whole_apt_folder_deb822_first(tmp_path: Path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://list.example/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "old.sources.disabled").write_text(
        "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\n")
    assert mirror.mirrors(str(tmp_path)) == ["http://mirror.example/debian",
                                             "http://list.example/debian"]


def test_command_line_prints_the_first_and_fails_clearly_without_one(tmp_path: Path):
    script = str(Path(mirror.__file__))
    (tmp_path / "sources.list").write_text("deb http://list.example/debian trixie main\n")
    ok = subprocess.run([sys.executable, script], capture_output=True, text=True,
                        env={"STACKDROP_APT_DIR": str(tmp_path)})
    assert (ok.returncode, ok.stdout) == (0, "http://list.example/debian\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = subprocess.run([sys.executable, script], capture_output=True, text=True,
                         env={"STACKDROP_APT_DIR": str(empty)})
    assert bad.returncode == 1 and "DEBIAN_MIRROR" in bad.stderr


def test_no_mirror_address_is_committed():
    """The build derives the mirror at build time; none is written in the recipe."""
    root = Path(__file__).resolve().parents[3]
    recipe = [root / "mk" / "guest.mk", *(root / "infra/local/guests/rootfs").rglob("*")]
    for f in recipe:
        if f.is_file():
            text = f.read_text(errors="replace")
            assert "deb.debian.org" not in text and "http://ftp." not in text, f
