"""Hardware-in-the-loop: device simulators that speak the real wire protocols, and scenarios that drive them."""
