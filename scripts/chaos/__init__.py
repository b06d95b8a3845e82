"""The chaos run's parts (scripts/chaos.py drives them): ``cluster`` (Redis, the TCP proxy and
the workers, as real processes), ``load`` (producers and the result listener), ``faults`` (the
injector), ``checker`` (every task's history against docs/semantics.md) and ``proxy``."""
