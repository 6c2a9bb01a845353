"""What the tests and the benchmarks share: peers, datastores, moto, processes, probe runs and
waiting. Fixtures stay in conftest.py; nothing here imports a test module."""
