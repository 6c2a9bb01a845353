"""`stackprobe demo --with-alerts`: the shipped rules on the demo clock in a real Prometheus,
the example routing in a real Alertmanager, and each page reaching the demo's own receiver,
its log and its console; the faults' alerts as the rules and tests/e2e know them."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from stackprobe.demo.alerting import (
    LOGGED_MAX,
    PRODUCTION,
    Clock,
    Pace,
    about,
    demo_clock,
    faster_rules,
    group_waits,
    muted_heights,
    muting_depths,
    muting_pairs,
    notification,
    read_alerts,
    routing,
    timing,
)
from stackprobe.demo.faults import FAULTS
from stackprobe.durations import parse_duration
from stackprobe.probes import KINDS
from tests.support.alerting import ALERTMANAGER, RULE_FILES, RULES, alert_rules, example_config
from tests.support.incidents import INCIDENTS
from tests.support.polling import wait_port, wait_until
from tests.support.processes import free_port, require_binary, run, stop

CLOUDWATCH_SERIES = [
    m.name for kind in ("cloudwatch", "rds", "elasticache") for m in KINDS[kind].metrics
]
# What the demo's traffic adds to an incident the e2e plays: an outage (no target behind the
# balancer, or the balancer down) answers every request with the balancer's own 5xx.
OUTAGE_PAGE = "AlbMostRequests5xx"
OUTAGES = {"scaled-to-zero", "tasks-failing", "alb-failed", "bad-deploy"}


def test_every_alert_a_fault_names_is_a_shipped_rule_with_a_priority() -> None:
    rules = read_alerts(RULES)
    for fault in FAULTS.values():
        assert fault.alerts, f"{fault.name} names no alert"
        for name in fault.alerts:
            assert name in rules, f"{fault.name}: no alert rule {name} in alert_rules/"
            assert rules[name].priority in ("P0", "P1", "P2", "P3"), name
            assert rules[name].for_seconds > 0, name


def test_the_faults_alerts_are_the_incidents_the_e2e_plays() -> None:
    """What a fault fires by itself in tests/e2e (an incident's `also` step aside), and
    nothing more but the balancer's 5xx of an outage."""
    for incident in INCIDENTS:
        if incident.fault is None:
            continue
        played = set(incident.alerts) - {incident.also[0] if incident.also else ""}
        named = set(FAULTS[incident.fault].alerts)
        assert played <= named, (incident.fault, played - named)
        extra = named - played
        assert extra <= {OUTAGE_PAGE}, (incident.fault, extra)
        assert (OUTAGE_PAGE in named) == (incident.fault in OUTAGES), incident.fault
    assert {i.fault for i in INCIDENTS if i.fault} == set(FAULTS)


def test_the_demo_clock_is_the_e2e_clock_at_one_probe_a_second() -> None:
    assert demo_clock(1.0) == Clock(speed=60.0, slack=5.0)
    assert demo_clock(0.5) == demo_clock(1.0)  # never faster than Prometheus's 1 s step
    assert demo_clock(5.0) == Clock(speed=12.0, slack=25.0)  # a minute per probe run
    assert demo_clock(1.0).wait(3600) == 65.0
    assert PRODUCTION.wait(120) == 120.0


def test_the_rules_on_the_demo_clock_are_shortened_labelled_and_valid(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    label = "stackprobe demo: demo clock.\nFor the demo only."
    written = faster_rules(RULE_FILES, tmp_path / "rules", 60, 5.0, label)
    assert [p.name for p in written] == [p.name for p in RULE_FILES]
    checked = run(promtool, "check", "rules", *written)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    shortened: dict[str, dict[str, Any]] = {}
    for path, shipped in zip(written, RULE_FILES, strict=True):
        text = path.read_text()
        assert text.startswith("# stackprobe demo: demo clock.\n# For the demo only.\n"), path
        document, original = yaml.safe_load(text), yaml.safe_load(shipped.read_text())
        for group, before in zip(document["groups"], original["groups"], strict=True):
            assert group["name"] == f"{before['name']}-demo-clock"
            for rule, was in zip(group["rules"], before["rules"], strict=True):
                # the links the console reads stay as shipped
                assert rule.get("annotations") == was.get("annotations")
                assert rule.get("labels") == was.get("labels")
                if "alert" in rule:
                    shortened[rule["alert"]] = rule
    assert shortened["AlbAccessLogsDisabled"]["for"] == "1m5s"  # 1h
    assert shortened["DnsNotResolving"]["for"] == "7s"  # 2m
    assert shortened["AlbNoHealthyTargets"]["for"] == "8s"  # 3m: no routing, no causes
    assert "offset 24m" in shortened["S3BucketGrowingFast"]["expr"]  # 1d
    leak = shortened["PostgresConnectionLeak"]["expr"]
    assert "[3m:5s]" in leak and "4 * 3600 / 60)" in leak  # [3h:5m], 4 hours ahead


def test_on_the_demo_clock_each_cause_fires_a_slack_before_what_it_mutes(tmp_path: Path) -> None:
    """A minute between a cause and its symptom is a second on the demo clock, less than a
    probe run, a scrape and an evaluation can put between them; each cause above an alert adds
    the slack, so the cause still fires first (the e2e's AEP Incident 6 once paged
    AlbNoHealthyTargets, 3m, under EcsServiceNoRunningTasks, 2m, a second apart here)."""
    inhibit_rules = yaml.safe_load(ALERTMANAGER.read_text())["inhibit_rules"]
    written = faster_rules(RULE_FILES, tmp_path / "rules", 60, 5.0, inhibit_rules=inhibit_rules)
    fors = {
        name: parse_duration(r["for"]) for name, r in alert_rules(written).items() if "for" in r
    }
    assert fors["EcsServiceNoRunningTasks"] == 7.0  # 2m, nothing above it
    assert fors["AlbNoHealthyTargets"] == 13.0  # 3m, and one cause above
    assert fors["HealthLiveFailing"] + 5.0 <= fors["HealthReadyFailing"]
    rules = read_alerts(RULES)
    assert rules["AlbNoHealthyTargets"].causes == 1
    assert rules["EcsServiceNoRunningTasks"].causes == 0
    for cause, symptom in muting_pairs(alert_rules(), inhibit_rules):
        if cause in fors and symptom in fors:
            assert fors[cause] + 5.0 <= fors[symptom], (cause, symptom)


def test_on_the_demo_clock_each_cause_keeps_firing_a_slack_after_what_it_mutes(
    tmp_path: Path,
) -> None:
    """The other way round, on recovery: a symptom must clear before its cause, and a minute
    of `keep_firing_for` between them is a second here."""
    inhibit_rules = yaml.safe_load(ALERTMANAGER.read_text())["inhibit_rules"]
    written = faster_rules(RULE_FILES, tmp_path / "rules", 60, 5.0, inhibit_rules=inhibit_rules)
    keeps = {
        name: parse_duration(r["keep_firing_for"])
        for name, r in alert_rules(written).items()
        if "keep_firing_for" in r
    }
    assert keeps["AlbNoHealthyTargets"] == 6.0  # 1m, mutes nothing
    assert keeps["EcsServiceNoRunningTasks"] == 12.0  # 2m, and one level below it
    pairs = [(c, s) for c, s in muting_pairs(alert_rules(), inhibit_rules) if s in keeps]
    for cause, symptom in pairs:
        assert keeps[cause] >= keeps[symptom] + 5.0, (cause, symptom)
    assert len(pairs) >= 20


def test_muting_depth_is_the_longest_chain_of_causes() -> None:
    rules = {name: {"labels": {"area": "x"}} for name in ("A", "B", "C", "D", "StackprobeDown")}
    inhibit = [
        {"source_matchers": ['alertname="A"'], "target_matchers": ['alertname=~"B|C"']},
        {"source_matchers": ['alertname="B"'], "target_matchers": ['alertname="C"']},
        {"source_matchers": ['alertname="C"'], "target_matchers": ['alertname="A"']},  # a cycle
        {"source_matchers": ['alertname="StackprobeDown"'], "target_matchers": ['area="x"']},
    ]
    depths = muting_depths(rules, inhibit)
    assert depths["D"] == 0  # muted only by StackprobeDown, whose series go stale
    assert set(depths) == set(rules)  # the cycle ends
    assert muting_depths(rules, inhibit[:2]) == {
        "A": 0,
        "B": 1,
        "C": 2,
        "D": 0,
        "StackprobeDown": 0,
    }
    assert muted_heights(rules, inhibit[:2]) == {
        "A": 2,
        "B": 1,
        "C": 0,
        "D": 0,
        "StackprobeDown": 0,  # its symptoms go stale: it is no cause to outlast
    }
    assert set(muted_heights(rules, inhibit)) == set(rules)  # the cycle ends


def test_the_routing_is_the_examples_with_the_demos_receiver(tmp_path: Path) -> None:
    amtool = require_binary("amtool")
    hooks = "http://127.0.0.1:9/hooks"
    config = routing(RULES, hooks)
    assert config == example_config(hooks)
    timing(config)
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    checked = run(amtool, "check-config", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert group_waits(config) == {"P0": 10.0, "P1": 10.0, "P2": 10.0, "P3": 10.0}
    assert group_waits(routing(RULES, hooks)) == {"P0": 10.0, "P1": 30.0, "P2": 30.0, "P3": 30.0}


def test_the_banner_times_follow_each_rules_for_and_what_feeds_it() -> None:
    rules = read_alerts(RULES, CLOUDWATCH_SERIES)
    assert rules["AlbMostRequests5xx"].cloudwatch  # through its recording rules
    assert rules["SqsJobsStuck"].cloudwatch
    assert not rules["DnsNotResolving"].cloudwatch
    assert not rules["S3BucketGrowingFast"].cloudwatch  # the s3 kind's own figure
    shipped = group_waits(routing(RULES, ""))
    production = Pace(PRODUCTION, 5.0, 60.0 + 120.0, shipped)
    # a probe run, the rule's 2m, the pager route's 10 s
    assert production.page_after(rules["DnsNotResolving"]) == 5 + 120 + 10
    assert about(production.page_after(rules["DnsNotResolving"])) == "~2 min"
    # ... and CloudWatch's period and delay before the 5xx are seen
    assert production.page_after(rules["AlbMostRequests5xx"]) == 5 + 180 + 120 + 10
    demo_routes = routing(RULES, "")
    timing(demo_routes)
    here = Pace(demo_clock(1.0), 1.0, 12.0, group_waits(demo_routes))
    assert here.page_after(rules["DnsNotResolving"]) == 1 + 7 + 10
    assert about(here.page_after(rules["DnsNotResolving"])) == "~20 s"
    assert about(here.page_after(rules["AlbAccessLogsDisabled"])) == "~75 s"
    # nothing deleted for 15m, then its 15m `for`
    assert rules["SqsJobsStuck"].fill_seconds == 900
    assert production.page_after(rules["SqsJobsStuck"]) == 5 + 180 + 900 + 900 + 30
    assert here.page_after(rules["SqsJobsStuck"]) == 1 + 12 + 15 + 20 + 10


def test_a_notification_is_one_short_line_of_what_paged() -> None:
    runbook = "https://github.com/stackprobe/stackprobe/blob/main/docs/runbook.md#dnsnotresolving"
    payload = {
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DnsNotResolving", "priority": "P0", "target": "aep-dns"},
                "annotations": {"runbook_url": runbook, "description": "x" * 5000},
            }
        ],
    }
    assert notification("pager", payload) == {
        "receiver": "pager",
        "status": "firing",
        "alertname": "DnsNotResolving",
        "priority": "P0",
        "target": "aep-dns",
        "alerts": "1",
        "runbook_url": runbook,
    }
    payload["alerts"][0]["labels"]["target"] = "t" * 1000
    assert len(notification("pager", payload)["target"]) == LOGGED_MAX
    assert notification("chat", ["not", "a", "notification"])["alerts"] == "0"


def test_without_prometheus_it_says_what_to_install_in_one_line() -> None:
    blocked = (
        "import shutil, sys; import stackprobe.demo.alerting as a; "
        "a.BINARY_DIRS = (); shutil.which = lambda *_, **__: None; "
        "from stackprobe.cli import main; sys.exit(main(['demo', '--with-alerts']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "apt-get install prometheus prometheus-alertmanager" in done.stderr
    assert "prometheus" in done.stderr.split(":")[1]  # names what is missing


def _banner_url(banner: str, name: str) -> str:
    found = re.search(rf"^  {name}\s+(http://127\.0\.0\.1:\d+)", banner, re.MULTILINE)
    assert found, banner
    return found.group(1)


def test_a_fault_becomes_a_page_in_the_log_alertmanager_and_the_console(tmp_path: Path) -> None:
    """The demo as a user runs it: the banner's own command switches a fault on, its alert
    reaches the demo's receiver (one log line with its priority and runbook), Alertmanager
    and the console; SIGTERM stops Prometheus and Alertmanager and removes their files. No
    PostgreSQL or Redis is needed: theirs page too, which the test leaves be."""
    for binary in ("prometheus", "promtool", "prometheus-alertmanager"):
        require_binary(binary)
    metrics, app = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    log = tmp_path / "demo.log"
    args = [
        sys.executable,
        "-m",
        "stackprobe",
        "demo",
        "--with-alerts",
        f"--listen={metrics}",
        f"--app-listen={app}",
        f"--postgres-dsn=postgresql://nobody@127.0.0.1:{free_port()}/postgres",
        f"--redis-url=redis://127.0.0.1:{free_port()}/0",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(
                lambda: "Ctrl-C stops the demo." in log.read_text(),
                60,
                what="the demo's banner",
                logs=[log],
                interval=0.5,
            )
            banner = log.read_text()
            prometheus = _banner_url(banner, "Prometheus")
            alertmanager = _banner_url(banner, "Alertmanager")
            assert "demo clock: 1 minute of the rules' time is 1s" in banner
            dns = next(line for line in banner.splitlines() if line.startswith("  dns-broken "))
            assert "DnsNotResolving P0" in dns and "~20 s" in dns, dns
            config = re.search(r"^  its config\s+(\S+/stackprobe\.yml)", banner, re.MULTILINE)
            assert config, banner
            switch = next(
                line for line in banner.splitlines() if "--fault unhealthy-targets" in line
            )
            command = shlex.split(switch.split("(")[0].replace("unhealthy-targets", "dns-broken"))
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0 and done.stdout.strip() == "dns-broken: on", done

            page = re.compile(
                r'event="alert notification" receiver=pager status=firing '
                r"alertname=DnsNotResolving priority=P0 target=aep-dns alerts=1 "
                r"runbook_url=https://github\.com/stackprobe/stackprobe/blob/main/docs/"
                r"runbook\.md#dnsnotresolving$",
                re.MULTILINE,
            )
            wait_until(
                lambda: page.search(log.read_text()),
                60,
                what="DnsNotResolving at the demo's receiver",
                logs=[log],
                interval=0.5,
            )
            firing = httpx.get(
                f"{alertmanager}/api/v2/alerts",
                params={"filter": 'alertname="DnsNotResolving"'},
                timeout=5,
            ).json()
            assert [a["status"]["state"] for a in firing] == ["active"], firing
            assert firing[0]["labels"]["priority"] == "P0"
            groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
            assert groups and all(g["name"].endswith("-demo-clock") for g in groups)
            console = httpx.get(f"http://{metrics}/", timeout=5).text
            assert config.group(1) in console and "built-in default" not in console
            # in the firing alerts on top, read from the Alertmanager, not only the row's link
            firing_section = console.split("Firing alerts", 1)[1].split("</section>", 1)[0]
            assert "<b>DnsNotResolving</b> on <b>aep-dns</b>" in firing_section, firing_section
            assert ">P0<" in firing_section
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop(process)
    assert process.returncode == 0, log.read_text()[-3000:]
    for url in (prometheus, alertmanager):
        wait_port(int(url.rsplit(":", 1)[1]), up=False, timeout=5)
    assert not Path(config.group(1)).parent.exists()
