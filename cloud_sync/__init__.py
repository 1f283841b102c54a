"""Cloud sync: the uplink and downlink over MQTT, the sync API's wire format, and a reference receiver."""
