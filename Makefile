# Shortcuts for the scripts in scripts/ (the README gives the scripts themselves).
.PHONY: setup run demo test bench
setup:
	bash scripts/setup.sh
run:
	bash scripts/run.sh
demo:
	bash scripts/run.sh --demo
test:
	bash scripts/test.sh
bench:
	.venv/bin/python -m bench.upload && .venv/bin/python -m bench.poll && .venv/bin/python -m bench.webhook && .venv/bin/python -m bench.scale && .venv/bin/python -m bench.einvoice
