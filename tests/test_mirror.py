def test_serve_workers_drain_pending_mirror_copies(make_layer, replicate_simulator, s3_server, served):
    """A copy left pending while the mirror was down is made by ``cachelayer serve``'s
    workers once the mirror answers (its backoff over), not by the process that stored it."""
    import time

    absent = f"cachelayer-mirror-{secrets.token_hex(8)}"
    layer = make_layer(mirror_urls=f"s3://{absent}")
    pid, files = _seed(replicate_simulator, 1)
    try:
        layer.persist(pid)
        layer.work()
        (rec,) = layer.catalog.files.of_prediction(pid)
        (copy,) = layer.catalog.copies.of_files([rec.id])[rec.id]
        assert copy.status == FileStatus.PENDING
        layer.close()  # this process stops; the copy stays queued
        s3_server.create_bucket(absent)
        served("--workers", "1", CACHELAYER_MIRROR_URLS=f"s3://{absent}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            (copy,) = layer.catalog.copies.of_files([rec.id])[rec.id]
            if copy.status == FileStatus.STORED:
                break
            time.sleep(0.5)
        assert copy.status == FileStatus.STORED, copy
        assert _get(s3_server, absent, copy.key) == files[0].read()
        assert replicate_simulator.download_count(rec.source_url) == 1
    finally:
        _drop_bucket(s3_server, absent)
