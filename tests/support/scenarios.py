"""The scenarios the crash simulation enumerates (each one sets up a fresh ``World``; ``World.run`` drives it).

    SCENARIOS["drop → archive"](world); world.run(); world.check()
"""

from __future__ import annotations

from typing import Callable

from tests.support.appsettings import ENFACT_COMPANY, ENFACT_SELLER_VAT
from tests.support.einvoices import PartyTerms, Terms, cii_invoice, factur_x_pdf, ubl_invoice
from tests.support.simulation import World, pdf

Scenario = Callable[[World], None]


def drop_to_archive(world: World) -> None:
    world.drop("11287/supplier/facture-1.pdf", pdf("facture-1"))


def drop_expense_bill(world: World) -> None:
    world.drop("11287/expense/Jeanne Dupont/taxi.jpg", pdf("taxi"))


def routing_failure_to_quarantine(world: World) -> None:
    world.drop("11287/supplier/virus.exe", pdf("virus"))


def deleted_in_inqom(world: World) -> None:
    world.inqom.flow_for_name["gone.pdf"] = ("Received", "Deleted")
    world.drop("11287/other/gone.pdf", pdf("gone"))


def duplicate_of_an_archived_original(world: World) -> None:
    world.drop("11287/supplier/a.pdf", pdf("same"))
    world.drop("11287/supplier/a-copy.pdf", pdf("same"))


def transient_failures_then_watchdog(world: World) -> None:
    world.inqom.inject("500", times=3, path_contains="/Documents")  # 2 attempts per call: 1st delivery fails
    world.drop("11287/client/vente.pdf", pdf("vente"))


def lost_blob_event(world: World) -> None:
    world.drop("11287/other/no-event.pdf", pdf("no-event"), event=False)


def enfact_push_to_archive(world: World) -> None:
    invoice = world.enfact.add_invoice(ENFACT_COMPANY, number="F2026-0042")
    world.push(str(invoice["id"]))


def enfact_missed_push_reconciled(world: World) -> None:
    world.enfact.add_invoice(ENFACT_COMPANY, number="F2026-0043")
    world.reconcile_rounds.add(0)


def two_messages_for_one_invoice(world: World) -> None:
    invoice = world.enfact.add_invoice(ENFACT_COMPANY, number="F2026-0044")
    world.push(str(invoice["id"]), event="invoice.created")
    world.push(str(invoice["id"]), event="invoice.updated")


def duplicate_whose_inbox_file_is_replaced(world: World) -> None:
    world.drop("11287/supplier/b.pdf", pdf("same-b"))
    world.drop("11287/supplier/scan.pdf", pdf("same-b"))
    # The scanner reuses the name before the duplicate's first poll: Inqom's copy is what gets archived.
    world.after_round[0] = lambda w: w.drop("11287/supplier/scan.pdf", pdf("next scan"))


def adopted_blob_refused_by_routing(world: World) -> None:
    world.drop("11287/supplier/macro.exe", pdf("macro"), event=False)


def one_invoice_as_two_files(world: World) -> None:
    """The supplier's platform exports the UBL; someone also drops the Factur-X PDF of the same invoice."""
    world.invoice_of.update(dict.fromkeys(("11287/supplier/F-2026-0042.xml", "11287/supplier/F-2026-0042.pdf"),
                                          "F-2026-0042"))
    world.drop("11287/supplier/F-2026-0042.xml", ubl_invoice(Terms()))
    world.drop("11287/supplier/F-2026-0042.pdf", factur_x_pdf(cii_invoice(Terms())))


def enfact_push_and_a_drop_of_one_invoice(world: World) -> None:
    invoice = world.enfact.add_invoice(ENFACT_COMPANY, number="F2026-0045", total=121.0)
    world.invoice_of.update({str(invoice["id"]): "F2026-0045", "11287/client/F2026-0045.xml": "F2026-0045"})
    world.push(str(invoice["id"]))
    world.drop("11287/client/F2026-0045.xml", ubl_invoice(Terms(
        number="F2026-0045", seller=PartyTerms("Our Client SPRL", None, ENFACT_SELLER_VAT), total_with_vat="121.00")))


SCENARIOS: dict[str, Scenario] = {
    "drop → archive": drop_to_archive,
    "expense bill → archive": drop_expense_bill,
    "routing failure → quarantine": routing_failure_to_quarantine,
    "deleted in Inqom → quarantine": deleted_in_inqom,
    "duplicate → linked and archived": duplicate_of_an_archived_original,
    "transient failures → host retry / watchdog": transient_failures_then_watchdog,
    "one invoice as two files → one sent, one held": one_invoice_as_two_files,
    "enFact push and a drop of one invoice → one sent": enfact_push_and_a_drop_of_one_invoice,
    "lost blob event → repair sweep": lost_blob_event,
    "enFact push → fetch → archive": enfact_push_to_archive,
    "enFact missed push → reconcile → archive": enfact_missed_push_reconciled,
    "two enFact messages for one invoice → one document": two_messages_for_one_invoice,
    "duplicate, inbox file replaced before its first poll → archived from Inqom": duplicate_whose_inbox_file_is_replaced,
    "lost event, adopted blob refused by routing → quarantine": adopted_blob_refused_by_routing,
}
