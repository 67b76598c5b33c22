"""Operator command-line tool of inqom-bridge.

    python -m inqom_bridge_cli [-v] status [--json] [--errors N]
    python -m inqom_bridge_cli show <blob path | archive/quarantine path | Inqom id | enFact id> [--json]
    python -m inqom_bridge_cli quarantine list [--prefix P] [--json]
    python -m inqom_bridge_cli replay <quarantined path> [--to <inbox path>] [--force]
    python -m inqom_bridge_cli backfill <dir> --folder <id> --kind <supplier|client|other|expense>
                                        [--beneficiary NAME] [--dry-run] [--no-progress]
    python -m inqom_bridge_cli export [--out FILE]
    python -m inqom_bridge_cli find [--folder ID] [--kind K] [--inqom-id ID] [--counterparty NAME [--prefix]]
                                    [--from DATE] [--to DATE] [--min-amount X] [--max-amount Y] [--docref R]
                                    [--account] [--limit N] [--json] [--download DIR] [--no-progress]
    python -m inqom_bridge_cli backfill-tags [--folder ID] [--limit N] [--force] [--dry-run] [--no-progress]
    python -m inqom_bridge_cli einvoice <file> [--json] [--max-bytes N]

Settings are read from the environment exactly like the Function App (``load_settings()``):
storage through the ``DocumentStorage`` connection (a connection string, e.g. Azurite, or the
identity-based ``DocumentStorage__*ServiceUri`` with ``DefaultAzureCredential``). No secret is read,
except by ``backfill-tags``, which calls Inqom with the app's credentials (Key Vault or the environment).
Exit codes: 0 success, 1 not found / user error (message on stderr), 2 usage.
"""

from .cli import build_parser, main

__all__ = ["build_parser", "main"]
