"""The console's settings and the links it shows beside a target: its alert's runbook section
and dashboard panel, taken from the alert rules the team deploys so the page and the page that
wakes them open the same section.

The rule files are read once per config load (which runs off the event loop), never per page.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from stackprobe.durations import Duration
from stackprobe.secrets import read_capped, resolve_path

# Where an alert links when no rules folder is configured: stackprobe's own runbook, whose
# headings are the alert names (tests/test_console.py checks the shipped rules agree).
STACKPROBE_RUNBOOK = "https://github.com/stackprobe/stackprobe/blob/main/docs/runbook.md"
# The placeholder host the shipped rules' dashboard_url carry until `stackprobe rules
# --grafana-url` (or `console.grafana_url`) says where the team's Grafana is.
EXAMPLE_GRAFANA = "https://grafana.example.com"
RULE_FILE_MAX_BYTES = 4 * 1024 * 1024
RULE_FILES_MAX = 200


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError(
            "console_url", "expected an http:// or https:// URL, found {found!r}", {"found": value}
        )
    if parts.username or parts.password:
        raise PydanticCustomError(
            "console_url_credentials",
            "the URL carries credentials, which the console would show in its links; "
            "give the URL without them",
            {},
        )
    return value.rstrip("/")


HttpUrl = Annotated[str | None, AfterValidator(_http_url)]


class Links:
    """Alert name -> runbook URL and dashboard URL, as the deployed rules carry them."""

    def __init__(
        self,
        runbooks: Mapping[str, str] | None = None,
        dashboards: Mapping[str, str] | None = None,
    ) -> None:
        self._runbooks = dict(runbooks or {})
        self._dashboards = dict(dashboards or {})

    def runbook(self, alert: str) -> str:
        if not alert:
            return ""
        return self._runbooks.get(alert) or f"{STACKPROBE_RUNBOOK}#{alert.lower()}"

    def dashboard(self, alert: str) -> str:
        return self._dashboards.get(alert, "") if alert else ""


class ConsoleSettings(BaseModel):
    """`console:` in the config file: what the landing page links to and reads from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The folder of *.rules.yml files the team deploys (as `stackprobe rules` wrote them): each
    # alert's runbook_url and dashboard_url come from there. Unset: stackprobe's own runbook.
    rules: Path | None = None
    # Alert name -> URL#section, as `stackprobe rules --runbook-map` takes; wins over `rules`.
    runbook_map: Path | None = None
    # Where the team's Grafana is: dashboard links of the shipped rules point there.
    grafana_url: HttpUrl = None
    # The firing alerts, with their priority, summary and runbook, go on top of the page.
    alertmanager_url: HttpUrl = None
    prometheus_url: HttpUrl = None
    # How often an open page refreshes itself.
    refresh: Duration = 10.0
    _links: Links = PrivateAttr(default_factory=Links)

    @field_validator("rules", "runbook_map", mode="after")
    @classmethod
    def _relative_to_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_path(value, info)

    @field_validator("refresh", mode="after")
    @classmethod
    def _sane_refresh(cls, value: float) -> float:
        if not 1.0 <= value <= 3600.0:
            raise PydanticCustomError(
                "console_refresh",
                "refresh must be between 1s and 1h, found {found}s",
                {"found": value},
            )
        return value

    @model_validator(mode="after")
    def _read_links(self) -> ConsoleSettings:
        runbooks, dashboards = _rule_links(self.rules) if self.rules else ({}, {})
        if self.runbook_map is not None:
            runbooks.update(_runbook_map(self.runbook_map))
        dashboards = {
            alert: _grafana(url, self.grafana_url)
            for alert, url in dashboards.items()
            if self.grafana_url or not url.startswith(EXAMPLE_GRAFANA)
        }
        self._links = Links(runbooks, dashboards)
        return self

    @property
    def links(self) -> Links:
        return self._links


def _grafana(url: str, grafana_url: str | None) -> str:
    if grafana_url and url.startswith(EXAMPLE_GRAFANA):
        return grafana_url + url[len(EXAMPLE_GRAFANA) :]
    return url


def _load_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(read_capped(path, RULE_FILE_MAX_BYTES))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise PydanticCustomError(
            "console_file",
            "cannot read {what} {path}: {error}",
            {"what": what, "path": str(path), "error": str(exc).splitlines()[0]},
        ) from None


def _rule_links(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    if not folder.is_dir():
        raise PydanticCustomError(
            "console_rules",
            "{path} is not a folder of *.rules.yml files (give the folder `stackprobe rules "
            "--out` wrote, or leave `rules` out for stackprobe's own runbook)",
            {"path": str(folder)},
        )
    files = sorted(folder.glob("*.rules.yml"))[:RULE_FILES_MAX]
    if not files:
        raise PydanticCustomError(
            "console_rules", "{path} holds no *.rules.yml file", {"path": str(folder)}
        )
    runbooks: dict[str, str] = {}
    dashboards: dict[str, str] = {}
    for path in files:
        data = _load_yaml(path, "the rule file")
        groups = data.get("groups") if isinstance(data, dict) else None
        for group in groups if isinstance(groups, list) else ():
            rules = group.get("rules") if isinstance(group, dict) else None
            for rule in rules if isinstance(rules, list) else ():
                if not isinstance(rule, dict) or not isinstance(rule.get("alert"), str):
                    continue
                notes = rule.get("annotations")
                notes = notes if isinstance(notes, dict) else {}
                for key, into in (("runbook_url", runbooks), ("dashboard_url", dashboards)):
                    url = notes.get(key)
                    if isinstance(url, str) and urlsplit(url).scheme in ("http", "https"):
                        into.setdefault(rule["alert"], url)
    return runbooks, dashboards


def _runbook_map(path: Path) -> dict[str, str]:
    data = _load_yaml(path, "the runbook map")
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise PydanticCustomError(
            "console_runbook_map",
            "{path}: expected a mapping of alert name to runbook URL",
            {"path": str(path)},
        )
    bad = [k for k, v in data.items() if urlsplit(v).scheme not in ("http", "https")]
    if bad:
        raise PydanticCustomError(
            "console_runbook_map",
            "{path}: {alert} does not map to an http(s) URL",
            {"path": str(path), "alert": bad[0]},
        )
    return dict(data)
