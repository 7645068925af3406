"""cachelayer: make Replicate model outputs permanent.

Replicate serves output files from URLs that stop working (API predictions lose their
files one hour after they finish). cachelayer copies each output file into S3-compatible
storage the moment a prediction completes, records the mapping in a SQL catalog, and
returns durable URLs in place of the expiring ones::

    from cachelayer import CacheLayer
    layer = CacheLayer()
    output = layer.run("black-forest-labs/flux-schnell", input={"prompt": "a cat"})
"""

from cachelayer.catalog.records import FileRecord, PredictionRecord
from cachelayer.config import Settings
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
    StorageAuthError,
    StorageConfigError,
    StorageError,
    TruncatedDownloadError,
)
from cachelayer.layer import CacheLayer
from cachelayer.pipeline import FileOutcome, PersistResult

__version__ = "0.1.0"

__all__ = [
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
    "PredictionFailedError",
    "PredictionNotFoundError",
    "PredictionRecord",
    "ReplicateConfigError",
    "Settings",
    "StorageAuthError",
    "StorageConfigError",
    "StorageError",
    "TruncatedDownloadError",
    "__version__",
]
