"""The content-addressed stage store."""

from superalign.store.store import Stage, Store, default_store_root, stage_key, write_json_atomic

__all__ = ["Stage", "Store", "default_store_root", "stage_key", "write_json_atomic"]
