"""A live dashboard in the browser for runs in progress (`mcepl launch --dashboard`) and
finished runs (`mcepl dashboard RUN_DIR...`).

- ``runinfo``: what the page needs to know about a run before any record (graph, retentions,
  labels, config), from a run directory or from the launcher's config and topology.
- ``records``: the few fields of a metrics record the page draws (plain dicts in, dicts out).
- ``hub``: the in-process event hub. Producers (the collector, a file tailer) append to it from
  any thread without ever waiting for a client; each client reads at its own pace, a few
  coalesced updates per second.
- ``sources``: feeding a hub from ``metrics.jsonl`` (replay, and tailing a run still written).
- ``server``: the read-only HTTP server (starlette on uvicorn, in a background thread): the page,
  its vendored libraries (cytoscape.js, uPlot; see ``static/vendor/README.md``) and the
  server-sent event stream.
"""
