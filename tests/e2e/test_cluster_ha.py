"""Scale-out and high availability on the engines users run (tests/support/cluster_stack.py):
three stackprobe replicas whose members come from ECS (moto), an HA pair of Prometheus 2.42,
three clustered Alertmanagers 0.25 and VictoriaMetrics with deduplication. One run, in order:
every target has exactly its owners; the AWS calls of the three replicas are a single
process's, with two Prometheus scraping and with one; during an incident, the replica that
owns the failing target, one Prometheus and the first Alertmanager die, and coverage is back
within a refresh and a probe interval while the survivors' targets stay put; the incident
pages once and resolves once; VictoriaMetrics holds one sample per scrape interval of the
pair's two writes."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.support.cluster_stack import (
    INCIDENT,
    INTERVAL,
    QUEUE_INTERVAL,
    QUEUES,
    REFRESH,
    TIMEOUT,
    Cluster,
    aws_calls,
    coverage,
    covered,
    running,
    wanted,
)
from tests.support.polling import wait_until

ALERT = "HealthReadyFailing"
# the shipped defaults: http targets are probed by 2 replicas, AWS targets by 1
WANTED = wanted()
WINDOW = 10.0  # seconds of AWS calls compared


def calls_in_window(cluster: Cluster) -> tuple[float, float]:
    """AWS calls made in WINDOW seconds by the replicas together, and by the single process."""
    before = (sum(aws_calls(r.address) for r in cluster.alive), aws_calls(cluster.baseline))
    time.sleep(WINDOW)
    after = (sum(aws_calls(r.address) for r in cluster.alive), aws_calls(cluster.baseline))
    return after[0] - before[0], after[1] - before[1]


def notifications(cluster: Cluster, killed: float) -> list[tuple[float, str, str, str]]:
    """Every notification of the alert: seconds from the kill, the receiver, the sending
    Alertmanager and the alert's status, for a failure to say what was sent."""
    since_kill = time.time() - (time.monotonic() - killed)
    with cluster.receivers.lock:
        return [
            (round(at - since_kill, 1), receiver, body["externalURL"], alert["status"])
            for at, receiver, body in cluster.receivers.received
            for alert in body["alerts"]
            if alert["labels"]["alertname"] == ALERT
        ]


def test_three_replicas_share_the_targets_and_an_incident_pages_once(tmp_path: Path) -> None:
    started = time.monotonic()
    with running(tmp_path) as cluster:
        logs = cluster.logs
        # 1. each target has exactly its number of owners, and each owner runs it
        wait_until(
            lambda: covered(cluster.replicas, WANTED),
            60,  # the owners, then their first results
            what=lambda: f"every target's owners, with results; seen {coverage(cluster.replicas)}",
            logs=logs,
        )
        for replica in cluster.replicas:
            assert replica.wanted() == WANTED

        # 2. AWS calls: the replicas together make a single process's, whoever scrapes
        together, single = calls_in_window(cluster)
        per_cycle = QUEUES  # one GetQueueAttributes per queue and run
        print(f"AWS calls in {WINDOW:g}s, two Prometheus: replicas {together}, single {single}")
        assert single >= WINDOW / QUEUE_INTERVAL * per_cycle - per_cycle
        assert abs(together - single) <= per_cycle

        # 3. an incident on a target two replicas own
        cluster.site.failing = True
        wait_until(
            lambda: cluster.receivers.alerts("pager", ALERT),
            90,
            what=f"{ALERT} paged",
            logs=logs,
        )
        # The Alertmanager that sent it dies, a second later: the time its peers need to
        # hear of the notification by gossip. (Dead within that second, it would be sent
        # again by the next: Alertmanager's clustering sends at least once, not exactly.)
        time.sleep(1)
        sender = next(sent for _, _, sent, _ in notifications(cluster, time.monotonic()))
        victim = next(r for r in cluster.replicas if INCIDENT in r.owned())
        survivors = [r for r in cluster.replicas if r is not victim]
        before = {r.index: r.owned() for r in survivors}
        killed = time.monotonic()
        cluster.kill_replica(victim)
        cluster.prometheus[0][1].send_signal(signal.SIGKILL)
        dict(cluster.alertmanagers)[sender].send_signal(signal.SIGKILL)

        # coverage: two members now, so every target has min(wanted, 2) owners among the
        # survivors, each with results; the survivors kept what they had
        now_wanted = {name: min(n, 2) for name, n in WANTED.items()}

        wait_until(
            lambda: covered(survivors, now_wanted),
            30,
            what="coverage back after the kill",
            logs=logs,
            interval=0.1,
        )
        recovered = time.monotonic() - killed
        print(f"coverage back {recovered:.1f}s after the kill")
        assert recovered <= REFRESH + INTERVAL + TIMEOUT + 2.0
        for replica in survivors:
            assert before[replica.index] <= replica.owned()

        # the AWS calls again, one Prometheus left
        together, single = calls_in_window(cluster)
        print(f"AWS calls in {WINDOW:g}s, one Prometheus: replicas {together}, single {single}")
        assert abs(together - single) <= per_cycle

        # 4. the incident ends: one firing page and one resolved, whatever died meanwhile
        cluster.site.failing = False
        wait_until(
            lambda: cluster.receivers.alerts("pager", ALERT, status="resolved"),
            60,
            what=f"{ALERT} resolved",
            logs=logs,
        )
        time.sleep(6)  # three group intervals: time for a duplicate to show
        sent = notifications(cluster, killed)
        assert len(cluster.receivers.alerts("pager", ALERT)) == 1, sent
        assert len(cluster.receivers.alerts("pager", ALERT, status="resolved")) == 1, sent

        # 5. VictoriaMetrics: the pair's two writes of a series are one sample a second
        at = time.time() - (time.monotonic() - killed) - 1  # both Prometheus still up
        expr = 'count_over_time(stackprobe_target_replicas{target="web-00"}[10s])'
        series = cluster.query(cluster.victoria, expr, at)
        assert len(series) == 3  # one per replica, none per Prometheus
        assert all("replica" not in s["metric"] for s in series)
        counts = [float(s["value"][1]) for s in series]
        print(f"samples in 10s of each replica's series in VictoriaMetrics: {counts}")
        assert all(8 <= c <= 12 for c in counts), counts
    print(f"the whole run: {time.monotonic() - started:.0f}s")
