"""Lists the command-line flags `vllm serve` accepts, from a release wheel's source, for the flag-pinning test.

Engine flags are the literal `--...` strings of `add_argument` calls in `vllm/engine/arg_utils.py`;
the HTTP server's flags are generated from the fields of the `*FrontendArgs` dataclasses
(`vllm/entrypoints/common/cli_args.py` in 0.33.0, `vllm/entrypoints/openai/cli_args.py` before) as
`--field-name`, plus literal ones added in `make_arg_parser`.

    pip download vllm==0.33.0 --no-deps -d /tmp/vllm-wheel
    python hack/vllm_serve_flags.py /tmp/vllm-wheel/vllm-0.33.0-*.whl > tests/data/vllm-0.33.0-serve-flags.txt
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import zipfile

SOURCES = (
    "vllm/engine/arg_utils.py",
    "vllm/entrypoints/common/cli_args.py",
    "vllm/entrypoints/openai/cli_args.py",
)


def flags_in(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
        ):
            found |= {
                a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")
            }
        if isinstance(node, ast.ClassDef) and node.name.endswith("FrontendArgs"):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    found.add("--" + item.target.id.replace("_", "-"))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel")
    args = parser.parse_args(argv)
    flags: set[str] = set()
    with zipfile.ZipFile(args.wheel) as archive:
        version = re.search(r"__version__ = version = '([^']+)'", archive.read("vllm/_version.py").decode())
        for path in SOURCES:
            if path in archive.namelist():
                flags |= flags_in(archive.read(path).decode())
    sys.stdout.write(
        f"# vLLM {version.group(1) if version else '?'}: flags of `vllm serve` (hack/vllm_serve_flags.py)\n"
    )
    sys.stdout.write("".join(f"{flag}\n" for flag in sorted(flags)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
