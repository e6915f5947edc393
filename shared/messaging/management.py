"""The few RabbitMQ management-API calls vidq makes (idempotent PUTs), and AMQP URL parts.

The bootstrap uses them with an administrator's credentials (vhost, users, permissions,
policies); a service uses them with its own broker user to set its queues' policies when that
user may (``shared/messaging/prepare.py``).
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlparse

import httpx

from shared.messaging.topology import Topology


def split_amqp(url: str) -> tuple[str, str, str]:
    """``(vhost, user, password)`` of an AMQP URL, with RabbitMQ's defaults (``/``, guest)."""
    parsed = urlparse(url)
    vhost = unquote(parsed.path[1:]) if parsed.path not in ("", "/") else "/"
    return vhost, unquote(parsed.username or "guest"), unquote(parsed.password or "guest")


class ManagementRefused(RuntimeError):
    """The management API refused the credentials (401) or the operation (403)."""


class Management:
    """The few management-API calls the bootstrap and the tests need (idempotent PUTs)."""

    def __init__(self, admin_url: str, *, timeout: float = 30.0) -> None:
        parsed = urlparse(admin_url)
        base = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 15672}"
        auth = (unquote(parsed.username or "guest"), unquote(parsed.password or "guest"))
        self.admin_user = auth[0]
        self.client = httpx.AsyncClient(base_url=base, auth=auth, timeout=timeout)

    async def __aenter__(self) -> Management:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.aclose()

    async def _put(self, path: str, body: dict[str, object]) -> None:
        response = await self.client.put(path, json=body)
        if response.status_code in (401, 403):
            raise ManagementRefused(f"PUT {path}: {response.status_code} {response.text}")
        if response.status_code >= 400:  # noqa: PLR2004
            raise RuntimeError(f"PUT {path} failed: {response.status_code} {response.text}")

    async def ensure_vhost(self, vhost: str) -> None:
        await self._put(f"/api/vhosts/{quote(vhost, safe='')}", {"description": "vidq", "tags": "vidq"})

    async def delete_vhost(self, vhost: str) -> None:
        await self.client.delete(f"/api/vhosts/{quote(vhost, safe='')}")

    async def delete_user(self, user: str) -> None:
        await self.client.delete(f"/api/users/{quote(user, safe='')}")

    async def ensure_user(self, user: str, password: str, tags: str = "") -> None:
        await self._put(f"/api/users/{quote(user, safe='')}", {"password": password, "tags": tags})

    async def grant(
        self, vhost: str, user: str, configure: str = ".*", write: str = ".*", read: str = ".*"
    ) -> None:
        await self._put(
            f"/api/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}",
            {"configure": configure, "write": write, "read": read},
        )

    async def apply_policies(self, vhost: str, topology: Topology) -> int:
        """Set the topology's policies that are missing or differ; returns how many were set.

        One read of the vhost's policies first: every policy written makes the broker re-apply
        policies to the vhost's queues, and services set them at each start.
        """
        response = await self.client.get(f"/api/policies/{quote(vhost, safe='')}")
        if response.status_code in (401, 403):
            raise ManagementRefused(f"GET policies of {vhost}: {response.status_code} {response.text}")
        response.raise_for_status()
        present = {p["name"]: _policy_body(p) for p in response.json()}
        changed = 0
        for policy in topology.policies():
            body: dict[str, object] = {
                "pattern": policy.pattern,
                "definition": dict(policy.definition),
                "priority": policy.priority,
                "apply-to": policy.apply_to,
            }
            if present.get(policy.name) == body:
                continue
            await self._put(f"/api/policies/{quote(vhost, safe='')}/{quote(policy.name, safe='')}", body)
            changed += 1
        return changed

    async def queue(self, vhost: str, name: str) -> dict[str, object]:
        response = await self.client.get(f"/api/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")
        response.raise_for_status()
        data: dict[str, object] = response.json()
        return data


def _policy_body(listed: dict[str, object]) -> dict[str, object]:
    """The fields of a listed policy that a PUT sets."""
    return {key: listed.get(key) for key in ("pattern", "definition", "priority", "apply-to")}
