"""cachelayer: make Replicate model outputs permanent.

Replicate serves output files from URLs that stop working (API predictions lose their
files one hour after they finish). cachelayer copies each output file into S3-compatible
storage the moment a prediction completes, records the mapping in a SQL catalog, and
returns durable URLs in place of the expiring ones::

    from cachelayer import CacheLayer
    layer = CacheLayer()
    output = layer.run("black-forest-labs/flux-schnell", input={"prompt": "a cat"})

The public names are imported on first use (PEP 562), so ``import cachelayer`` (and every
``cachelayer`` command, which imports this package first) loads none of SQLAlchemy,
Replicate's client, boto3 or the async/server stack until a name that needs them is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cachelayer.lazy import lazy_getattr

if TYPE_CHECKING:
    from cachelayer.aio import AsyncCacheLayer
    from cachelayer.catalog.records import FileRecord, PredictionRecord
    from cachelayer.config import Settings
    from cachelayer.copier import FileOutcome
    from cachelayer.errors import (
        BucketNotFoundError,
        CacheLayerError,
        CatalogUnavailableError,
        ConfigError,
        DisallowedUrlError,
        DownloadError,
        DownloadTooLargeError,
        ExpiredDownloadUrlError,
        ModelNotFoundError,
        PredictionFailedError,
        PredictionNotFoundError,
        ReplicateConfigError,
        RerunError,
        StorageAuthError,
        StorageConfigError,
        StorageError,
        TruncatedDownloadError,
        WaitTimeoutError,
        WebhookVerificationError,
    )
    from cachelayer.layer import CacheLayer
    from cachelayer.model_io import CreateParams, FileOutputLike, Input, JSONValue, Output
    from cachelayer.persist import PersistResult
    from cachelayer.prediction import Prediction, PredictionLike, PredictionStatus

__version__ = "0.1.0"

#: The module each public name is imported from on first use (the imports above, for
#: type checkers, say the same).
_EXPORTS: dict[str, str] = {
    "AsyncCacheLayer": "cachelayer.aio",
    "CacheLayer": "cachelayer.layer",
    "FileOutcome": "cachelayer.copier",
    "FileRecord": "cachelayer.catalog.records",
    "PersistResult": "cachelayer.persist",
    "Prediction": "cachelayer.prediction",
    "PredictionLike": "cachelayer.prediction",
    **{
        name: "cachelayer.model_io"
        for name in ("CreateParams", "FileOutputLike", "Input", "JSONValue", "Output")
    },
    "PredictionRecord": "cachelayer.catalog.records",
    "PredictionStatus": "cachelayer.prediction",
    "Settings": "cachelayer.config",
    **{
        name: "cachelayer.errors"
        for name in (
            "BucketNotFoundError",
            "CacheLayerError",
            "CatalogUnavailableError",
            "CertificateError",
            "ConfigError",
            "DisallowedUrlError",
            "DownloadError",
            "DownloadTooLargeError",
            "ExpiredDownloadUrlError",
            "ModelNotFoundError",
            "PredictionFailedError",
            "PredictionNotFoundError",
            "ReplicateConfigError",
            "RerunError",
            "StorageAuthError",
            "StorageConfigError",
            "StorageError",
            "TruncatedDownloadError",
            "WaitTimeoutError",
            "WebhookVerificationError",
        )
    },
}

__all__ = [
    "AsyncCacheLayer",
    "BucketNotFoundError",
    "CacheLayer",
    "CacheLayerError",
    "CatalogUnavailableError",
    "CertificateError",
    "ConfigError",
    "CreateParams",
    "DisallowedUrlError",
    "DownloadError",
    "DownloadTooLargeError",
    "ExpiredDownloadUrlError",
    "FileOutcome",
    "FileOutputLike",
    "FileRecord",
    "Input",
    "JSONValue",
    "ModelNotFoundError",
    "Output",
    "PersistResult",
    "Prediction",
    "PredictionFailedError",
    "PredictionLike",
    "PredictionNotFoundError",
    "PredictionRecord",
    "PredictionStatus",
    "ReplicateConfigError",
    "RerunError",
    "Settings",
    "StorageAuthError",
    "StorageConfigError",
    "StorageError",
    "TruncatedDownloadError",
    "WaitTimeoutError",
    "WebhookVerificationError",
    "__version__",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
