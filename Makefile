# The two commands a newcomer needs:
#   make demo   set everything up and run the simulated station
#   make test   set everything up and run the test suite
.PHONY: setup demo test test-fast bench clean-venv

ARGS ?=

setup:
	bash scripts/setup.sh

demo:
	bash scripts/demo.sh $(ARGS)

test:
	bash scripts/test.sh $(ARGS)

bench:
	bash scripts/setup.sh && bash scripts/bench_smoke.sh
