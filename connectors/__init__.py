"""SAP OData v2 and MES REST clients, HITL write workflow, SQL guard, simulators."""
