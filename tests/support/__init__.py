"""What the tests stand on: real components wired for tests (harness, Mosquitto in conftest), typed fakes of the
product's Protocols (fakes.py), signing keys and PKI, and fault injectors.  Type-checked like the product."""
