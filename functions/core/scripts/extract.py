"""Extracts one folder of a stackdrop bundle on the instance.

Usage: python3 extract.py ZIP PREFIX DEST MAX_BYTES

Reads entry names exactly as the validator does (functions/core/src/bundle.rs): a name is UTF-8
when its bytes are (UTF-8 flag or not), else code page 437; an unsafe name (empty, NUL,
backslash, absolute, "..", flagged but not UTF-8) refuses the whole bundle; "." and empty
components are dropped (so "./a//b" is "a/b"); a name ending in "/" or "/." is a folder;
__MACOSX/ is skipped; an encrypted file, or one compressed other than stored or deflate, refuses
the bundle. Every file whose normalized path starts with PREFIX ("" or "some/dir/",
the bundle root plus the instance's code folder) is written below DEST, and nothing else: no
file outside DEST, never through a symbolic link, at most MAX_BYTES in all (what validation saw
in the zip's central directory). Extracting no file at all is a failure. Runs on Python 3.9+.
"""

import os
import stat
import sys
import zipfile

FLAG_ENCRYPTED = 0x1
FLAG_UTF8 = 0x800
UNIX = 3
MACOSX = "__MACOSX"
CHUNK = 1 << 20


class Refused(Exception):
    """The bundle breaks a rule: nothing is left half-done, the caller removes DEST."""


def raw_name(info):
    """The name's bytes as stored in the zip (zipfile decodes them as UTF-8 or cp437)."""
    if info.flag_bits & FLAG_UTF8:
        return info.orig_filename.encode("utf-8")
    return info.orig_filename.encode("cp437")


def decode_name(raw, flags):
    """UTF-8 when it is, else code page 437; None for a flagged name that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if flags & FLAG_UTF8:
            return None
        return raw.decode("cp437")


def unsafe(name):
    """Why a decoded name is unsafe to unpack (the validator's words), or None."""
    if name is None:
        return "is not valid UTF-8"
    if name == "":
        return "has an empty name"
    if "\0" in name:
        return "contains a NUL byte"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/") or (len(name) >= 2 and name[0].isascii() and name[0].isalpha() and name[1] == ":"):
        return "is an absolute path"
    if ".." in name.split("/"):
        return "has a \"..\" path component"
    return None


def normalize(name):
    """The path with "." and empty components dropped, and whether it names a folder."""
    parts = name.split("/")
    is_dir = parts[-1] in ("", ".")
    return "/".join(p for p in parts if p not in ("", ".")), is_dir


def unpackable(info):
    """Why a file cannot be unpacked as it is (the validator's words), or None."""
    if info.flag_bits & FLAG_ENCRYPTED:
        return "is encrypted; stackdrop cannot unpack encrypted files"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return "uses compression method %d; only stored (0) and deflate (8) are supported" % info.compress_type
    return None


def selected(infos, prefix):
    """(info, path below prefix) for every file under prefix, in zip order; Refused on any
    unsafe name, as the validator rejects the bundle for one."""
    out = []
    for info in infos:
        name = decode_name(raw_name(info), info.flag_bits)
        why = unsafe(name)
        if why:
            raise Refused("entry %r %s" % (info.orig_filename, why))
        path, is_dir = normalize(name)
        if is_dir or path == "" or path == MACOSX or path.startswith(MACOSX + "/"):
            continue
        if path.startswith(prefix):
            why = unpackable(info)
            if why:
                raise Refused("entry %r %s" % (info.orig_filename, why))
            out.append((info, path[len(prefix):]))
    return out


def mode_of(info):
    """The file's permission bits from a Unix zip, else 0644 (a link is written as a file)."""
    mode = info.external_attr >> 16
    if info.create_system != UNIX or stat.S_ISLNK(mode) or not mode & 0o777:
        return 0o644
    return mode & 0o777


def extract(zpath, prefix, dest, max_bytes):
    """Writes the files; returns (files, bytes)."""
    if prefix and not prefix.endswith("/"):
        raise Refused("prefix %r must be empty or end in /" % prefix)
    root = os.path.realpath(dest)
    files = written = 0
    try:
        z = zipfile.ZipFile(zpath)
    except UnicodeDecodeError:
        # zipfile decodes flagged names strictly, as the validator checks them.
        raise Refused("an entry name is flagged UTF-8 but is not valid UTF-8")
    with z:
        for info, rel in selected(z.infolist(), prefix):
            parts = rel.split("/")
            folder = root
            for part in parts[:-1]:
                folder = os.path.join(folder, part)
                if os.path.islink(folder) or (os.path.lexists(folder) and not os.path.isdir(folder)):
                    raise Refused("entry %r needs folder %r, which is a file in the bundle" % (info.orig_filename, part))
                if not os.path.isdir(folder):
                    os.mkdir(folder, 0o755)
            target = os.path.join(folder, parts[-1])
            if os.path.commonpath([root, os.path.realpath(target)]) != root:
                raise Refused("entry %r would be written outside %s" % (info.orig_filename, dest))
            if os.path.isdir(target) and not os.path.islink(target):
                raise Refused("entry %r is a file and a folder in the bundle" % info.orig_filename)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with z.open(info) as src, os.fdopen(fd, "wb") as out:
                while True:
                    chunk = src.read(CHUNK)
                    if not chunk:
                        break
                    written += len(chunk)
                    if written > max_bytes:
                        raise Refused("the files under %r hold more than the %d bytes validation saw" % (prefix, max_bytes))
                    out.write(chunk)
            os.chmod(target, mode_of(info))
            files += 1
    if files == 0:
        raise Refused("no file of the bundle lies under %r" % (prefix or "its root"))
    return files, written


def main(argv):
    if len(argv) != 5:
        sys.exit("usage: extract.py ZIP PREFIX DEST MAX_BYTES")
    zpath, prefix, dest, max_bytes = argv[1], argv[2], argv[3], int(argv[4])
    try:
        files, written = extract(zpath, prefix, dest, max_bytes)
    except (Refused, zipfile.BadZipFile, OSError, UnicodeDecodeError, NotImplementedError, RuntimeError) as e:
        sys.exit("extract: %s" % e)
    print("extracted %d file(s), %d bytes" % (files, written))


if __name__ == "__main__":
    main(sys.argv)
