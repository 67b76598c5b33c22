"""Drop → Inqom: route an inbox blob by its path and metadata, and send it to Inqom exactly once.

    instruction = route(name, metadata, size, rules)      # shared.drop.routing (pure)
    upload_inbox_blob(services, blob_client)              # shared.drop.upload

May import: the foundation, ``shared.inqom``, ``shared.ledger``, ``shared.services``.
"""
