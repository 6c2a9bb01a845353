# stackprobe on a slim Python, as a non-root user, installed from its own wheel.
#   docker build -t stackprobe .
#   docker run -p 9877:9877 -v $PWD/stackprobe.yml:/etc/stackprobe/stackprobe.yml:ro stackprobe
# The alert rules, Alertmanager example, dashboards, runbook and IAM policy ship in
# /usr/share/stackprobe, so `stackprobe rules` and `stackprobe runbook check` work in the image.
FROM python:3.11-slim AS wheel
WORKDIR /src
# Exactly what the wheel is built from: pyproject.toml, its readme, and the folder of each
# package in [tool.setuptools] (one COPY each: a COPY of a folder copies its contents).
# demo/ is in every wheel, so its entry point never dangles; moto, which it needs, is not.
COPY pyproject.toml README.md ./
COPY exporter exporter
COPY probes probes
COPY tools tools
COPY demo demo
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin stackprobe
COPY --from=wheel /wheels /wheels
# no extras: the base dependencies only, so none of the demo's (moto, flask, ...);
# `stackprobe demo` here says what it needs and exits 2
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY alert_rules /usr/share/stackprobe/alert_rules
COPY grafana/dashboards /usr/share/stackprobe/dashboards
COPY docs/runbook.md docs/iam-policy.json /usr/share/stackprobe/docs/
COPY examples /usr/share/stackprobe/examples
WORKDIR /usr/share/stackprobe
USER 10001
EXPOSE 9877
# slim has no curl; Python's urllib asks /-/healthy, which answers while the process serves
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9877/-/healthy', timeout=4).status != 200)"]
ENTRYPOINT ["stackprobe"]
CMD ["run", "--config", "/etc/stackprobe/stackprobe.yml", "--log-format", "json"]
