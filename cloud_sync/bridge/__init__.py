"""Bridges from the sync API into hospital systems: FHIR R4 (`fhir`) and HL7 v2 IHE PCD-01/PCD-04 (`hl7`).

A bridge is a cloud-side consumer: it subscribes to the gateways' uplink topics exactly as a cloud backend would
(MQTT 5, mutual TLS, a shared subscription so that N workers split one stream), turns each message into the
target system's form with ids derived from the events' stable ids, and acknowledges the MQTT message only once
the target has accepted it.  A redelivered message therefore writes nothing twice, and a message the target
can never accept is parked with its reason instead of blocking the stream.
"""
