"""Leader election on a coordination.k8s.io Lease: one active operator, standbys wait.

The classic pattern (controller-runtime's): a replica blocks in start-up until it
holds the Lease, so a standby runs no watches and fires nothing; the leader
renews every ``renew`` seconds and exits if it cannot renew within the lease
duration (the pod restarts and becomes a standby). A leader that stops cleanly
releases the Lease, so failover then takes one retry period instead of a whole
lease duration. Slot claims in each Schedule's status remain the second line of
defence: a new leader never fires a slot that another holder claimed and whose
claim has not expired.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("schedulezero.leader")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _fmt(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, api: client.ApiClient | None, namespace: str, name: str, identity: str,
                 duration: float = 10.0, renew: float = 2.0, retry: float = 1.0, *,
                 coord: Any = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.coord = coord if coord is not None else client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration, self.renew, self.retry = duration, renew, retry
        self._monotonic = monotonic
        # Leading until this monotonic instant: renewal sent + duration - margin. The
        # margin covers clock-rate differences and the successor's own retry period.
        self._valid_until = float("-inf")
        self._margin = min(self.renew, self.duration / 4)
        self._renewer: asyncio.Task[None] | None = None

    def leading(self) -> bool:
        """Still the leader by our own monotonic clock (no API call: safe to ask often)."""
        return self._monotonic() < self._valid_until

    async def _try(self) -> bool:
        sent = self._monotonic()
        if await self._try_at(sent):
            self._valid_until = sent + self.duration - self._margin
            return True
        self._valid_until = float("-inf")
        return False

    async def _try_at(self, sent: float) -> bool:
        now = _now()
        spec: dict[str, Any] = {"holderIdentity": self.identity,
                                "leaseDurationSeconds": int(self.duration),
                                "renewTime": _fmt(now)}
        try:
            lease = await asyncio.to_thread(self.coord.read_namespaced_lease, self.name,
                                            self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            body = {"metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {**spec, "acquireTime": _fmt(now), "leaseTransitions": 0}}
            try:
                await asyncio.to_thread(self.coord.create_namespaced_lease, self.namespace,
                                        body)
                return True
            except ApiException as e2:
                if e2.status == 409:
                    return False
                raise
        holder = lease.spec.holder_identity
        renewed = lease.spec.renew_time
        expired = (not holder or renewed is None or
                   renewed + dt.timedelta(seconds=lease.spec.lease_duration_seconds or 0) < now)
        if holder != self.identity and not expired:
            return False
        if holder != self.identity:
            spec["acquireTime"] = _fmt(now)
            spec["leaseTransitions"] = (lease.spec.lease_transitions or 0) + 1
        body = {"metadata": {"resourceVersion": lease.metadata.resource_version},
                "spec": spec}
        try:
            await asyncio.to_thread(self.coord.patch_namespaced_lease, self.name,
                                    self.namespace, body)
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    async def acquire(self) -> None:
        log.info("waiting for leadership (Lease %s/%s) as %s", self.namespace, self.name,
                 self.identity)
        while True:
            try:
                if await self._try():
                    break
            except ApiException as e:
                log.warning("leader election: %s", e.reason)
            await asyncio.sleep(self.retry)
        log.info("leading as %s", self.identity)
        self._renewer = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        last_ok = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.renew)
            try:
                if await self._try():
                    last_ok = asyncio.get_running_loop().time()
                    continue
                log.error("leadership taken over by another replica; stopping")
            except Exception as e:  # noqa: BLE001 - retried until the lease would expire
                log.warning("lease renewal failed: %s", e)
                if asyncio.get_running_loop().time() - last_ok < self.duration - self.renew:
                    continue
                log.error("could not renew the lease in time; stopping")
            os.kill(os.getpid(), signal.SIGTERM)
            return

    async def release(self) -> None:
        """Give the Lease up at once — only if we still hold it (never a successor's)."""
        if self._renewer is not None:
            self._renewer.cancel()
        self._valid_until = float("-inf")
        try:
            lease = await asyncio.to_thread(self.coord.read_namespaced_lease, self.name,
                                            self.namespace)
            if lease.spec.holder_identity != self.identity:
                log.info("not releasing Lease %s/%s: held by %s now", self.namespace,
                         self.name, lease.spec.holder_identity)
                return
            await asyncio.to_thread(
                self.coord.patch_namespaced_lease, self.name, self.namespace,
                {"metadata": {"resourceVersion": lease.metadata.resource_version},
                 "spec": {"holderIdentity": None,
                          "renewTime": _fmt(_now() - dt.timedelta(seconds=self.duration * 2))}})
        except Exception as e:  # noqa: BLE001 - the lease then expires by itself
            log.warning("could not release the lease: %s", e)
