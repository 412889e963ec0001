"""The five specialists: configuration (description, example requests, prompt, retrieval
preference, default tier), not five copies of code."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Specialist:
    key: str
    name: str
    description: str
    examples: tuple[str, ...]
    keywords: tuple[str, ...]
    prompt: str
    prefer_titles: tuple[str, ...] = field(default_factory=tuple)  # retrieval preference (title substrings)
    tier: str = "LIGHT"


SPECIALISTS: dict[str, Specialist] = {s.key: s for s in (
    Specialist(
        "document_analyst", "Document Analyst",
        "Summarises, compares and explains documents: manuals, reports, specifications, policies.",
        ("summarise the maintenance manual", "compare revision B and C of the specification",
         "what does this document say about warranty", "give me an overview of the quality report",
         "what are the differences between the two manuals", "explain the scope of the document"),
        ("summarise", "summarize", "summary", "compare", "overview", "difference", "explain the document", "revision",
         "what changed", "covers"),
        "You analyse documents: summarise and compare them faithfully, citing each statement.",
        tier="STANDARD",
    ),
    Specialist(
        "procedure_expert", "Procedure Expert",
        "Finds standard operating procedures and returns their steps in order: lockout/tagout, die change, "
        "start-up, cleaning, safety instructions.",
        ("how do I perform lockout tagout on the press", "what are the steps to change the die",
         "what is the procedure for restarting line 3", "who may remove a lockout padlock",
         "how do I release stored hydraulic energy", "what equipment do I need before servicing the press"),
        ("procedure", "steps", "sop", "how do i", "lockout", "tagout", "instruction", "step by step",
         "before servicing", "allowed to", "must i do"),
        "You answer with the exact procedure steps from the SOPs, in order, citing each step.",
        prefer_titles=("sop",),
    ),
    Specialist(
        "data_analyst", "Data Analyst",
        "Works with numbers from production data, SAP and MES: output, OEE, trends, costs, inventory, statistics.",
        ("what was the output of line 2 last week", "calculate the OEE for press P3",
         "how much inventory of MAT-1001 do we have", "what is the average cycle time",
         "show the cost centre spending this month", "what is the trend of scrap over the quarter"),
        ("calculate", "average", "trend", "oee", "inventory", "cost", "how many", "how much", "statistics", "kpi",
         "purchase order", "spend", "percentage", "total"),
        "You analyse operational data; every number must come from the sources or a tool result.",
        tier="STANDARD",
    ),
    Specialist(
        "quality_inspector", "Quality Inspector",
        "Quality reports, defects, inspection criteria, non-conformances, root causes of scrap and porosity.",
        ("what caused the weld porosity on bracket BR-220", "what is the defect rate on line 2",
         "what are the inspection criteria for surface scratches", "which lots must be re-inspected",
         "what corrective actions were taken for the quality issue", "is this scratch depth acceptable"),
        ("defect", "quality", "inspection", "porosity", "scrap", "non-conformance", "reject", "tolerance"),
        "You answer quality questions from quality reports and inspection criteria, citing them.",
        prefer_titles=("qr", "quality", "inspection"),
    ),
    Specialist(
        "maintenance_advisor", "Maintenance Advisor",
        "Machine maintenance: lubrication and service intervals, spare parts, alarms, troubleshooting breakdowns.",
        ("how often should the ram guide bearings be greased", "what does alarm A-117 mean",
         "which hydraulic oil does the press use", "the press is running slowly, what should I check",
         "when is the return filter replaced", "what is the oil change interval"),
        ("maintenance", "lubricat", "grease", "oil", "alarm", "troubleshoot", "interval", "filter", "bearing",
         "spare part", "breakdown", "fix", "repair", "is machine", "down right now"),
        "You advise on machine maintenance from manuals and maintenance records, citing them.",
        prefer_titles=("mm-", "manual", "maintenance"),
    ),
)}
DEFAULT = "document_analyst"
