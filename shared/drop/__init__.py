"""Drop → Inqom: route an inbox blob by its path and metadata, and send it to Inqom exactly once.

    instruction = route(name, metadata, size, rules)      # shared.drop.routing (pure)
    columns = read_at_door(blob, name, size, etag, metadata, settings)   # shared.drop.structured
    first = claim_invoice(ledger, entry, invoice_identity(folder, columns))   # shared.drop.duplicates
    upload_inbox_blob(services, blob_client)              # shared.drop.upload

May import: the foundation, ``shared.inqom``, ``shared.ledger``, ``shared.services``.
"""
