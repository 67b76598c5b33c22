"""Poll → archive: follow due documents in Inqom, archive verified originals, sweep for lost work.

    poll_tick(services)                                  # shared.archive.poll
    archive_tags(folder, kind, inqom_id, fields)         # shared.archive.tags (pure)
    repair_sweep(services, now)                          # shared.archive.repair

May import: the foundation, ``shared.inqom``, ``shared.ledger``, ``shared.services``, and
``shared.drop`` (the upload watchdog re-drives an upload); nothing imports this package but functions/.
"""
