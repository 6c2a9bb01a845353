# The two commands a newcomer needs: `make demo` and `make test`.
VENV := .venv
LISTEN ?= :9877

demo:  ## stackprobe against a demo ECS stack on this machine (no AWS account needed)
	scripts/setup.sh --venv
	$(VENV)/bin/stackprobe demo $(if $(POSTGRES_DSN),--postgres-dsn=$(POSTGRES_DSN)) \
		$(if $(REDIS_URL),--redis-url=$(REDIS_URL))

demo-alerts:  ## the demo with Prometheus and Alertmanager beside it: each fault becomes a page
	scripts/setup.sh --venv
	$(VENV)/bin/stackprobe demo --with-alerts $(if $(POSTGRES_DSN),--postgres-dsn=$(POSTGRES_DSN)) \
		$(if $(REDIS_URL),--redis-url=$(REDIS_URL))

.PHONY: demo demo-alerts run test lint bench bench-datastores bench-aws dashboards clean

run:  ## run stackprobe with its built-in self-check config (no AWS account needed)
	scripts/setup.sh --venv
	$(VENV)/bin/stackprobe run --listen $(LISTEN) $(if $(CONFIG),--config $(CONFIG))

test:  ## install what the tests need (Debian packages, the venv) and run them all
	scripts/setup.sh
	$(VENV)/bin/pytest -n 2 --dist loadscope --no-loadscope-reorder

lint:
	scripts/setup.sh --venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench:  ## stackprobe next to blackbox_exporter on the same loopback targets
	scripts/setup.sh --bench
	$(VENV)/bin/python bench/http_vs_blackbox.py

dashboards:  ## regenerate grafana/dashboards/*.json from grafana/generate.py
	scripts/setup.sh --venv
	$(VENV)/bin/python grafana/generate.py

bench-aws:  ## AWS API calls per cycle against the batched minimum, in moto
	scripts/setup.sh --venv
	$(VENV)/bin/python bench/aws_calls.py

.PHONY: bench-reload
bench-reload:  ## /metrics latency through reloads, an alias bomb, a SIGHUP storm and slowloris
	scripts/setup.sh --bench
	$(VENV)/bin/python bench/reload_stall.py

.PHONY: bench-cluster
bench-cluster:  ## 1, 2 and 3 replicas: targets each, AWS calls per cycle, recovery after a kill
	scripts/setup.sh --bench
	$(VENV)/bin/python bench/cluster_replicas.py

.PHONY: bench-10k
bench-10k:  ## 10,000 http targets for 10 minutes: runs on time, RSS and fds flat, beside blackbox
	scripts/setup.sh --bench
	$(VENV)/bin/python bench/ten_thousand.py

.PHONY: bench-hostile
bench-hostile:  ## RSS and fds over 10 minutes against 2,000 hostile http targets, beside blackbox
	scripts/setup.sh --bench
	$(VENV)/bin/python bench/hostile_targets.py

bench-datastores:  ## stackprobe next to postgres_exporter and redis_exporter
	scripts/setup.sh --bench
	$(VENV)/bin/python bench/datastores_vs_exporters.py

clean:
	rm -rf $(VENV) .venv-runtime build *.egg-info .pytest_cache .mypy_cache .ruff_cache
