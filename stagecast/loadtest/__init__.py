"""``stagecast loadtest``: synthetic publishers and viewers against a running Stagecast.

- :mod:`.runner`: the command (options, call set-up, ramp, phases, Ctrl-C).
- :mod:`.worker`: the worker processes (publisher, thin and decoding viewers).
- :mod:`.process`: driving worker processes with JSON lines.
- :mod:`.rtp`: counting RTP at the ICE socket (also used by ``bench/fanout.py``).
- :mod:`.media`: the synthetic source with the wall-clock time burned into each frame.
- :mod:`.report`: phases, the progress line and the summary table.
- :mod:`.schema`: the JSON report's schema (``docs/loadtest.schema.json``).
"""
