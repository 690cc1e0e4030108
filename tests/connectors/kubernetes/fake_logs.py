"""Pod logs in the fake API server: `GET /api/v1/namespaces/{ns}/pods/{name}/log`.

As the real server: `text/plain`, `container` names one of the pod's containers (optional
when it has one; 400 when it is not the pod's), `tailLines` keeps the last lines, and
`follow=true` keeps the response open (chunked) and streams each line as the test writes
it, until the test ends the container's output (`end_log`) or the client goes away. A
missing pod is a 404 `Status`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.connectors.kubernetes import objects as o

JsonDict = dict[str, Any]
Key = tuple[str, str]  # namespace, pod name


@dataclass(slots=True)
class _Output:
    lines: list[str] = field(default_factory=list)
    ended: bool = False
    followers: set[asyncio.Queue[str | None]] = field(default_factory=set)


class PodLogs:
    """What each pod's container wrote, and the follows reading it."""

    def __init__(self) -> None:
        self._outputs: dict[Key, _Output] = {}

    def write(self, pod: str, *lines: str, namespace: str = "gpu-broker") -> None:
        out = self._outputs.setdefault((namespace, pod), _Output())
        for line in lines:
            out.lines.append(line)
            for queue in out.followers:
                queue.put_nowait(line)

    def end(self, pod: str, namespace: str = "gpu-broker") -> None:
        out = self._outputs.setdefault((namespace, pod), _Output())
        out.ended = True
        for queue in out.followers:
            queue.put_nowait(None)

    def following(self, pod: str, namespace: str = "gpu-broker") -> int:
        out = self._outputs.get((namespace, pod))
        return 0 if out is None else len(out.followers)

    async def serve(self, request: web.Request, pods: dict[Key, JsonDict]) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = pods.get((ns, name))
        if pod is None:
            return _status(o.status(404, "NotFound", f'pods "{name}" not found', kind="pods"))
        containers = [c["name"] for c in pod["spec"].get("containers") or []]
        container = request.query.get("container")
        if container is None and len(containers) > 1:
            return _status(
                o.status(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(containers)}]",
                )
            )
        if container is not None and container not in containers:
            return _status(
                o.status(400, "BadRequest", f"container {container} is not valid for pod {name}")
            )
        out = self._outputs.setdefault((ns, name), _Output())
        lines = list(out.lines)
        if "tailLines" in request.query:
            tail = int(request.query["tailLines"])
            lines = lines[len(lines) - tail :] if tail > 0 else []
        text = "".join(f"{line}\n" for line in lines)
        if request.query.get("follow") not in ("1", "t", "T", "TRUE", "true", "True"):
            return web.Response(text=text, content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        out.followers.add(queue)  # no await since the copy above: no line falls in a gap
        try:
            if text:
                await resp.write(text.encode())
            while not out.ended:
                line = await queue.get()
                if line is None:
                    break
                await resp.write(f"{line}\n".encode())
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        finally:
            out.followers.discard(queue)
        return resp


def _status(body: JsonDict) -> web.Response:
    return web.json_response(body, status=body["code"])
