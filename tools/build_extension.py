"""Build the installable Blender extension zip into dist/ (no Blender needed; standard library only).

    python tools/build_extension.py                 # dist/imagen-0.1.0-lite.zip
    python tools/build_extension.py --variant full  # dist/imagen-0.1.0-full.zip, bundling wheels/*.whl

Layout, as `blender --command extension build` makes it: blender_manifest.toml and __init__.py at the zip root,
then imagen_addon/ (with imagen_addon/weights/ when present). Files are chosen by the manifest's
`[build] paths_exclude_pattern` (gitignore-style, the same rules Blender applies), so tests, bench, docs, runs,
datasets, wheels, caches and dot-files stay out.

lite: the manifest's `wheels` is dropped; the model runs in a separate Python that has torch (preferences).
full: every wheels/*.whl is added under wheels/ and listed in the manifest's `wheels`, so Blender installs them
and the add-on can run the runtime with Blender's own Python. Wheels are platform specific; put the ones for the
target platform (torch, numpy, safetensors, ... and their dependencies) in wheels/ first.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "blender_manifest.toml"
FIXED_TIME = (2024, 1, 1, 0, 0, 0)  # reproducible archives


class PathPatterns:
    """gitignore-style matching of root-relative paths ('a/b.py', directories end with '/')."""

    def __init__(self, patterns: list[str]):
        self.rules: list[tuple[bool, bool, bool, list[str]]] = []  # (negate, dir only, anchored, parts)
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern[1:] if negate else pattern
            dir_only = pattern.endswith("/")
            pattern = pattern.rstrip("/")
            anchored = "/" in pattern  # a leading or middle slash anchors to the root (gitignore)
            self.rules.append((negate, dir_only, anchored, pattern.lstrip("/").split("/")))

    @staticmethod
    def _match_parts(pattern: list[str], parts: list[str]) -> bool:
        if not pattern:
            return not parts
        if pattern[0] == "**":
            return any(PathPatterns._match_parts(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
        return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and PathPatterns._match_parts(
            pattern[1:], parts[1:])

    def excluded(self, path: str) -> bool:
        is_dir = path.endswith("/")
        parts = path.strip("/").split("/")
        result = False
        for negate, dir_only, anchored, pattern in self.rules:
            if dir_only and not is_dir:
                continue
            if anchored:
                hit = self._match_parts(pattern, parts)
            else:
                hit = fnmatch.fnmatchcase(parts[-1], pattern[0])
            if hit:
                result = not negate
        return result


def read_manifest(source: Path) -> dict:
    with open(source / MANIFEST, "rb") as fh:
        return tomllib.load(fh)


def collect_files(source: Path, patterns: list[str]) -> list[str]:
    """Root-relative paths (forward slashes, sorted) of the files the extension ships."""
    matcher = PathPatterns(patterns)
    found = []
    for dirpath, dirnames, filenames in os.walk(source):
        rel_dir = Path(dirpath).relative_to(source).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if not matcher.excluded(f"{prefix}{d}/"))
        for name in filenames:
            rel = prefix + name
            if rel != MANIFEST and not matcher.excluded(rel):
                found.append(rel)
    return sorted(found)


def manifest_text(source: Path, wheels: list[str]) -> str:
    """The manifest with its `wheels = [...]` replaced by `wheels` (dropped when empty)."""
    text = (source / MANIFEST).read_text(encoding="utf-8")
    pattern = re.compile(r"^wheels\s*=\s*\[[^\]]*\]\s*\n", re.MULTILINE)
    if not pattern.search(text):
        raise SystemExit(f"{MANIFEST}: no `wheels = [...]` line to rewrite")
    listed = "".join(f'  "./{w}",\n' for w in wheels)
    replacement = f"wheels = [\n{listed}]\n" if wheels else ""
    return pattern.sub(lambda _: replacement, text, count=1)


def build(source: Path = ROOT, out_dir: Path | None = None, variant: str = "lite") -> Path:
    if variant not in ("lite", "full"):
        raise ValueError("variant must be 'lite' or 'full'")
    manifest = read_manifest(source)
    patterns = manifest.get("build", {}).get("paths_exclude_pattern", [])
    files = collect_files(source, patterns)
    if "__init__.py" not in files or not any(f.startswith("imagen_addon/") for f in files):
        raise SystemExit("the extension needs __init__.py and imagen_addon/ at the source root")
    wheels = sorted(p.relative_to(source).as_posix() for p in (source / "wheels").glob("*.whl"))
    if variant == "full" and not wheels:
        raise SystemExit("variant 'full' needs the platform's wheels in wheels/ (torch, numpy, ...)")
    if variant == "lite":
        wheels = []
    out_dir = Path(out_dir or source / "dist")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest['id']}-{manifest['version']}-{variant}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(MANIFEST, FIXED_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, manifest_text(source, wheels))
        for rel in sorted(set(files) | set(wheels)):
            info = zipfile.ZipInfo(rel, FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED if rel.endswith(".whl") else zipfile.ZIP_DEFLATED
            zf.writestr(info, (source / rel).read_bytes())
    os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=("lite", "full"), default="lite")
    parser.add_argument("--source", type=Path, default=ROOT)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <source>/dist)")
    args = parser.parse_args(argv)
    target = build(args.source.resolve(), args.out, args.variant)
    with zipfile.ZipFile(target) as zf:
        count = len(zf.namelist())
    print(f"{target} ({count} files, {target.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
