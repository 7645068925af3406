"""The installed ``replicate`` client (1.x or 2.x) used the way an app uses it, so the
client-facing tests hand cachelayer that client's own objects under either version."""

from __future__ import annotations

from typing import Any

from cachelayer.replicate_clients import client_major, make_client

V2 = client_major() >= 2


def native_client(sim: Any) -> Any:
    """The installed client's own object on the simulator (``replicate.Client`` in 1.x,
    ``replicate.Replicate`` in 2.x), polling every 0.05 s."""
    client = make_client(sim.token, sim.base_url, sim.ca_file)
    if not V2:
        client.poll_interval = 0.05
    return client


def native_create(sim: Any, model: str, input: dict[str, Any] | None = None) -> Any:
    """Create a prediction on an official model with ``Prefer: wait``, as an app would with
    its client; returns that client's own ``Prediction`` object."""
    client = native_client(sim)
    if V2:
        owner, name = model.split("/")
        return client.models.predictions.create(
            model_owner=owner, model_name=name, input=input or {}, prefer="wait"
        )
    return client.predictions.create(model=model, input=input or {}, wait=True)


def native_run(sim: Any, ref: str, input: dict[str, Any] | None = None) -> Any:
    """``client.run(ref, input=...)``: the output with the client's own ``FileOutput`` objects."""
    return native_client(sim).run(ref, input=input or {})


def native_wait(sim: Any, pred: Any) -> Any:
    """The finished prediction, as the client's own object (1.x ``pred.wait()``; 2.x has no
    ``Prediction.wait``: ``client.predictions.wait(prediction_id=...)``)."""
    if V2:
        return native_client(sim).predictions.wait(prediction_id=pred.id)
    pred.wait()
    return pred
