# Two commands on a fresh machine: `make demo` and `make test`. Both build the cached venv first
# (scripts/bootstrap_env.sh; reused until a pin changes) and are safe to run again.
.PHONY: env demo test bench

env:
	@bash scripts/bootstrap_env.sh >/dev/null

demo: env
	@"$$(bash scripts/bootstrap_env.sh)/bin/mm-live" demo

test: env
	@"$$(bash scripts/bootstrap_env.sh)/bin/python" -m pytest $(PYTEST_ARGS)

bench: env
	@for s in scripts/bench_*.py; do "$$(bash scripts/bootstrap_env.sh)/bin/python" $$s || exit 1; done
