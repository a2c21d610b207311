#!/usr/bin/env bash
# Type-check the Blender glue (imagen_addon/blender + the stdlib runtime client/launcher) against the
# fake-bpy-module stubs. The stubs live in their own venv (build/typecheck-venv): installed next to the real
# `bpy` module they would shadow it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=build/typecheck-venv
PINS="fake-bpy-module-latest==20261026 mypy==2.4.1"
if [ ! -f "$VENV/.setup-done" ] || [ "$(cat "$VENV/.setup-done")" != "$PINS" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet $PINS
  echo "$PINS" > "$VENV/.setup-done"
fi
exec "$VENV/bin/mypy" --config-file tools/mypy-blender.ini "$@"
