"""Object stores (local directory, S3) and tiering: uploading sealed segments, trimming
the WAL they cover, deleting segments retention expires. Service process; imports
log and segments."""

from app.storage.tier.objectstore import ObjectNotFound, ObjectStoreError, open_object_store
from app.storage.tier.tiering import Tiering

__all__ = ["ObjectNotFound", "ObjectStoreError", "Tiering", "open_object_store"]
