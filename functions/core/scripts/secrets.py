"""Writes an instance's secrets, read from SSM Parameter Store, as a file bash sources.

Usage: python3 secrets.py OUT_FILE LIST (LIST: NAME=PARAMETER lines; see functions/core/src/secrets.rs)

Values are single-quoted (they arrive byte for byte, nothing in them runs) and never printed.
Exit 1: a parameter is missing or unusable (named); 3: the AWS CLI failed (retry). Python 3.9+.
"""
import json, os, subprocess, sys


class Failed(Exception):
    pass


def split(ref):
    """(parameter, selector): a :version or :label follows the name (in an ARN, after parameter/)."""
    at = ref.find(":parameter/") + len(":parameter/") if ref.startswith("arn:") else 0
    i = ref.rfind(":", at)
    return (ref, "") if i < 0 else (ref[:i], ref[i + 1:])


def key(param):
    """A parameter alike as a name, an ARN or a response's ARN: its name without the leading /."""
    return param.split(":parameter/", 1)[-1] if param.startswith("arn:") else param.lstrip("/")


def fetch(refs):
    """Reference -> value. Ten per call at most, no two naming one parameter (responses tell
    parameters apart by name, not by selector)."""
    batches, values = [], {}
    for ref in refs:
        for b in batches:
            if len(b) < 10 and all(key(split(r)[0]) != key(split(ref)[0]) for r in b):
                b.append(ref)
                break
        else:
            batches.append([ref])
    for b in batches:
        p = subprocess.run(["aws", "ssm", "get-parameters", "--with-decryption", "--output", "json", "--names"] + b,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, AWS_PAGER=""))
        err = p.stderr.decode("utf-8", "replace").strip().splitlines() or ["no error message"]
        if p.returncode != 0:
            raise Failed(3, "aws ssm get-parameters %s exited %d: %s" % (" ".join(b), p.returncode, err[-1]))
        try:
            answer = json.loads(p.stdout.decode("utf-8"))
            params, invalid = answer["Parameters"], answer.get("InvalidParameters") or []
        except (ValueError, KeyError, TypeError):  # never shown: the output holds values
            raise Failed(3, "aws ssm get-parameters %s printed no answer" % " ".join(b)) from None
        for param in params:
            for ref in b:
                name, selector = split(ref)
                if (ref not in invalid and key(name) == key(param.get("ARN") or param["Name"])
                        and param.get("Selector", ":" + selector).lstrip(":") == selector):
                    values[ref] = param["Value"]
    return values


def main(out, listing):
    secrets = [line.split("=", 1) for line in listing.split("\n") if line]
    values = fetch(list(dict.fromkeys(ref for _, ref in secrets)))
    missing = ["%s (%s)" % (ref, name) for name, ref in secrets if ref not in values]
    if missing:
        raise Failed(1, "SSM Parameter Store has no parameter (or version, or label) " + ", ".join(missing))
    text = "# written by stackdrop at boot from SSM Parameter Store: sourced by the service\n"
    for name, ref in secrets:
        v = values[ref]
        if not isinstance(v, str) or "\0" in v:
            raise Failed(1, "the value of %s (%s) holds a NUL character: no environment variable can" % (ref, name))
        text += "export %s='%s'\n" % (name, v.replace("'", "'\\''"))
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise Failed(1, "a value is not valid Unicode") from None
    tmp = out + ".new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640), "wb") as f:
        os.fchmod(f.fileno(), 0o640)
        f.write(data)
        os.fsync(f.fileno())
    os.replace(tmp, out)
    print("secrets: %s written to %s" % (", ".join(n for n, _ in secrets), out))


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except Failed as e:
        print("secrets: %s" % e.args[1], file=sys.stderr)
        sys.exit(e.args[0])
