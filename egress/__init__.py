"""Egress: HLS broadcasting and recordings.

An egress worker (``stagecast egress``, or the one the embedded server runs) takes jobs from the
``egress-jobs`` queue on the bus, subscribes to the call like a hidden viewer with a
server-issued SFU token, and writes HLS segments or a recording through a :class:`Storage`.
It reports what happens on the ``egress-reports`` queue; the coordinator records it and emits
the events. See ``docs/architecture.md`` (Egress).
"""
