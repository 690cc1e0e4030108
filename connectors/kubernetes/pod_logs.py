"""A job's output: the log of its pod's `main` container (`GET .../pods/{name}/log`).

The pod is found by the broker's job-id label (the Job's or the replica Deployment's pod),
preferring the placement's run (its annotation) and, among several (a gang, a retried
pod), the first by name: node 0 of a gang. A read without `follow` is one call on the
connector's SDK pool. A follow is a long-lived blocking read of the sync client, so, like
a watch (`watching`), it runs on a one-thread pool of its own (on the shared pool it would
pin a thread for as long as someone reads) and hands each chunk to the loop with
`call_soon_threadsafe`; closing the iterator shuts the socket down and ends the thread. At
most `MAX_FOLLOWS` follows run at once per site, each a thread: one more is refused as a
`TransientError`. Lines are split here, cut at `MAX_LINE` bytes, and pass through the
shared redactor, so a registered credential a pod prints never leaves the connector.
https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#read-log-of-the-specified-pod
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from broker.domain.jobs import Job, Placement
from connectors.errors import NotFound, TransientError
from connectors.kubernetes import labels as L
from connectors.kubernetes.client import KubeClient, LogHandle
from connectors.threads import Blocking
from redaction import redact

JsonDict = dict[str, Any]
CONTAINER = "main"  # the job's container in the pod template (`manifest.pod_template`)
MAX_FOLLOWS = 16
MAX_LINE = 16 * 1024
_END = object()


class PodLogs:
    """Reads and follows the output of the broker's pods in one namespace."""

    def __init__(self, *, client: KubeClient, owner_labels: dict[str, str]) -> None:
        self._client = client
        self._owner_labels = owner_labels
        self._follows = 0

    async def pod_of(self, *, job: Job, placement: Placement) -> str:
        """The name of the pod whose output is the job's; NotFound when none is left."""
        wanted = {**self._owner_labels, L.JOB_ID_LABEL: L.label_value(job.id)}
        pods = await self._client.list_namespaced_pods(label_selector=L.selector(wanted))
        pods = [p for p in pods if _annotation(p, L.JOB_ID_ANNOTATION) in (job.id, None)]
        of_run = [p for p in pods if _annotation(p, L.RUN_ANNOTATION) == placement.run]
        chosen = sorted(of_run or pods, key=lambda p: str(p["metadata"].get("name", "")))
        if not chosen:
            raise NotFound(
                f"job {job.id} has no pod left to read its output from", site=self._client.site
            )
        return str(chosen[0]["metadata"]["name"])

    async def lines(
        self, *, job: Job, placement: Placement, tail: int | None, follow: bool
    ) -> AsyncIterator[str]:
        pod = await self.pod_of(job=job, placement=placement)
        if not follow:
            text = await self._client.pod_log(pod, container=CONTAINER, tail_lines=tail)
            for line in text.splitlines():
                yield _shown(line.encode("utf-8"))
            return
        if self._follows >= MAX_FOLLOWS:
            raise TransientError(
                f"{MAX_FOLLOWS} log follows are open already; try again later",
                site=self._client.site,
            )
        self._follows += 1
        try:
            async for line in self._follow(pod, tail=tail):
                yield line
        finally:
            self._follows -= 1

    async def _follow(self, pod: str, *, tail: int | None) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | object] = asyncio.Queue()
        handle = LogHandle()

        def on_chunk(chunk: bytes) -> None:  # on the follow's thread
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                loop.call_soon_threadsafe(queue.put_nowait, chunk)

        pool = Blocking(1)
        reading = asyncio.ensure_future(
            pool.run(
                self._client.follow_pod_log,
                handle,
                name=pod,
                container=CONTAINER,
                tail_lines=tail,
                deliver=on_chunk,
            )
        )
        reading.add_done_callback(lambda _: queue.put_nowait(_END))
        pending = b""
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                assert isinstance(item, bytes)
                *complete, pending = (pending + item).split(b"\n")
                for raw in complete:
                    yield _shown(raw)
                if len(pending) > MAX_LINE:  # a line with no end in sight: show it cut
                    yield _shown(pending)
                    pending = b""
            if pending:
                yield _shown(pending)
            await reading  # raises the translated error, if the follow failed
        finally:
            handle.stop()
            with contextlib.suppress(Exception):  # its error, if any, was raised above
                await asyncio.shield(reading)
            pool.shutdown()


def _shown(raw: bytes) -> str:
    return redact(raw[:MAX_LINE].decode("utf-8", errors="replace").rstrip("\r"))


def _annotation(pod: JsonDict, key: str) -> str | None:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(key)
    return None if value is None else str(value)
