# The two commands a newcomer needs:
#   make demo   set everything up and run the simulated station
#   make test   set everything up and run the test suite (kilted, then the node tests on jazzy)
#   make test-jazzy   only the node tests on the ROS 2 jazzy wheels (.venv-jazzy)
.PHONY: setup demo test test-jazzy bench

ARGS ?=

setup:
	bash scripts/setup.sh

demo:
	bash scripts/demo.sh $(ARGS)

test:
	bash scripts/test.sh $(ARGS)

test-jazzy:
	bash scripts/test.sh --jazzy $(ARGS)

bench:
	bash scripts/setup.sh && bash scripts/bench_smoke.sh
