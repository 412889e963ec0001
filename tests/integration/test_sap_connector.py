"""The SAP OData v2 client against the SAP simulator over real HTTP on loopback: the protocol (EDMX,
d.results, $filter/$select/$top/$inlinecount, __next paging, ETags, CSRF, error bodies, Basic auth), typed
reads across pages, writes with CSRF and If-Match, and every failure mode as a clear error."""

from __future__ import annotations

from decimal import Decimal

import pytest
import requests

from connectors.sap.client import (
    SAPAuthFailed,
    SAPBadResponse,
    SAPClient,
    SAPConfig,
    SAPError,
    SAPPreconditionFailed,
    SAPRejected,
)
from connectors.sap.models import (
    PurchaseRequisitionIn,
    PurchaseRequisitionItemIn,
    ReservationIn,
    ReservationItemChange,
    ReservationItemIn,
)
from connectors.sap.simulator import DEFAULT_PASSWORD, DEFAULT_USER, SAPSimulator, digest

ROOT = "/sap/opu/odata/sap/"


@pytest.fixture
def sim():
    s = SAPSimulator(seed=7, page_size=40).start()
    yield s
    s.stop()


def _client(sim, **kw) -> SAPClient:
    cfg = {"timeout_s": 2.0, "retries": 2, "backoff_s": 0.01, **kw}
    return SAPClient(SAPConfig(sim.url, DEFAULT_USER, cfg.pop("password", DEFAULT_PASSWORD), **cfg))


def _get(sim, path: str, **params) -> requests.Response:
    return requests.get(sim.url + ROOT + path, params=params, auth=(DEFAULT_USER, DEFAULT_PASSWORD),
                        headers={"Accept": "application/json"}, timeout=5)


def test_protocol_metadata_filter_select_inlinecount_paging_etag_and_errors(sim):
    meta = _get(sim, "API_MATERIAL_STOCK_SRV/$metadata")
    assert meta.status_code == 200 and b"<edmx:Edmx" in meta.content
    assert b'Name="A_MatlStkInAcctModType"' in meta.content
    r = _get(sim, "API_MATERIAL_STOCK_SRV/A_MatlStkInAcctMod", **{"$inlinecount": "allpages"}).json()["d"]
    total = len(sim.rows("API_MATERIAL_STOCK_SRV", "A_MatlStkInAcctMod"))
    assert r["__count"] == str(total) and len(r["results"]) == 40 and "$skiptoken=40" in r["__next"]
    r = _get(sim, "API_MATERIAL_STOCK_SRV/A_MatlStkInAcctMod", **{
        "$filter": "Material eq 'SP-4001' and MatlWrhsStkQtyInMatlBaseUnit ge 0", "$select": "Plant,Material",
        "$top": "1"}).json()["d"]
    assert len(r["results"]) == 1 and set(r["results"][0]) == {"__metadata", "Plant", "Material"}
    # An entity type with ConcurrencyMode=Fixed carries its ETag in __metadata and the ETag header.
    item = _get(sim, "API_RESERVATION_DOCUMENT_SRV/A_ReservationDocumentItem(Reservation='0000000001',"
                     "ReservationItem='0001')")
    assert item.headers["ETag"] == item.json()["d"]["__metadata"]["etag"] and item.headers["ETag"].startswith('W/"')
    assert _get(sim, "API_PRODUCT_SRV/A_Product/$count").text == str(len(sim.catalogue))
    bad = _get(sim, "API_PRODUCT_SRV/A_Product", **{"$filter": "NoSuchField eq 'x'"})
    assert bad.status_code == 400 and "NoSuchField" in bad.json()["error"]["message"]["value"]
    denied = requests.get(sim.url + ROOT + "API_PRODUCT_SRV/A_Product", auth=(DEFAULT_USER, "wrong"), timeout=5)
    assert denied.status_code == 401 and "Basic" in denied.headers["WWW-Authenticate"]


def test_reads_follow_every_page_into_typed_models(sim):
    client = _client(sim)
    stock = client.material_stock()
    rows = sim.rows("API_MATERIAL_STOCK_SRV", "A_MatlStkInAcctMod")
    assert stock.pages == -(-len(rows) // 40) > 1 and stock.total == len(stock.records) == len(rows)
    assert sum(r.quantity for r in stock.records if r.material == "SP-4001" and r.stock_type == "01") == \
        sim.stock_of("SP-4001")
    one = client.material_stock(material="SP-4001", plant="1010")
    assert {(r.material, r.plant) for r in one.records} == {("SP-4001", "1010")}
    assert len(client.cost_centers().records) == len(sim.rows("API_COSTCENTER_SRV", "A_CostCenter"))
    open_items = client.purchase_order_items(open_only=True)
    assert open_items.records and not any(i.delivered for i in open_items.records)
    # A quoted value cannot break out of the $filter literal.
    assert client.material_stock(material="X' or Material ne 'Y").records == []


def test_deterministic_by_seed():
    a, b, c = SAPSimulator(seed=7), SAPSimulator(seed=7), SAPSimulator(seed=8)
    key = ("API_MATERIAL_STOCK_SRV", "A_MatlStkInAcctMod")
    assert digest(a.rows(*key)) == digest(b.rows(*key)) != digest(c.rows(*key))


def test_write_without_csrf_token_is_refused_and_an_expired_token_is_fetched_again(sim):
    raw = requests.post(sim.url + ROOT + "API_PURCHASEREQ_PROCESS_SRV/A_PurchaseRequisitionHeader",
                        json={"to_PurchaseReqnItem": []}, auth=(DEFAULT_USER, DEFAULT_PASSWORD), timeout=5)
    assert raw.status_code == 403 and raw.headers["X-CSRF-Token"] == "Required"
    client = _client(sim)
    pr_in = PurchaseRequisitionIn(description="Filter elements for P3", items=[
        PurchaseRequisitionItemIn(material="SP-4001", plant="1010", quantity=Decimal(6), unit="PC")])
    first = client.create_purchase_requisition(pr_in)
    sim.expire_csrf_tokens()  # the Gateway session timed out: the next write is refused once, then re-sent
    posts = sum(1 for m, _ in sim.state.log if m == "POST")
    second = client.create_purchase_requisition(pr_in)
    assert sum(1 for m, _ in sim.state.log if m == "POST") - posts == 2  # refused + re-sent with a new token
    assert [p["PurchaseRequisition"] for p in sim.purchase_requisitions()] == \
        [first.purchase_requisition, second.purchase_requisition]
    assert second.items[0].material == "SP-4001" and second.items[0].quantity == Decimal(6)


def test_reservation_create_and_change_with_etag(sim):
    client = _client(sim)
    res = client.create_reservation(ReservationIn(cost_center="0000004210", plant="1010", recipient="MAINT", items=[
        ReservationItemIn(material="OS-5001", plant="1010", storage_location="0004", quantity=Decimal(20),
                          unit="L")]))
    item = client.reservation_item(res.reservation, "0001")
    assert item.quantity == Decimal(20) and item.etag
    changed = client.update_reservation_item(res.reservation, "0001", ReservationItemChange(quantity=Decimal(25)),
                                             if_match=item.etag)
    assert changed.quantity == Decimal(25) and changed.etag != item.etag
    # Someone changes the record in SAP: a write against the old ETag fails and changes nothing.
    sim.change_reservation_item(res.reservation, "0001", 30)
    with pytest.raises(SAPPreconditionFailed):
        client.update_reservation_item(res.reservation, "0001", ReservationItemChange(quantity=Decimal(40)),
                                       if_match=changed.etag)
    assert client.reservation_item(res.reservation, "0001").quantity == Decimal(30)
    with pytest.raises(SAPRejected) as exc:  # SAP's own validation message comes through
        client.create_reservation(ReservationIn(cost_center="0000000001", plant="1010", items=[
            ReservationItemIn(material="OS-5001", plant="1010", storage_location="0004", quantity=Decimal(1),
                              unit="L")]))
    assert "Cost center 0000000001 does not exist" in exc.value.message


@pytest.mark.parametrize("mode", ["truncated", "partial", "html", "short"])
def test_garbage_and_partial_responses_are_errors_not_data(sim, mode):
    client = _client(sim)
    client.products()  # metadata loaded while SAP is healthy
    sim.set_garbage(mode)
    with pytest.raises(SAPBadResponse):
        client.material_stock()


def test_5xx_is_retried_with_backoff_and_timeouts_and_auth_fail_clearly(sim):
    client = _client(sim)
    client.products()
    before = sim.state.requests
    sim.fail_next(2, 503)
    read = client.products()  # two failures, the third attempt succeeds, then the next page
    assert read.records and sim.state.requests - before == 2 + read.pages
    sim.fail_next(5, 500)
    with pytest.raises(SAPError) as exc:
        client.products()
    assert exc.value.code == "sap_unavailable" and "after 3 attempts" in exc.value.message
    sim.state.fail.clear()
    sim.slow(0.6)
    with pytest.raises(SAPError) as exc:
        _client(sim, timeout_s=0.2, retries=1).products()
    assert "timed out" in exc.value.message
    sim.slow(0)
    before = sim.state.requests
    with pytest.raises(SAPAuthFailed):
        _client(sim, password="wrong").products()
    assert sim.state.requests - before == 1  # a logon failure is not retried


def test_a_write_with_an_unknown_outcome_is_not_retried(sim):
    client = _client(sim)
    client.csrf_token("API_PURCHASEREQ_PROCESS_SRV")
    client.products()
    client._service("API_PURCHASEREQ_PROCESS_SRV")
    sim.fail_next(1, 503)
    with pytest.raises(SAPError) as exc:
        client.create_purchase_requisition(PurchaseRequisitionIn(items=[
            PurchaseRequisitionItemIn(material="SP-4001", plant="1010", quantity=Decimal(1), unit="PC")]))
    assert exc.value.code == "sap_write_unknown"
    assert sum(1 for m, _ in sim.state.log if m == "POST") == 1 and sim.purchase_requisitions() == []
