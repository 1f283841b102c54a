"""Device drivers, one subpackage per transport: pure codecs plus thin transport adapters."""
