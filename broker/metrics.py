"""Prometheus metrics, on a registry owned by the app (no process-global collectors)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from broker.domain.enums import JobState
from broker.domain.footprint import RunFootprint


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Gauge("broker_jobs", "Jobs by state.", ["state"], registry=self.registry)
        self.placement_seconds = Histogram(
            "broker_placement_decision_seconds",
            "Time the engine took to decide one job's placement.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.wait_seconds = Histogram(
            "broker_job_wait_seconds",
            "From submission to placement, by priority tier.",
            ["tier"],
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 14400),
            registry=self.registry,
        )
        self.requests = Counter(
            "broker_http_requests",
            "API requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "broker_http_request_duration_seconds",
            "API request latency by route.",
            ["method", "route"],
            registry=self.registry,
        )
        self.preemptions = Counter(
            "broker_preemptions",
            "Jobs preempted for higher-tier or quota-owning work.",
            registry=self.registry,
        )
        self.transitions = Counter(
            "broker_job_transitions",
            "Job state transitions by target state.",
            ["state"],
            registry=self.registry,
        )

        self.burst_instances = Gauge(
            "broker_burst_instances",
            "Burst cloud instances alive (asked for, booting or joined), by provider site.",
            ["site"],
            registry=self.registry,
        )
        self.burst_usd_per_hour = Gauge(
            "broker_burst_usd_per_hour",
            "What the alive burst instances cost per hour, by provider site.",
            ["site"],
            registry=self.registry,
        )
        self._burst_sites: set[str] = set()
        self.leader = Gauge(
            "broker_scheduled_leader",
            "1 when this replica runs the scheduled duties, else 0.",
            registry=self.registry,
        )

        self.service_replicas = Gauge(
            "broker_service_replicas",
            "Replicas of each inference service: desired (the autoscaler's) and ready.",
            ["service", "kind"],
            registry=self.registry,
        )
        self.service_load = Gauge(
            "broker_service_load",
            "Each service's last observed load, in its metric (requests/s or in flight).",
            ["service"],
            registry=self.registry,
        )
        self.cold_start_seconds = Histogram(
            "broker_service_cold_start_seconds",
            "From a service's activation at zero replicas to its first ready replica.",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
            registry=self.registry,
        )
        self.service_scalings = Counter(
            "broker_service_scalings",
            "Autoscaler decisions that changed a service's desired replicas, by mode.",
            ["mode"],
            registry=self.registry,
        )

        self.service_replica_seconds = Counter(
            "broker_service_replica_seconds",
            "Replica-seconds of each service's ended replica runs (this process's count).",
            ["service"],
            registry=self.registry,
        )
        self.service_energy_kwh = Counter(
            "broker_service_energy_kwh",
            "Energy of each service's ended replica runs, kWh (this process's count).",
            ["service"],
            registry=self.registry,
        )
        self.service_gco2 = Counter(
            "broker_service_gco2",
            "Emissions of each service's ended replica runs, gCO2e (this process's count).",
            ["service"],
            registry=self.registry,
        )

    def service_run(self, run: RunFootprint) -> None:
        """Count a service replica's run that ended (the report has the durable figures)."""
        service = run.service_id or ""
        seconds = max(0.0, (run.ended_at - run.started_at).total_seconds())
        self.service_replica_seconds.labels(service=service).inc(seconds)
        self.service_energy_kwh.labels(service=service).inc(run.energy_kwh)
        if run.gco2 is not None:
            self.service_gco2.labels(service=service).inc(run.gco2)

    def set_burst(self, alive: dict[str, tuple[int, float]]) -> None:
        """Per provider site: instances alive and their USD per hour (sites gone drop to 0)."""
        for site in self._burst_sites - set(alive):
            self.burst_instances.labels(site=site).set(0)
            self.burst_usd_per_hour.labels(site=site).set(0)
        self._burst_sites |= set(alive)
        for site, (count, usd) in alive.items():
            self.burst_instances.labels(site=site).set(count)
            self.burst_usd_per_hour.labels(site=site).set(usd)

    def set_job_counts(self, counts: dict[JobState, int]) -> None:
        for state, n in counts.items():
            self.jobs.labels(state=state.value).set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
