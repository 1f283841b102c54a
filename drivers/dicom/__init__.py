"""DICOM for point-of-care imaging and ECG: pure validation, de-identification and waveform decoding (no I/O)."""
