"""Several collectors behind one endpoint, each scraped on its own, after node_exporter
(collector/collector.go: ``NodeCollector.Collect`` runs every collector under ``execute``, which times it
and exports ``node_scrape_collector_duration_seconds`` and ``node_scrape_collector_success`` by collector).

A collector that raises — a missing /proc/meminfo, a bug — is left out of that scrape and logged when it
starts failing (and again only when its error changes); the endpoint still answers 200 with every other
collector's series and ``sparkrig_scrape_collector_success{collector} 0`` says which one is missing.
"""
from __future__ import annotations

import copy
import logging
import time

from configs.vocabulary import series as S

log = logging.getLogger("exporters")


class Scrape:
    """A prometheus_client collector over named collectors: ``{name: [collector, ...]}``."""

    def __init__(self, collectors: dict[str, list]) -> None:
        self.collectors = collectors
        self._failing: dict[str, str] = {}          # collector -> the error last logged for it

    def collect(self):
        success, took = S.SCRAPE_COLLECTOR_SUCCESS.family(), S.SCRAPE_COLLECTOR_DURATION.family()
        families: dict[str, object] = {}
        for name, parts in self.collectors.items():
            start = time.perf_counter()
            try:
                got = [fam for part in parts for fam in part.collect()]    # all of it, or none of it
            except Exception as exc:                # whatever it is, it costs this collector only
                self._failed(name, f"{type(exc).__name__}: {exc}")
                ok = False
            else:
                if self._failing.pop(name, None) is not None:
                    log.info("collector %s recovered", name)
                _merge(families, got)
                ok = True
            took.add_metric([name], time.perf_counter() - start)
            success.add_metric([name], 1 if ok else 0)
        yield from families.values()
        yield success
        yield took

    def _failed(self, name: str, error: str) -> None:
        if self._failing.get(name) != error:
            self._failing[name] = error
            log.error("collector %s failed (%s); its series are left out until it recovers (%s{collector=%r} "
                      "is 0)", name, error, S.SCRAPE_COLLECTOR_SUCCESS.name, name)


def _merge(families: dict, got: list) -> None:
    """One family per name: two collectors' samples of the same family (the procfs parse errors of nvme and
    uma, each with its own files) become one, as client_golang's Gather merges them. Copies, never the
    collector's own objects (the KVBM collector hands out its last result again)."""
    for fam in got:
        if fam.name in families:
            merged = copy.copy(families[fam.name])
            merged.samples = merged.samples + fam.samples
            families[fam.name] = merged
        else:
            families[fam.name] = fam
