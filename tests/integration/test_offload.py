"""Integration: solver workers and the agent's offload client on a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import dimod
import pytest

from qxedge.connectors.embedded_broker import EmbeddedBroker
from qxedge.connectors.mqtt import BrokerConfig, MqttClient
from qxedge.hybrid import backends
from qxedge.hybrid.client import OffloadClient, OffloadConfig
from qxedge.hybrid.portfolio import SolversConfig
from qxedge.hybrid.qaoa import QaoaConfig
from qxedge.hybrid.service import DataCenterConfig, FairShareConfig, SolverService
from qxedge.hybrid.wire import Candidate, JobLimits
from qxedge.testing import Watcher, optimum, random_bqm, sample_energy, wait_until
from qxedge.testing.solver_doubles import patient

pytestmark = pytest.mark.integration


def datacenter(url: str, **changes: Any) -> DataCenterConfig:
    # tabu fills a job's budget (10 s here): the instant floor beside exact keeps these tests fast
    changes.setdefault("solvers", SolversConfig(workers=0, auto=["exact", "greedy"]))
    return DataCenterConfig(broker=BrokerConfig(url=url), **changes)


@contextlib.asynccontextmanager
async def workers(url: str, count: int, **changes: Any) -> AsyncIterator[list[SolverService]]:
    stop = asyncio.Event()
    services = [SolverService(datacenter(url, worker_id=f"w{i}", **changes)) for i in range(count)]
    async with asyncio.TaskGroup() as tasks:
        for s in services:
            tasks.create_task(s.run(stop))
        for s in services:
            await asyncio.wait_for(s.ready.wait(), 30)
        try:
            yield services
        finally:
            stop.set()


def envelope(site: str, bqm: dimod.BinaryQuadraticModel, job_id: str | None = None, **changes: Any) -> bytes:
    job_id = job_id or str(uuid.uuid4())
    doc = {
        "v": 1,
        "job_id": job_id,
        "site": site,
        "kind": "bqm",
        "problem": bqm.to_serializable(use_bytes=False),
        "deadline_ms": 10_000,
        "submitted_at": time.time(),
        "solver": "auto",
        "reply_to": f"qx/v1/{site}/results/{job_id}",
    }
    doc.update(changes)
    return json.dumps(doc).encode()


async def wait_for(watcher: Watcher, predicate: Callable[[list[Any]], bool]) -> bool:
    return await asyncio.to_thread(watcher.wait_for, predicate, 60)


async def test_three_workers_share_a_batch_and_none_is_solved_twice(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("qx/v1/gumi/results/+")
    bqms = [random_bqm(10, 0.5, seed=i) for i in range(24)]
    async with workers(broker.url, 3) as services:
        for i, bqm in enumerate(bqms):
            await asyncio.to_thread(watcher.publish, "qx/v1/gumi/jobs", envelope("gumi", bqm, f"job-{i}"))
        assert await wait_for(watcher, lambda ms: len(ms) >= len(bqms))
    # the workers have stopped: each answer they sent is in their stats, a second one included
    assert sum(s.stats().received for s in services) == len(bqms)
    assert sum(s.stats().duplicates for s in services) == 0
    results = {r["job_id"]: r for r in watcher.json_on("qx/v1/gumi/results/")}
    assert len(watcher.messages) == len(bqms) == len(results)
    for i, bqm in enumerate(bqms):
        r = results[f"job-{i}"]
        assert r["status"] == "ok" and r["energy"] == pytest.approx(optimum(bqm))
        assert r["energy"] == pytest.approx(sample_energy(bqm, r["sample"]))
    solved = [s.stats().results["ok"] for s in services]
    assert sum(solved) == len(bqms)
    assert sum(1 for n in solved if n > 0) >= 2, f"the shared subscription should spread jobs: {solved}"


async def test_duplicate_job_is_solved_once_and_answered_twice(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("qx/v1/gumi/results/+")
    payload = envelope("gumi", random_bqm(8, 0.5, seed=1), "dup-1")
    async with workers(broker.url, 1) as (service,):
        await asyncio.to_thread(watcher.publish, "qx/v1/gumi/jobs", payload)
        assert await wait_for(watcher, lambda ms: len(ms) == 1)
        await asyncio.to_thread(watcher.publish, "qx/v1/gumi/jobs", payload)
        assert await wait_for(watcher, lambda ms: len(ms) == 2)
    first, second = watcher.messages
    assert first.payload == second.payload
    assert service.stats().results["ok"] == 1 and service.stats().duplicates == 1


async def test_late_rejected_and_misaddressed_jobs_are_answered(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("qx/v1/gumi/results/+", "qx/v1/osan/results/+")
    bqm = random_bqm(6, 0.5, seed=2)
    async with workers(broker.url, 1) as (service,):
        jobs = [
            (
                "qx/v1/gumi/jobs",
                envelope("gumi", bqm, "old", submitted_at=time.time() - 60, deadline_ms=1000),
            ),
            ("qx/v1/gumi/jobs", envelope("gumi", bqm, "v9", v=9)),
            ("qx/v1/gumi/jobs", b"\x00garbage"),
            ("qx/v1/gumi/jobs", envelope("osan", bqm, "spoof")),  # another site's job on gumi's topic
        ]
        for topic, payload in jobs:
            await asyncio.to_thread(watcher.publish, topic, payload)
        assert await wait_for(watcher, lambda ms: len(ms) == len(jobs))
    by_topic = {m.topic: json.loads(m.payload) for m in watcher.messages}
    assert by_topic["qx/v1/gumi/results/old"]["status"] == "late"
    assert "unknown schema version 9" in by_topic["qx/v1/gumi/results/v9"]["reason"]
    assert by_topic["qx/v1/gumi/results/invalid"]["status"] == "rejected"
    assert "does not match the topic's site" in by_topic["qx/v1/gumi/results/spoof"]["reason"]
    assert not any(t.startswith("qx/v1/osan/") for t in by_topic), "nothing is published to another site"
    assert service.stats().results["ok"] == 0


async def test_agent_falls_back_within_its_deadline_when_the_data_center_stops(
    broker: EmbeddedBroker,
) -> None:
    bqm = random_bqm(14, 0.5, seed=7)
    config = OffloadConfig(deadline_ms=1500, fallback_ms=300)
    async with (
        MqttClient(BrokerConfig(url=broker.url), role="agent") as mqtt,
        OffloadClient(mqtt, "gumi", config) as offload,
    ):
        async with workers(broker.url, 1):
            remote = await offload.solve(bqm)
        assert remote.source == "datacenter" and remote.solver == "exact"
        assert remote.energy == pytest.approx(optimum(bqm))
        started = time.monotonic()
        local = await offload.solve(bqm)  # the data center is gone
        elapsed = time.monotonic() - started
    assert local.source == "fallback" and local.solver == "tabu"
    assert "no result from the data center" in (local.reason or "")
    assert local.energy == pytest.approx(bqm.energy(local.sample))
    assert elapsed <= 1.5 + 0.5, f"fallback decision took {elapsed:.2f} s for a 1.5 s deadline"
    assert offload.stats["jobs"] == 2 and offload.stats["results"] == 1 and offload.stats["fallbacks"] == 1


async def test_a_solver_that_fills_its_budget_answers_before_the_agent_falls_back(
    broker: EmbeddedBroker,
) -> None:
    """SA uses the whole budget the job gives it: the job's deadline_ms is when the agent stops waiting
    (its deadline less fallback_ms), so the answer comes in time (it fell back every time before)."""
    config = OffloadConfig(deadline_ms=1500, fallback_ms=500)
    async with (
        MqttClient(BrokerConfig(url=broker.url), role="agent") as mqtt,
        OffloadClient(mqtt, "gumi", config) as offload,
        workers(broker.url, 1, solvers=SolversConfig(workers=0, auto=["sa"])),
    ):
        decision = await offload.solve(random_bqm(40, 0.3, seed=5))
    assert decision.source == "datacenter" and decision.solver == "sa", decision.reason
    assert decision.result is not None
    assert decision.result.timings["solve_ms"] > 700  # it filled a budget of ~1 s


async def test_a_win_the_polish_found_is_counted_as_qaoa_polish_on_both_ends(broker: EmbeddedBroker) -> None:
    # p = 1, 4 angle evaluations, 2 shots on qxedge.cpu, deterministic: on the 12-variable model raw best
    # -246, polished to the optimum -884; on the 3-variable one the raw best is the optimum already
    weak = QaoaConfig(device="qxedge.cpu", layers=1, maxiter=4, shots=2)
    polished, tiny = random_bqm(12, 0.5, seed=0), random_bqm(3, 1.0, seed=0)
    async with (
        MqttClient(BrokerConfig(url=broker.url), role="agent") as mqtt,
        OffloadClient(mqtt, "gumi", OffloadConfig(deadline_ms=30_000)) as offload,
        workers(broker.url, 1, solvers=SolversConfig(workers=0, qaoa=weak)) as (service,),
    ):
        decision = await offload.solve(polished, solver="qaoa")
        exact = await offload.solve(tiny, solver="qaoa")
    assert decision.source == "datacenter" and decision.solver == "qaoa+polish"
    assert decision.energy == pytest.approx(optimum(polished))
    assert decision.result is not None and decision.result.raw_energy == pytest.approx(-246.0)
    assert exact.solver == "qaoa" and exact.energy == pytest.approx(optimum(tiny))
    assert service.stats().wins == offload.wins == {"qaoa+polish": 1, "qaoa": 1}


async def test_forged_results_are_ignored(broker: EmbeddedBroker, watch: Callable[..., Watcher]) -> None:
    forger = watch()
    bqm = random_bqm(6, 0.5, seed=3)
    async with (
        MqttClient(BrokerConfig(url=broker.url), role="agent") as mqtt,
        OffloadClient(mqtt, "gumi", OffloadConfig(deadline_ms=800, fallback_ms=200)) as offload,
    ):
        forged = {
            "v": 1,
            "job_id": "not-ours",
            "status": "ok",
            "sample": {},
            "energy": -1e9,
            "solver": "exact",
        }
        await asyncio.to_thread(forger.publish, "qx/v1/gumi/results/not-ours", json.dumps(forged))
        await asyncio.to_thread(forger.publish, "qx/v1/gumi/results/x", b"{broken")
        decision = await offload.solve(bqm)
    assert decision.source == "fallback"
    assert offload.stats["unknown_results"] == 1 and offload.stats["invalid_results"] == 1


async def test_a_forged_answer_does_not_end_the_wait_for_the_real_one(broker: EmbeddedBroker) -> None:
    """Forged and invalid results on the job's own topic come first: each is refused with its reason
    and ignored, the real answer that follows is the decision; a second copy of it is a duplicate."""
    bqm = random_bqm(8, 0.5, seed=4)
    refused: list[tuple[str | None, str]] = []
    config = OffloadConfig(deadline_ms=20_000, fallback_ms=200)
    async with (
        MqttClient(BrokerConfig(url=broker.url), role="agent") as mqtt,
        MqttClient(BrokerConfig(url=broker.url), role="datacenter") as datacenter,
        OffloadClient(mqtt, "gumi", config, lambda _t, job, why, _d: refused.append((job, why))) as offload,
    ):
        jobs = await datacenter.subscribe("qx/v1/gumi/jobs", qos=1)

        async def answer() -> str:
            ((_, payload),) = await asyncio.wait_for(jobs.next_batch(), 20)
            job = json.loads(payload)
            best = dimod.ExactSolver().sample(bqm).first
            sample = {str(v): int(x) for v, x in best.sample.items()}
            real = {"v": 1, "job_id": job["job_id"], "status": "ok", "sample": sample, "solver": "exact"}
            flipped = {**sample, str(bqm.variables[0]): 1 - sample[str(bqm.variables[0])]}
            for forged in (
                b"{not json",
                json.dumps({**real, "energy": best.energy - 100}).encode(),  # a better energy it lacks
                json.dumps({**real, "sample": flipped, "energy": best.energy}).encode(),
                json.dumps({"v": 1, "job_id": job["job_id"], "status": "error", "reason": "forged"}).encode(),
                json.dumps({**real, "energy": best.energy}).encode(),  # the real one, last
            ):
                datacenter.publish(job["reply_to"], forged, qos=1)
            return str(job["reply_to"])

        reply_to, decision = await asyncio.gather(answer(), offload.solve(bqm))
        assert decision.source == "datacenter", decision.reason
        assert decision.energy == pytest.approx(optimum(bqm))
        assert decision.result is not None
        datacenter.publish(reply_to, decision.result.model_dump_json(), qos=1)
        assert await wait_until(lambda: offload.stats["duplicate_results"] == 1)
    assert offload.stats["invalid_results"] == 3 and offload.stats["result_error"] == 1
    reasons = " | ".join(why for _, why in refused)
    for expected in ("malformed result", "does not match its sample", "data center answered error: forged"):
        assert expected in reasons, reasons
    assert "the job was answered already" in refused[-1][1]


async def test_a_result_after_the_wait_says_so(broker: EmbeddedBroker, watch: Callable[..., Watcher]) -> None:
    bqm = random_bqm(6, 0.5, seed=5)
    refused: list[str] = []
    forger = watch()
    async with (
        MqttClient(BrokerConfig(url=broker.url), role="agent") as mqtt,
        OffloadClient(
            mqtt, "gumi", OffloadConfig(deadline_ms=300, fallback_ms=100), lambda *a: refused.append(a[2])
        ) as offload,
    ):
        decision = await offload.solve(bqm)  # no data center: the fallback decides
        assert decision.source == "fallback"
        late = {"v": 1, "job_id": decision.job_id, "status": "error", "reason": "slow"}
        await asyncio.to_thread(forger.publish, f"qx/v1/gumi/results/{decision.job_id}", json.dumps(late))
        assert await wait_until(lambda: offload.stats["late"] == 1)
    assert "arrived after the wait for it ended" in refused[-1]


async def test_one_site_flooding_does_not_starve_another(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("qx/v1/flood/results/+", "qx/v1/quiet/results/+")
    flood = [envelope("flood", random_bqm(18, 0.5, seed=i), f"f{i}") for i in range(12)]
    quiet = [envelope("quiet", random_bqm(18, 0.5, seed=100 + i), f"q{i}") for i in range(2)]
    async with workers(broker.url, 1, limits=JobLimits(max_jobs_in_flight_per_site=50)):
        for payload in flood:
            watcher.client.publish("qx/v1/flood/jobs", payload, qos=1)
        for payload in quiet:
            watcher.client.publish("qx/v1/quiet/jobs", payload, qos=1)
        assert await wait_for(watcher, lambda ms: len(ms) >= len(flood) + len(quiet))
    order = [json.loads(m.payload)["job_id"] for m in watcher.messages]
    # first come, first served would answer the quiet site last (positions 12 and 13)
    assert max(order.index("q0"), order.index("q1")) <= 5, order


async def test_a_long_job_of_one_site_is_cut_so_another_sites_jobs_are_in_time(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    """Fair share by solving time (issue 21): site A's job may run 60 s and uses all of it; site B's
    short jobs arriving behind it in the one solving slot cut it at its slice, and are answered in time."""
    backends.register("patient", patient)
    watcher = watch("qx/v1/a/results/+", "qx/v1/b/results/+")
    try:
        async with workers(
            broker.url, 1, fair_share=FairShareConfig(slice_ms=200), solvers=SolversConfig(workers=0)
        ) as (service,):
            long = envelope("a", random_bqm(30, 0.2, seed=1), "long", solver="patient", deadline_ms=60_000)
            watcher.client.publish("qx/v1/a/jobs", long, qos=1)
            await wait_until(lambda: service.queue_depth == 1)
            short = [envelope("b", random_bqm(10, 0.5, seed=i), f"b{i}", deadline_ms=2000) for i in range(4)]
            for payload in short:
                watcher.client.publish("qx/v1/b/jobs", payload, qos=1)
            assert await wait_for(watcher, lambda ms: len(ms) >= 5)
            to_epoch = time.time() - time.monotonic()  # paho stamps a message with time.monotonic()
            answered_at = {json.loads(m.payload)["job_id"]: m.timestamp + to_epoch for m in watcher.messages}
            assert service.stats().cut == 1
            assert service.stats().solver_seconds["a"] > 0
    finally:
        backends.unregister("patient")
    results = {r["job_id"]: r for r in (json.loads(m.payload) for m in watcher.messages)}
    assert results["long"]["status"] == "ok" and "cut to site 'a''s fair share" in results["long"]["reason"]
    for i, payload in enumerate(short):
        job = json.loads(payload)
        assert results[f"b{i}"]["status"] == "ok", results[f"b{i}"]
        assert answered_at[f"b{i}"] <= job["submitted_at"] + job["deadline_ms"] / 1000


async def test_jobs_in_flight_per_site_are_limited(
    broker: EmbeddedBroker, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("qx/v1/flood/results/+")
    async with workers(broker.url, 1, limits=JobLimits(max_jobs_in_flight_per_site=3)):
        for i in range(10):
            watcher.client.publish(
                "qx/v1/flood/jobs", envelope("flood", random_bqm(18, 0.5, seed=i), f"f{i}"), qos=1
            )
        assert await wait_for(watcher, lambda ms: len(ms) >= 10)
    results = [json.loads(m.payload) for m in watcher.messages]
    rejected = [r for r in results if r["status"] == "rejected"]
    assert rejected and all("jobs in flight (the limit)" in r["reason"] for r in rejected)
    assert sum(r["status"] == "ok" for r in results) >= 3


async def test_a_result_too_large_for_the_broker_is_answered_once_as_an_error() -> None:
    """Tuple labels come back as longer string keys ("(0, 0, 7)"): a job under the broker's packet limit
    can give a result over it, which got the worker dropped and re-sent at every reconnect (issue 21).
    Over ``max_result_bytes`` it is answered with a small error instead, once; the worker carries on."""
    wide = dimod.BinaryQuadraticModel({(0, 0, 0, 0, 0, 0, i): 1.0 for i in range(150)}, {}, 0.0, "BINARY")
    big = json.dumps(json.loads(envelope("gumi", wide, "big")), separators=(",", ":")).encode()
    sample = json.dumps({str(v): 1 for v in wide.variables}).encode()
    assert len(big) < 4096 < len(sample)  # the job passes the broker below, its result would not
    with EmbeddedBroker(extra_config="max_packet_size 4096\n", prefer="mosquitto") as broker:
        watcher = Watcher(broker.url, "qx/v1/gumi/results/+")
        try:
            async with workers(broker.url, 1, limits=JobLimits(max_result_bytes=3500)) as (service,):
                await asyncio.to_thread(watcher.publish, "qx/v1/gumi/jobs", big)
                small = envelope("gumi", random_bqm(6, 0.5, seed=5), "small")
                await asyncio.to_thread(watcher.publish, "qx/v1/gumi/jobs", small)
                assert await wait_for(watcher, lambda ms: len(ms) >= 2)
                assert service.stats().broker_connected
        finally:
            watcher.close()
    results = [json.loads(m.payload) for m in watcher.messages]
    assert [r["job_id"] for r in results] == ["big", "small"]
    assert results[0]["status"] == "error" and "sample" not in results[0]
    assert re.fullmatch(r"result too large \(\d+ bytes > max_result_bytes 3500\)", results[0]["reason"])
    assert results[1]["status"] == "ok"
    assert service.stats().results == {"ok": 1, "late": 0, "rejected": 0, "error": 1}
    assert sum(service.stats().wins.values()) == 1  # the result that could not be sent won nothing


async def test_many_fallbacks_at_once_still_decide_in_time(broker: EmbeddedBroker) -> None:
    """No data center and a burst of jobs: one search at a time, instant greedy answers for the rest."""
    config = OffloadConfig(deadline_ms=600, fallback_ms=200)
    async with (
        MqttClient(BrokerConfig(url=broker.url), role="agent") as mqtt,
        OffloadClient(mqtt, "gumi", config) as offload,
    ):
        started = time.monotonic()
        decisions = await asyncio.gather(*(offload.solve(random_bqm(40, 0.2, seed=i)) for i in range(12)))
        elapsed = time.monotonic() - started
    assert all(d.source == "fallback" for d in decisions)
    assert offload.stats["greedy_fallbacks"] >= 1
    assert elapsed <= 0.6 + 0.5, f"12 fallbacks took {elapsed:.2f} s for a 0.6 s deadline"


async def test_the_fallback_runs_the_backend_the_registry_holds(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local fallback builds its solver from the registry (qxedge.hybrid.backends), as the data
    center does, with its own SA budget (50 reads)."""
    backends.backend_names()  # the built-in backends are registered: "sa" can be swapped
    registered = backends._registry["sa"]
    ran: list[int] = []

    def recording(config: SolversConfig) -> backends.Solver:
        solver = registered(config)

        def solve(bqm: dimod.BinaryQuadraticModel, deadline: backends.Deadline) -> Candidate:
            ran.append(config.sa.max_reads)
            return solver.solve(bqm, deadline)

        return backends.Backend("sa", solve)

    monkeypatch.setitem(backends._registry, "sa", recording)
    config = OffloadConfig(deadline_ms=600, fallback_ms=200, fallback="sa")
    async with (
        MqttClient(BrokerConfig(url=broker.url), role="agent") as mqtt,
        OffloadClient(mqtt, "gumi", config) as offload,
    ):
        decision = await offload.solve(random_bqm(6, 0.5, seed=1))  # no data center: the fallback decides
    assert decision.source == "fallback" and decision.solver == "sa"
    assert ran == [50]
