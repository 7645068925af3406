"""A Replicate API simulator: a real HTTP(S) server the real ``replicate`` client talks to.

Point a client at it with ``replicate.Client(api_token=sim.token, base_url=sim.base_url)``
(over HTTPS also pass ``transport=httpx.HTTPTransport(verify=sim.ssl_context())``: the
client builds its own transport and ignores ``verify=``), or take
``sim.replicate_client()``. The contract it follows is
``shared/reference/replicate-api.md`` plus the ``replicate`` 1.0.7 client source:

* ``/v1`` JSON endpoints with Bearer auth and RFC 7807 problem-details errors:
  create (by version, official model, deployment), get, list (newest first, cursor
  pagination, ``source=web`` over the last 14 days, ``created_after``/``created_before``),
  cancel, model, versions, deployment, account and the default webhook secret. Requests
  are checked as strictly as the published schema (422 otherwise).
* Predictions move ``starting`` -> ``processing`` -> ``succeeded``/``failed`` lazily, from
  the simulator's clock (:class:`SimClock`), over ``prediction_duration`` seconds;
  ``aborted`` and ``canceled`` through ``aborts=True`` models, ``Cancel-After``,
  :meth:`ReplicateSimulator.abort` and cancel. ``sim.advance(seconds)`` moves that clock
  forward without sleeping. Official models can hide their versions (``"hidden"``).
* Output files (:class:`File`) are served from another origin (another port),
  ``{delivery_url}/delivery/pbxt/{token}/{filename}`` (mimicking
  ``https://replicate.delivery/pbxt/<token>/out-0.png`` beside ``api.replicate.com``; allow
  downloads from ``sim.delivery_host_port``, never the API's ``sim.host_port``; filename
  percent-encoded), streamed in 1 MiB chunks, with ``Content-Length``, ``HEAD`` and single
  ``Range`` support; optionally only with the API token. They answer 404 ``url_ttl``
  seconds after the prediction completes, once its data is removed (API predictions,
  ``data_removal_after`` seconds after completion, as Replicate does after one hour; the
  input goes too), or after :meth:`ReplicateSimulator.expire_urls` /
  :meth:`~ReplicateSimulator.rotate_urls`.
* Faults (:meth:`ReplicateSimulator.inject_fault`): error statuses (e.g. 429 with
  ``Retry-After``), truncated downloads and dropped connections; ``latency`` adds a time to
  first byte to every request.
* Webhooks: predictions created with an HTTPS ``webhook`` get signed POSTs (Standard
  Webhooks scheme, the secret from ``GET /v1/webhooks/default/secret``) for the events of
  their ``webhook_events_filter`` (default ``output`` and ``completed``; ``start``,
  ``output`` each time it grows, ``logs``, ``completed``).
* Standalone: ``python -m cachelayer.testing.simulator --port 8765`` serves example models
  (see :mod:`.__main__`).

Example::

    with ReplicateSimulator() as sim:
        sim.add_model("acme/painter", outputs=File(b"png bytes"))
        client = replicate.Client(api_token=sim.token, base_url=sim.base_url)
        url = client.run("acme/painter", input={"prompt": "a cat"})

The package, one module per concern: :mod:`.server` (the :class:`ReplicateSimulator`
facade), :mod:`.serving` (the socket and TLS), :mod:`.api` (routing, auth, request log, ``/v1`` endpoints),
:mod:`.lifecycle` (a prediction's state machine), :mod:`.predictions` (the registry of
predictions and delivery tokens), :mod:`.validation` (request checks),
:mod:`.delivery` (file delivery),
:mod:`.faults`, :mod:`.webhooks`, :mod:`.history` (seeding past predictions),
:mod:`.catalogue` (models, versions, deployments), :mod:`.files` (:class:`File`,
:class:`DataURI`), :mod:`.clock`, :mod:`.state` (settings and shared state),
:mod:`.examples` (example models) and :mod:`.__main__` (the standalone runner); TLS
material comes from :mod:`cachelayer.testing.tls`.
"""

from cachelayer.testing.simulator.api import RequestRecord
from cachelayer.testing.simulator.catalogue import DEFAULT_OUTPUT_SCHEMA, ITERATOR_OUTPUT_SCHEMA
from cachelayer.testing.simulator.clock import SimClock
from cachelayer.testing.simulator.faults import Fault
from cachelayer.testing.simulator.files import CHUNK_SIZE, DataURI, File
from cachelayer.testing.simulator.server import ReplicateSimulator
from cachelayer.testing.simulator.state import Settings
from cachelayer.testing.simulator.webhooks import WebhookDelivery

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_OUTPUT_SCHEMA",
    "ITERATOR_OUTPUT_SCHEMA",
    "DataURI",
    "Fault",
    "File",
    "ReplicateSimulator",
    "RequestRecord",
    "Settings",
    "SimClock",
    "WebhookDelivery",
]
