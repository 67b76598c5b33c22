"""The ledger: one Table row per document and its pending index, and setting a document aside.

    ledger.claim_upload(folder, key, fields, claim_seconds=900)        # shared.ledger.rows
    quarantine_document(services, partition, key, fields, reason)      # shared.ledger.quarantine

May import: the foundation modules at ``shared/`` (storage, blobmove, metrics, observability);
``Services`` for its type only.
"""
