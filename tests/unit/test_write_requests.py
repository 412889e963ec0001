"""Which chat messages become write proposals (agents/write_requests.parse, no I/O), and which structured
questions go to the SQL Guard (agents/sql_questions.match): questions about writes or documents never do."""

from __future__ import annotations

import pytest

from agents.sql_questions import match
from agents.write_requests import parse


@pytest.mark.parametrize("message,expected", [
    ("Create a maintenance work order for M-3: replace the pump seal",
     ("mes", "create_work_order", {"machine_id": "M-3", "description": "replace the pump seal", "priority": "normal"})),
    ("please open a high-priority work order for press-7 to check the oil level.",
     ("mes", "create_work_order", {"machine_id": "press-7", "description": "check the oil level", "priority": "high"})),
    ("Put machine M-2 on hold because of a cracked frame",
     ("mes", "hold_machine", {"machine_id": "M-2", "hold": True, "reason": "of a cracked frame"})),
    ("Release the hold on M-2: frame welded and inspected",
     ("mes", "hold_machine", {"machine_id": "M-2", "hold": False, "reason": "frame welded and inspected"})),
    ("Create a purchase requisition for 50 kg of RM-1001 at plant 1010",
     ("sap", "create_purchase_requisition", {"quantity": "50", "unit": "KG", "material": "RM-1001", "plant": "1010"})),
    ("Change reservation 0000000001/0001 to 3",
     ("sap", "update_reservation_item", {"reservation": "0000000001", "item": "0001", "quantity": "3"})),
])
def test_write_requests_become_proposals(message, expected):
    req = parse(message)
    assert req is not None and (req.target, req.operation, req.payload) == expected


@pytest.mark.parametrize("message", [
    "How do I create a maintenance work order?",
    "What does the SOP say about putting a machine on hold?",
    "Was a work order for M-3 created yesterday?",
    "Why is M-2 on hold?",
    "Summarise the purchase requisition procedure",
    "Create a work order",  # no machine, no description: nothing to propose
])
def test_questions_about_writes_are_not_proposals(message):
    assert parse(message) is None


@pytest.mark.parametrize("message,template", [
    ("How many machines are down on each line?", "machines_by_state"),
    ("Which machines are idle right now?", "machines_in_state"),
    ("What is the defect rate per line?", "defect_rate_by_line"),
    ("Show the downtime per machine", "downtime_by_machine"),
    ("Which materials are below their reorder point?", "materials_below_reorder_point"),
])
def test_structured_questions_match_their_template(message, template):
    found = match(message)
    assert found is not None and found[0].name == template


@pytest.mark.parametrize("message", [
    "What was the defect rate for BR-220 during the week 12 audit?",
    "What is the control limit for the defect rate of BR-220?",
    "How much stock of SP-4001 do we have right now?",
    "Is machine M-3 down right now?",
    "How do I perform lockout tagout on the press?",
])
def test_document_and_live_questions_do_not_go_to_the_guard(message):
    assert match(message) is None
