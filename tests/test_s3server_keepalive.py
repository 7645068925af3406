"""moto's S3 server (:class:`~cachelayer.testing.s3server.MotoS3Server`) keeps HTTP/1.1
connections alive, as S3 does: boto3 opens one connection, not one per request."""

from __future__ import annotations

import logging


def test_boto3_reuses_its_connection_to_the_moto_server(s3_server, s3_bucket, caplog) -> None:
    client = s3_server.client()
    with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
        for i in range(4):
            key = f"keep alive/{i}%2F_x"
            client.put_object(Bucket=s3_bucket, Key=key, Body=b"x" * 1000, Metadata={"my_key": str(i)})
            got = client.get_object(Bucket=s3_bucket, Key=key)
            assert got["Body"].read() == b"x" * 1000
            assert got["Metadata"] == {"my_key": str(i)}  # underscores in metadata names survive
            assert got["ResponseMetadata"]["HTTPHeaders"].get("connection", "").lower() != "close"
    messages = [r.getMessage() for r in caplog.records if r.name == "urllib3.connectionpool"]
    assert sum("Starting new HTTP connection" in m for m in messages) == 1, messages
    assert not any("Resetting dropped connection" in m for m in messages), messages
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="keep alive/")["Contents"]
    assert sorted(o["Key"] for o in listed) == [f"keep alive/{i}%2F_x" for i in range(4)]
    client.close()


def test_expect_100_continue_is_answered_whatever_its_case(s3_server, s3_bucket) -> None:
    """Go's HTTP client (rclone, the AWS SDK for Go) sends ``Expect: 100-Continue``; the
    expectation is case-insensitive (RFC 9110, 10.1.1) and S3 answers ``100 Continue`` at
    once. cheroot only did for the lower-case spelling, so rclone waited a second before
    every upload. The raw request here waits for the interim answer before sending its body."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(s3_server.endpoint_url)
    for spelling in ("100-Continue", "100-continue", "100-CONTINUE"):
        body = b"y" * 1000
        with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
            sock.sendall(
                (
                    f"PUT /{s3_bucket}/expect-{spelling} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                    f"Content-Length: {len(body)}\r\nExpect: {spelling}\r\n"
                    "Authorization: AWS4-HMAC-SHA256 Credential=testing/20261122/us-east-1/s3/aws4_request, "
                    "SignedHeaders=host, Signature=0\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\r\n"
                ).encode()
            )
            sock.settimeout(0.5)  # well under Go's one-second ExpectContinueTimeout
            interim = sock.recv(64)
            assert interim.startswith(b"HTTP/1.1 100 Continue"), (spelling, interim)
            sock.settimeout(5)
            sock.sendall(body)
            final = sock.recv(4096)
            assert final.split(b"\r\n", 1)[0].split()[1] in (b"200", b"403"), final[:200]
