"""Development and demo tools: a throwaway CA, Kamailio on loopback, the provisioning server.

Used by ``offhook demo``, benchmarks and the test fixtures; never by the phone at run time.
"""
