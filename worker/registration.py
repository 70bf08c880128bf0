"""Worker heartbeats: a live worker keeps its model card in the job store, so the gateway lists and
validates against exactly the models someone is serving."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from jobs.sla import recent_arrival_rate

log = logging.getLogger("hsa.worker")


class Heartbeat:
    """``card`` is a ModelCard or a callable returning the current one (its timing model evolves)."""

    def __init__(self, store, card, interval_seconds: float):
        self.store, self.card, self.interval = store, card, interval_seconds
        self.worker_id = uuid.uuid4().hex[:12]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hsa-heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self.beat()
        self._thread.start()
        return self

    def beat(self) -> None:
        # three missed beats and the card expires: a dead worker disappears from /v1/models
        card = self.card() if callable(self.card) else self.card
        if card.timed:  # an SLA-planned model: the gateway caps budgets by the load
            card = card.model_copy(update={"arrival_rate": recent_arrival_rate(self.store, card.id, time.time())})
        self.store.register_model(card, self.worker_id, ttl_seconds=3 * self.interval)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as error:  # the store may be briefly unreachable; keep beating
                log.warning("heartbeat failed: %s", error)

    def stop(self) -> None:
        self._stop.set()
