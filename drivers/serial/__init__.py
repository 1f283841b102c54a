"""Wired bedside devices: pure codecs (no I/O) for serial and TCP links.

`framing` cuts a byte stream into frames (MLLP, STX/ETX with a checksum, ASCII lines); `hl7` parses, acknowledges
and maps HL7 v2 / IHE PCD-01 messages; `nonin` decodes the Nonin oximeter serial data formats #2 and #7.
"""
