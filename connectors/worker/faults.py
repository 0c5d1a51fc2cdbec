"""Fault injection for the local worker: which request fails how, decided by a schedule or at random.

A fault document (CLI `--faults JSON`, `PUT /admin/faults`), every key optional:

    {
      "schedule": {"post": ["429", "ok", "drop", "reject"], "get": ["503"]},
      "rates":    {"post": {"429": 0.2, "503": 0.05, "500": 0.0, "drop": 0.1, "reject": 0.1},
                   "get":  {"429": 0.1}, "delete": {"500": 0.5}},
      "latency":  {"post": {"dist": "uniform", "min": 0.0, "max": 0.3}, "get": {"dist": "fixed", "value": 0.1}},
      "job_duration": {"dist": "exponential", "mean": 1.0},
      "webhook_delay": {"dist": "fixed", "value": 2.0},
      "seed": 7
    }

Route classes: `post` = POST /v2/jobs, `get` = any GET under /v2, `delete` = DELETE /v2/jobs/{id}.
Outcomes: an HTTP status (`"429"`, `"500"`, `"503"`, ...) answered instead of the real response;
`"drop"` (POST only) = the job is created and runs, then the connection is closed without a response,
the ambiguous failure; `"reject"` (POST only) = the job is accepted and later ends `rejected`;
`"ok"` = no fault. A route's schedule is consumed first, one entry per request; then its rates apply
(the first outcome whose cumulative probability covers a uniform draw).
Distributions: `fixed` (value), `uniform` (min, max), `exponential` (mean, optional max). `latency` is
added before answering; `job_duration` keeps a job's engines busy for that long (so capacity tests can
fill the worker); `webhook_delay` delays every delivery attempt (slow webhooks).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

ROUTE_CLASSES = ("post", "get", "delete")
OK, DROP, REJECT = "ok", "drop", "reject"
POST_ONLY = frozenset({DROP, REJECT})


class FaultConfigError(ValueError):
    """A fault document that cannot be applied; the message says which key is wrong."""


@dataclass(frozen=True, slots=True)
class Distribution:
    """A non-negative random duration in seconds."""

    dist: str = "fixed"
    value: float = 0.0
    low: float = 0.0
    high: float = 0.0
    mean: float = 0.0
    cap: float | None = None

    @classmethod
    def parse(cls, spec: Any, where: str) -> Distribution:
        if isinstance(spec, (int, float)):
            return cls("fixed", value=float(spec))
        if not isinstance(spec, dict):
            raise FaultConfigError(f"{where}: expected a number or {{'dist': ...}}, got {spec!r}")
        kind = spec.get("dist", "fixed")
        try:
            if kind == "fixed":
                out = cls("fixed", value=float(spec.get("value", 0.0)))
            elif kind == "uniform":
                out = cls("uniform", low=float(spec.get("min", 0.0)), high=float(spec["max"]))
            elif kind == "exponential":
                cap = spec.get("max")
                out = cls("exponential", mean=float(spec["mean"]), cap=None if cap is None else float(cap))
            else:
                raise FaultConfigError(f"{where}: unknown dist {kind!r} (fixed, uniform, exponential)")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, FaultConfigError):
                raise
            raise FaultConfigError(f"{where}: bad {kind} distribution {spec!r}") from exc
        if min(out.value, out.low, out.high, out.mean) < 0 or out.high < out.low:
            raise FaultConfigError(f"{where}: durations must be non-negative with min <= max")
        return out

    def sample(self, rng: random.Random) -> float:
        if self.dist == "uniform":
            return rng.uniform(self.low, self.high)
        if self.dist == "exponential":
            drawn = rng.expovariate(1.0 / self.mean) if self.mean > 0 else 0.0
            return drawn if self.cap is None else min(drawn, self.cap)
        return self.value


def _parse_outcome(value: Any, route: str, where: str) -> str:
    text = str(value).strip().lower()
    if text == OK or (text.isdigit() and 400 <= int(text) <= 599):
        return text
    if text in POST_ONLY:
        if route != "post":
            raise FaultConfigError(f"{where}: {text!r} applies to 'post' only")
        return text
    raise FaultConfigError(f"{where}: outcome must be an HTTP status 400-599, 'ok', 'drop' or 'reject', got {value!r}")


@dataclass
class FaultPlan:
    """A parsed fault document plus its random source and the unconsumed schedule entries."""

    schedule: dict[str, deque[str]] = field(default_factory=dict)
    rates: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    latency: dict[str, Distribution] = field(default_factory=dict)
    job_duration: Distribution | None = None
    webhook_delay: Distribution | None = None
    rng: random.Random = field(default_factory=random.Random)
    document: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, doc: dict[str, Any] | None) -> FaultPlan:
        doc = dict(doc or {})
        unknown = set(doc) - {"schedule", "rates", "latency", "job_duration", "webhook_delay", "seed"}
        if unknown:
            raise FaultConfigError(f"unknown fault keys {sorted(unknown)}")
        plan = cls(rng=random.Random(doc.get("seed")), document=doc)
        for route, entries in _route_map(doc.get("schedule"), "schedule").items():
            if not isinstance(entries, list):
                raise FaultConfigError(f"schedule.{route}: expected a list")
            plan.schedule[route] = deque(_parse_outcome(e, route, f"schedule.{route}") for e in entries)
        for route, table in _route_map(doc.get("rates"), "rates").items():
            if not isinstance(table, dict):
                raise FaultConfigError(f"rates.{route}: expected {{outcome: probability}}")
            pairs = []
            for outcome, p in table.items():
                try:
                    prob = float(p)
                except (TypeError, ValueError) as exc:
                    raise FaultConfigError(f"rates.{route}.{outcome}: not a number: {p!r}") from exc
                if not 0.0 <= prob <= 1.0:
                    raise FaultConfigError(f"rates.{route}.{outcome}: probability must be in [0, 1], got {p}")
                pairs.append((_parse_outcome(outcome, route, f"rates.{route}"), prob))
            if sum(p for _, p in pairs) > 1.0 + 1e-9:
                raise FaultConfigError(f"rates.{route}: probabilities add up to more than 1")
            plan.rates[route] = pairs
        for route, spec in _route_map(doc.get("latency"), "latency").items():
            plan.latency[route] = Distribution.parse(spec, f"latency.{route}")
        if doc.get("job_duration") is not None:
            plan.job_duration = Distribution.parse(doc["job_duration"], "job_duration")
        if doc.get("webhook_delay") is not None:
            plan.webhook_delay = Distribution.parse(doc["webhook_delay"], "webhook_delay")
        return plan

    def outcome(self, route: str) -> str:
        """What happens to the next request of a route class: the schedule first, then the rates."""
        queue = self.schedule.get(route)
        if queue:
            return queue.popleft()
        draw = self.rng.random()
        total = 0.0
        for outcome, prob in self.rates.get(route, ()):
            total += prob
            if draw < total:
                return outcome
        return OK

    def latency_for(self, route: str) -> float:
        dist = self.latency.get(route)
        return dist.sample(self.rng) if dist else 0.0

    def job_seconds(self) -> float:
        return self.job_duration.sample(self.rng) if self.job_duration else 0.0

    def webhook_seconds(self) -> float:
        return self.webhook_delay.sample(self.rng) if self.webhook_delay else 0.0

    def describe(self) -> dict[str, Any]:
        """The document in force plus the schedule entries not yet consumed."""
        return {**self.document, "pending_schedule": {r: list(q) for r, q in self.schedule.items()}}


def _route_map(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FaultConfigError(f"{where}: expected an object keyed by route class {list(ROUTE_CLASSES)}")
    bad = set(value) - set(ROUTE_CLASSES)
    if bad:
        raise FaultConfigError(f"{where}: unknown route classes {sorted(bad)} (use {list(ROUTE_CLASSES)})")
    return value
