# Tests: Check unit suites per module, and integration suites that run visierd and visier-sim.
