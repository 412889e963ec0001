"""SAP OData v2: a typed client built on SAP's `pyodata` (client.py), its response models (models.py), and a
loopback simulator of the SAP Gateway services it reads and writes (simulator.py)."""
