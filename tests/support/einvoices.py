"""E-invoices written for the tests: UBL 2.1 and CII XML from the terms given, Factur-X / ZUGFeRD PDFs, hostile files.

    xml = ubl_invoice(Terms(number="F-1", vat_totals=(("200.00", "EUR"), ("1750.00", "SEK"))))
    pdf = factur_x_pdf(cii_invoice(Terms()))              # PDF/A-3 with factur-x.xml, by the factur-x library
    pdf = pdf_with_attachment("xrechnung.xml", xml)       # a plain PDF with an embedded file

Every term is a string written as given (``None`` leaves the element out), so a test can write odd
or malformed values ("12,00", "2026-13-01"). Dates are ISO; the CII builder drops the hyphens
(format 102). Each document also has one line whose ID, amounts and order line reference must not
be read as the header's.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, replace
from pathlib import Path

import facturx
from lxml import etree
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject, NumberObject

UBL_INVOICE = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
UBL_CREDIT_NOTE = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
RSM = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
UDT = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
EN16931 = "urn:cen.eu:en16931:2017"
PEPPOL = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
MiB = 1024 * 1024


@dataclass(frozen=True)
class PartyTerms:
    name: str | None          # BT-27 / BT-44: UBL PartyLegalEntity/RegistrationName, CII Name
    legal_id: str | None      # BT-30 / BT-47
    vat_id: str | None        # BT-31 / BT-48
    trading_name: str | None = None  # UBL PartyName/Name (BT-28), the reader's fallback for the name


SELLER = PartyTerms("Société d'Études Générales SAS", "732829320", "FR40732829320", trading_name="SEG Conseil")
BUYER = PartyTerms("Boulangerie Ægir & Fils", "552081317", "FR83552081317")


@dataclass(frozen=True)
class Terms:
    number: str | None = "F-2026-0042"
    issue_date: str | None = "2026-09-15"
    due_date: str | None = "2026-10-15"
    type_code: str | None = "380"
    currency: str | None = "EUR"
    profile: str | None = EN16931
    seller: PartyTerms = SELLER
    buyer: PartyTerms = BUYER
    total_without_vat: str | None = "1000.00"
    #: (amount, currencyID): BT-110 in the document currency, and BT-111 when the VAT is also given in another.
    vat_totals: tuple[tuple[str, str | None], ...] = (("200.00", "EUR"),)
    total_with_vat: str | None = "1200.00"
    amount_due: str | None = "1200.00"
    buyer_reference: str | None = "SERVICE-ACHATS"
    order_reference: str | None = "PO-77"


#: Only the mandatory terms of EN 16931 that the reader reads; every optional one (BT-9, 10, 13, 30, 31, 47,
#: 48, 110) left out.
MINIMAL = Terms(due_date=None, seller=PartyTerms("Vendeur SA", None, None), buyer=PartyTerms("Acheteur SARL", None, None),
                vat_totals=(), buyer_reference=None, order_reference=None)

#: A credit note as French suppliers write one: type 381, negative amounts.
CREDIT = replace(Terms(), number="AV-2026-0007", type_code="381", total_without_vat="-250.00",
                 vat_totals=(("-50.00", "EUR"),), total_with_vat="-300.00", amount_due="-300.00")


# ----------------------------------------------------------------------------------------- UBL


def ubl_invoice(terms: Terms = Terms(), *, credit_note: bool = False) -> bytes:
    """A UBL 2.1 ``Invoice`` (or ``CreditNote``: BT-9 then goes in PaymentMeans/PaymentDueDate, as Peppol has it)."""
    root_ns = UBL_CREDIT_NOTE if credit_note else UBL_INVOICE
    root = etree.Element(f"{{{root_ns}}}{'CreditNote' if credit_note else 'Invoice'}",
                         nsmap={None: root_ns, "cac": CAC, "cbc": CBC})
    cbc(root, "CustomizationID", terms.profile)
    cbc(root, "ProfileID", "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0")
    cbc(root, "ID", terms.number)
    cbc(root, "IssueDate", terms.issue_date)
    if not credit_note:
        cbc(root, "DueDate", terms.due_date)
    cbc(root, "CreditNoteTypeCode" if credit_note else "InvoiceTypeCode", terms.type_code)
    cbc(root, "Note", "Pénalités de retard : 3 fois le taux légal. Indemnité forfaitaire : 40 €.")
    cbc(root, "DocumentCurrencyCode", terms.currency)
    cbc(root, "BuyerReference", terms.buyer_reference)
    if terms.order_reference is not None:
        cbc(cac(root, "OrderReference"), "ID", terms.order_reference)
    if credit_note:
        cbc(cac(cac(root, "BillingReference"), "InvoiceDocumentReference"), "ID", "F-2026-0001")
    ubl_party(cac(root, "AccountingSupplierParty"), terms.seller)
    ubl_party(cac(root, "AccountingCustomerParty"), terms.buyer)
    means = cac(root, "PaymentMeans")
    cbc(means, "PaymentMeansCode", "30")
    if credit_note:
        cbc(means, "PaymentDueDate", terms.due_date)
    cbc(cac(means, "PayeeFinancialAccount"), "ID", "FR7630006000011234567890189")
    cbc(cac(root, "PaymentTerms"), "Note", "30 jours fin de mois")
    for amount, currency in terms.vat_totals:
        total = cac(root, "TaxTotal")
        cbc(total, "TaxAmount", amount, currencyID=currency)
        if currency == terms.currency:
            sub = cac(total, "TaxSubtotal")
            cbc(sub, "TaxableAmount", terms.total_without_vat, currencyID=currency)
            cbc(sub, "TaxAmount", amount, currencyID=currency)
            ubl_tax_category(cac(sub, "TaxCategory"))
    sums = cac(root, "LegalMonetaryTotal")
    cbc(sums, "LineExtensionAmount", terms.total_without_vat, currencyID=terms.currency)
    cbc(sums, "TaxExclusiveAmount", terms.total_without_vat, currencyID=terms.currency)
    cbc(sums, "TaxInclusiveAmount", terms.total_with_vat, currencyID=terms.currency)
    cbc(sums, "PayableAmount", terms.amount_due, currencyID=terms.currency)
    line = cac(root, "CreditNoteLine" if credit_note else "InvoiceLine")
    cbc(line, "ID", "1")
    cbc(line, "CreditedQuantity" if credit_note else "InvoicedQuantity", "10", unitCode="C62")
    cbc(line, "LineExtensionAmount", "999999.99", currencyID=terms.currency)
    cbc(cac(line, "OrderLineReference"), "LineID", "LINE-REF-NOT-BT-13")
    item = cac(line, "Item")
    cbc(item, "Name", "Prestation de conseil")
    ubl_tax_category(cac(item, "ClassifiedTaxCategory"))
    cbc(cac(line, "Price"), "PriceAmount", "100.00", currencyID=terms.currency)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def ubl_party(parent: etree._Element, party: PartyTerms) -> None:
    node = cac(parent, "Party")
    cbc(node, "EndpointID", party.legal_id, schemeID="0009")
    if party.trading_name is not None:
        cbc(cac(node, "PartyName"), "Name", party.trading_name)
    address = cac(node, "PostalAddress")
    cbc(address, "CityName", "Paris")
    cbc(cac(address, "Country"), "IdentificationCode", "FR")
    if party.vat_id is not None:
        scheme = cac(node, "PartyTaxScheme")
        cbc(scheme, "CompanyID", party.vat_id)
        cbc(cac(scheme, "TaxScheme"), "ID", "VAT")
    # A second tax scheme that is not VAT (BT-32, the seller's tax registration): not BT-31.
    other = cac(node, "PartyTaxScheme")
    cbc(other, "CompanyID", "NOT-A-VAT-ID")
    cbc(cac(other, "TaxScheme"), "ID", "FC")
    if party.name is not None or party.legal_id is not None:
        entity = cac(node, "PartyLegalEntity")
        cbc(entity, "RegistrationName", party.name)
        cbc(entity, "CompanyID", party.legal_id, schemeID="0002")


def ubl_tax_category(parent: etree._Element) -> None:
    cbc(parent, "ID", "S")
    cbc(parent, "Percent", "20")
    cbc(cac(parent, "TaxScheme"), "ID", "VAT")


def cac(parent: etree._Element, name: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{CAC}}}{name}")


def cbc(parent: etree._Element, name: str, value: str | None, **attributes: str | None) -> None:
    if value is not None:
        etree.SubElement(parent, f"{{{CBC}}}{name}", {k: v for k, v in attributes.items() if v is not None}).text = value


# ----------------------------------------------------------------------------------------- CII


def cii_invoice(terms: Terms = Terms()) -> bytes:
    """A UN/CEFACT ``CrossIndustryInvoice`` (D16B, as Factur-X 1.0 / ZUGFeRD 2 embed it)."""
    root = etree.Element(f"{{{RSM}}}CrossIndustryInvoice", nsmap={"rsm": RSM, "ram": RAM, "udt": UDT})
    context = rsm(root, "ExchangedDocumentContext")
    if terms.profile is not None:
        ram(ram(context, "GuidelineSpecifiedDocumentContextParameter"), "ID", terms.profile)
    document = rsm(root, "ExchangedDocument")
    ram(document, "ID", terms.number)
    ram(document, "TypeCode", terms.type_code)
    cii_date(document, "IssueDateTime", terms.issue_date)
    ram(ram(document, "IncludedNote"), "Content", "Pénalités de retard : 3 fois le taux légal.")
    transaction = rsm(root, "SupplyChainTradeTransaction")
    line = ram(transaction, "IncludedSupplyChainTradeLineItem")
    ram(ram(line, "AssociatedDocumentLineDocument"), "LineID", "1")
    ram(ram(line, "SpecifiedTradeProduct"), "Name", "Prestation de conseil")
    ram(ram(ram(line, "SpecifiedLineTradeAgreement"), "BuyerOrderReferencedDocument"), "LineID", "LINE-REF-NOT-BT-13")
    ram(ram(line, "SpecifiedLineTradeDelivery"), "BilledQuantity", "10", unitCode="C62")
    line_settlement = ram(line, "SpecifiedLineTradeSettlement")
    ram(ram(line_settlement, "SpecifiedTradeSettlementLineMonetarySummation"), "LineTotalAmount", "999999.99")
    agreement = ram(transaction, "ApplicableHeaderTradeAgreement")
    ram(agreement, "BuyerReference", terms.buyer_reference)
    cii_party(ram(agreement, "SellerTradeParty"), terms.seller)
    cii_party(ram(agreement, "BuyerTradeParty"), terms.buyer)
    if terms.order_reference is not None:
        ram(ram(agreement, "BuyerOrderReferencedDocument"), "IssuerAssignedID", terms.order_reference)
    ram(transaction, "ApplicableHeaderTradeDelivery")
    settlement = ram(transaction, "ApplicableHeaderTradeSettlement")
    ram(settlement, "InvoiceCurrencyCode", terms.currency)
    tax = ram(settlement, "ApplicableTradeTax")
    ram(tax, "CalculatedAmount", terms.vat_totals[0][0] if terms.vat_totals else None)
    ram(tax, "TypeCode", "VAT")
    ram(tax, "BasisAmount", terms.total_without_vat)
    ram(tax, "CategoryCode", "S")
    ram(tax, "RateApplicablePercent", "20")
    terms_node = ram(settlement, "SpecifiedTradePaymentTerms")
    ram(terms_node, "Description", "30 jours fin de mois")
    cii_date(terms_node, "DueDateDateTime", terms.due_date)
    sums = ram(settlement, "SpecifiedTradeSettlementHeaderMonetarySummation")
    ram(sums, "LineTotalAmount", terms.total_without_vat)
    ram(sums, "TaxBasisTotalAmount", terms.total_without_vat)
    for amount, currency in terms.vat_totals:
        ram(sums, "TaxTotalAmount", amount, currencyID=currency)
    ram(sums, "GrandTotalAmount", terms.total_with_vat)
    ram(sums, "DuePayableAmount", terms.amount_due)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def cii_party(parent: etree._Element, party: PartyTerms) -> None:
    ram(parent, "Name", party.name)
    if party.legal_id is not None:
        ram(ram(parent, "SpecifiedLegalOrganization"), "ID", party.legal_id, schemeID="0002")
    address = ram(parent, "PostalTradeAddress")
    ram(address, "CityName", "Paris")
    ram(address, "CountryID", "FR")
    ram(ram(parent, "SpecifiedTaxRegistration"), "ID", "NOT-A-VAT-ID", schemeID="FC")
    if party.vat_id is not None:
        ram(ram(parent, "SpecifiedTaxRegistration"), "ID", party.vat_id, schemeID="VA")


def cii_date(parent: etree._Element, name: str, iso: str | None) -> None:
    if iso is not None:
        etree.SubElement(ram(parent, name), f"{{{UDT}}}DateTimeString", format="102").text = iso.replace("-", "")


def rsm(parent: etree._Element, name: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{RSM}}}{name}")


def ram(parent: etree._Element, name: str, value: str | None = "", **attributes: str | None) -> etree._Element:
    """A ``ram:`` child; with a ``value`` of ``None`` nothing is written (the returned element is detached)."""
    element = etree.Element(f"{{{RAM}}}{name}", {k: v for k, v in attributes.items() if v is not None})
    if value is not None:
        parent.append(element)
        element.text = value or None
    return element


# ----------------------------------------------------------------------------------------- PDFs


def blank_pdf(padding: int = 0) -> bytes:
    """A one-page PDF; ``padding`` bytes of random image data (incompressible, like a scan) make it bigger."""
    writer = PdfWriter()
    page = writer.add_blank_page(595, 842)
    if padding:
        image = DecodedStreamObject()
        image.set_data(os.urandom(padding))
        image.update({NameObject("/Type"): NameObject("/XObject"), NameObject("/Subtype"): NameObject("/Image"),
                      NameObject("/Width"): NumberObject(padding), NameObject("/Height"): NumberObject(1),
                      NameObject("/ColorSpace"): NameObject("/DeviceGray"),
                      NameObject("/BitsPerComponent"): NumberObject(8)})
        resources = DictionaryObject({NameObject("/XObject"): DictionaryObject(
            {NameObject("/Im0"): writer._add_object(image)})})
        page[NameObject("/Resources")] = resources
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def factur_x_pdf(cii_xml: bytes, *, padding: int = 0) -> bytes:
    """A Factur-X PDF/A-3 (``factur-x.xml`` embedded) made by the factur-x library, as invoicing software does."""
    return facturx.generate_from_binary(
        blank_pdf(padding), cii_xml, flavor="factur-x", level="en16931", check_xsd=False,
        pdf_metadata={"author": "tests", "keywords": "Factur-X", "title": "Facture", "subject": "Facture"})


def pdf_with_attachment(name: str, content: bytes, *more: tuple[str, bytes], padding: int = 0) -> bytes:
    """A PDF with the embedded file ``name`` (ZUGFeRD / XRechnung names, or anything a test needs), and ``more``."""
    writer = PdfWriter(clone_from=io.BytesIO(blank_pdf(padding)))
    for file_name, data in ((name, content), *more):
        writer.add_attachment(file_name, data)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# ------------------------------------------------------------------------------------- hostile


def xxe_ubl(path: Path) -> bytes:
    """A UBL invoice whose number is an external entity pointing at a local file."""
    body = ubl_invoice(Terms(number="XXE_PLACEHOLDER")).split(b"?>", 1)[1]
    doctype = f'<!DOCTYPE Invoice [<!ENTITY xxe SYSTEM "file://{path}">]>'.encode()
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + doctype + body.replace(b"XXE_PLACEHOLDER", b"&xxe;")


def external_dtd_ubl(url: str) -> bytes:
    """A UBL invoice that names an external DTD and a parameter entity at ``url`` (a parser that fetches it calls out)."""
    body = ubl_invoice().split(b"?>", 1)[1]
    doctype = f'<!DOCTYPE Invoice SYSTEM "{url}/invoice.dtd" [<!ENTITY % remote SYSTEM "{url}/p.ent"> %remote;]>'
    return b'<?xml version="1.0"?>\n' + doctype.encode() + body


def entity_bomb() -> bytes:
    """"Billion laughs": ten levels of ten references, 10^9 "lol"s (3 GB) once expanded, 1 KiB as written."""
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{("&lol%d;" % (i - 1)) * 10}">' for i in range(1, 10)]
    doctype = "<!DOCTYPE Invoice [" + "".join(entities) + "]>"
    body = ubl_invoice(Terms(number="BOMB_PLACEHOLDER")).split(b"?>", 1)[1]
    return b'<?xml version="1.0"?>\n' + doctype.encode() + body.replace(b"BOMB_PLACEHOLDER", b"&lol9;")


def write_large_ubl(path: Path, size: int) -> Path:
    """A well-formed UBL invoice of ``size`` bytes (a long note), written a MiB at a time."""
    head, tail = ubl_invoice().split(b"<cbc:Note>", 1)
    head += b"<cbc:Note>"
    left = size - len(head) - len(tail)
    with open(path, "wb") as out:
        out.write(head)
        while left > 0:
            left -= out.write(b"x" * min(MiB, left))
        out.write(tail)
    return path
