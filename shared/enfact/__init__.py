"""enFact → inbox: the enFact API client, the signed push intake, the fetch into the inbox, reconcile.

    verify_signature(secret, headers, body)             # shared.enfact.webhook (pure)
    accept_push(services, headers, body)                # shared.enfact.push
    fetch_invoice(services, message, delivery_id)       # shared.enfact.fetch

May import: the foundation, ``shared.ledger``, ``shared.services``, and ``shared.drop.structured`` for the
invoice terms it writes into the inbox blob's metadata; an enFact invoice reaches Inqom
through the inbox and ``shared.drop``, never directly.
"""
