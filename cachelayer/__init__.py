"""cachelayer: make Replicate model outputs permanent.

Replicate serves output files from URLs that stop working (API predictions lose their
files one hour after they finish). cachelayer copies each output file into S3-compatible
storage the moment a prediction completes, records the mapping in a SQL catalog, and
returns durable URLs in place of the expiring ones::

    from cachelayer import CacheLayer
    layer = CacheLayer()
    output = layer.run("black-forest-labs/flux-schnell", input={"prompt": "a cat"})
"""

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
)
from cachelayer.layer import CacheLayer
from cachelayer.persist import PersistResult
from cachelayer.prediction import Prediction, PredictionStatus

__version__ = "0.1.0"

__all__ = [
    "AsyncCacheLayer",
    "BucketNotFoundError",
    "CacheLayer",
    "CacheLayerError",
    "CatalogUnavailableError",
    "ConfigError",
    "DisallowedUrlError",
    "DownloadError",
    "DownloadTooLargeError",
    "ExpiredDownloadUrlError",
    "FileOutcome",
    "FileRecord",
    "ModelNotFoundError",
    "PersistResult",
    "Prediction",
    "PredictionFailedError",
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
    "__version__",
]
