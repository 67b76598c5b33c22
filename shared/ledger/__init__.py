"""The ledger: one Table row per document and its pending index, setting a document aside, its daily backup.

    ledger.claim_upload(folder, key, fields, claim_seconds=900)        # shared.ledger.rows
    quarantine_document(services, partition, key, fields, reason)      # shared.ledger.quarantine
    export_ledger(stores.table("ledger"), stores.container("ledger-backup"))   # shared.ledger.backup

May import: the foundation modules at ``shared/`` (storage, blobmove, metrics, observability);
``Services`` for its type only.
"""
