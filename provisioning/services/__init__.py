"""Use cases shared by the three front ends (admin REST API, ``offhook fleet`` CLI, web UI).

Each use case validates, changes the rows and writes its audit entry in one place; the front
ends only translate their input and the refusal into their own answer. The fleet changes
(devices, groups, lines, settings, resync) live in provisioning.operations, the same way.
"""
